"""The inference speed-ups keep LoRIS's outputs: exact median filter, folded/channels-last network, segmentation
of the box crop, raw NRRD, unfiltered PNGs, the output files put in place together once all are written.

Stated tolerance (float32 rounding of the folded batch norms; see lib.loris.network.InferenceNetwork):
reconstructions and anomaly maps within ``TOL = 1e-4`` (absolute, intensities in ``[-1, 1]`` / ``[0, 1]``),
scores within ``TOL``, decisions and segmentation masks identical except where the value lies within
``TOL`` of its threshold. The median filter, the cropped segmentation and the PNG pixels are exact.
"""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from lib.data.imageio import read_image, write_png
from lib.loris.predictor import OUTPUT_FILES, LorisPredictor, write_nrrd, write_outputs
from lib.loris.msgms import median_filter3
from lib.loris.network import InferenceNetwork, build_network
from lib.loris.postprocess import box_region, clean_mask, segment
from lib.loris.settings import METRICS, LorisSettings
from tests.loris.loris_fixtures import make_image

TOL = 1e-4


def _reference_median3(x: torch.Tensor) -> torch.Tensor:
    """The window median by sorting (the previous implementation)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)
    return windows.reshape(*windows.shape[:4], 9).median(dim=-1).values


def _network_with_statistics(settings: LorisSettings, seed: int = 0) -> torch.nn.Module:
    """A network whose batch norms have non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    net = build_network(settings)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return net.eval()


def test_median_filter_is_exact_on_every_binary_window():
    # 0-1 principle: a network of min and max operations selects the median of any input iff it does for all
    # 2^9 binary ones
    codes = torch.arange(512)
    bits = ((codes[:, None] >> torch.arange(9)) & 1).float().reshape(512, 1, 3, 3)
    centre = median_filter3(bits)[:, 0, 1, 1]  # the centre window holds exactly the 9 bits
    assert torch.equal(centre, (bits.reshape(512, 9).sum(dim=1) >= 5).float())


def test_median_filter_equals_the_sorting_median_with_ties_and_borders():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (2, 1, 17, 23), generator=gen).float() / 3  # many ties
    y = torch.rand(3, 2, 8, 5, generator=gen)
    assert torch.equal(median_filter3(x), _reference_median3(x))
    assert torch.equal(median_filter3(y), _reference_median3(y))


def test_inference_network_matches_the_eval_network_and_leaves_it_untouched():
    settings = LorisSettings(image_size=32, channels=(4, 8, 16), strides=(2, 2))
    net = _network_with_statistics(settings)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = InferenceNetwork(net)
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        expected, got = net(x), fast(x)
    assert got.shape == expected.shape and got.is_contiguous()
    assert (got - expected).abs().max() <= TOL
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # every norm was folded
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m.training for m in fast.modules())  # eval mode throughout, the wrapper included
    try:
        fast.train()
    except RuntimeError as exc:
        assert "inference only" in str(exc)
    else:
        raise AssertionError("InferenceNetwork.train() must refuse")


def test_predictions_of_the_fast_network_match_the_plain_one(tmp_path):
    settings = LorisSettings(image_size=32, channels=(4, 8, 16), strides=(2, 2))
    net = _network_with_statistics(settings, seed=2)
    calibration = {m: {"threshold": 0.05, "pixel_threshold": 0.05} for m in METRICS}
    fast = LorisPredictor(net, settings, calibration)
    plain = LorisPredictor(net, settings, calibration, optimize=False)
    assert isinstance(fast.network, InferenceNetwork) and not isinstance(plain.network, InferenceNetwork)
    rng = np.random.default_rng(3)
    images, boxes = zip(*[make_image(rng, distended=i % 2 == 1)[:2] for i in range(4)])
    got = fast.predict_batch(list(images), list(boxes), METRICS)
    expected = plain.predict_batch(list(images), list(boxes), METRICS)
    for g_all, e_all in zip(got, expected):
        for m in METRICS:
            g, e = g_all[m], e_all[m]
            assert np.abs(g.reconstruction - e.reconstruction).max() <= TOL
            assert np.abs(g.anomaly_map - e.anomaly_map).max() <= TOL, m
            assert abs(g.score - e.score) <= TOL
            if abs(e.score - e.threshold) > TOL:
                assert g.distended == e.distended
            differ = g.mask != e.mask
            assert not differ.any() or np.abs(e.anomaly_map[differ] - e.pixel_threshold).max() <= TOL * 10


def test_anomaly_map_nrrd_is_written_raw_and_reads_back_exactly(tmp_path):
    amap = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    path = tmp_path / "anomaly_map.nrrd"
    write_nrrd(path, amap)
    header = path.read_bytes()[:400].split(b"\n\n", 1)[0].decode()
    assert "encoding: raw" in header
    back = sitk.ReadImage(str(path))
    assert back.GetSize() == (64, 48) and back.GetOrigin() == (0.0, 0.0) and back.GetSpacing() == (1.0, 1.0)
    assert np.array_equal(sitk.GetArrayFromImage(back), amap)


def _reference_segment(anomaly_map, pixel_threshold, region):
    """Segmentation over the whole image (the previous implementation)."""
    binary = (np.asarray(anomaly_map) >= pixel_threshold) & region
    return clean_mask(binary) & region


def test_segmenting_the_box_crop_equals_segmenting_the_whole_image():
    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
        if trial % 4 == 0:
            x0, y0 = 0, 0  # boxes on the image edges
        box = (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1)))
        amap = rng.random((h, w)).astype(np.float32)
        thr = float(rng.uniform(0.2, 0.8))
        region = box_region(box, h, w)
        assert np.array_equal(segment(amap, thr, region), _reference_segment(amap, thr, region)), (trial, box)
    # batched, different boxes per image, and an empty region
    maps = rng.random((3, 40, 50)).astype(np.float32)
    regions = np.stack([box_region(b, 40, 50) for b in ((2, 3, 20, 30), (30, 10, 50, 40), (0, 0, 0, 0))])
    assert np.array_equal(segment(maps, 0.4, regions), _reference_segment(maps, 0.4, regions))
    assert not segment(maps[2], 0.4, regions[2]).any()
    assert np.array_equal(segment(maps[0], 0.4), clean_mask(maps[0] >= 0.4))


def test_png_at_zlib_level_1_holds_the_same_pixels(tmp_path):
    image = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    write_png(tmp_path / "slow.png", image)
    write_png(tmp_path / "fast.png", image, compress_level=1)
    assert np.array_equal(read_image(tmp_path / "fast.png"), read_image(tmp_path / "slow.png"))
    assert not list(tmp_path.glob("*.tmp*"))


def _prediction(h=24, w=32):
    from lib.loris.predictor import Prediction

    rng = np.random.default_rng(4)
    mask = np.zeros((h, w), bool)
    mask[5:10, 6:12] = True
    return Prediction(box=(2, 3, 20, 18), reconstruction=rng.random((h, w)).astype(np.float32),
                      anomaly_map=rng.random((h, w)).astype(np.float32), score=0.3, distended=True, mask=mask,
                      threshold=0.2, pixel_threshold=0.5, metric="msgmsd")


def test_write_outputs_produces_every_file_with_the_prediction_s_pixels(tmp_path):
    pred = _prediction()
    result = write_outputs(pred, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    assert np.array_equal(read_image(out / "reconstruction.png"), np.rint(pred.reconstruction * 255) / 255)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "anomaly_map.nrrd"))), pred.anomaly_map)
    assert np.array_equal(read_image(out / "mask.png") > 0, pred.mask)
    assert result["mask_pixels"] == int(pred.mask.sum())


def test_a_failed_write_raises_and_leaves_no_result_json(tmp_path):
    out = tmp_path / "out"
    (out / OUTPUT_FILES["anomaly_map"]).mkdir(parents=True)  # a folder in the way: the NRRD cannot replace it
    try:
        write_outputs(_prediction(), out)
    except OSError:
        pass
    else:
        raise AssertionError("write_outputs must raise when a file cannot be written")
    assert not (out / OUTPUT_FILES["result"]).exists()
    assert not list(out.glob(".*tmp*"))


@pytest.mark.parametrize("failing", ["_write_mask_file", "_write_reconstruction_file"])  # this thread / the worker
def test_when_one_write_fails_no_file_of_the_run_appears_and_earlier_outputs_stay(tmp_path, monkeypatch, failing):
    import lib.loris.predictor as infer

    out = tmp_path / "out"
    first = write_outputs(_prediction(), out)
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES.values()}

    def broken(path, array):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(infer, failing, broken)
    changed = _prediction()
    changed.reconstruction[:] = 0.0
    with pytest.raises(OSError, match="disk full"):
        write_outputs(changed, out, {"run": 2})
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES.values()} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())  # no temporary file left
    assert first["files"] == OUTPUT_FILES


def test_predicting_without_the_reconstruction_changes_nothing_else(tmp_path):
    settings = LorisSettings(image_size=32, channels=(4, 8, 16), strides=(2, 2))
    calibration = {m: {"threshold": 0.05, "pixel_threshold": 0.05} for m in ("msgmsd", "dd")}
    predictor = LorisPredictor(_network_with_statistics(settings, seed=5), settings, calibration)
    image, box = make_image(np.random.default_rng(6), distended=True)[:2]
    full = predictor.predict(image, box)
    lean = predictor.predict(image, box, with_reconstruction=False)
    assert lean.reconstruction is None and full.reconstruction.shape == image.shape
    assert np.array_equal(lean.anomaly_map, full.anomaly_map) and np.array_equal(lean.mask, full.mask)
    assert lean.to_json() == full.to_json()
    with pytest.raises(ValueError, match="with_reconstruction"):
        write_outputs(lean, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_separable_prewitt_gradients_and_mean_filter_equal_their_convolution_definitions():
    from lib.loris.msgms import EPS, PREWITT, gradient_magnitude, mean_filter3

    x = torch.rand(3, 1, 37, 50, generator=torch.Generator().manual_seed(7)) * 2 - 1
    g = F.conv2d(x, PREWITT, padding=1)
    expected = torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2 + EPS)
    assert (gradient_magnitude(x) - expected).abs().max() <= 1e-5
    pooled = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel_size=3, stride=1)
    assert (mean_filter3(x) - pooled).abs().max() <= 1e-6
