"""Training, calibration, the predictor, the pipeline's run_inference and the two commands, on a tiny generated set.

One model with a reduced quick preset (64 px, 30 epochs, one thread) is trained once per module and shared;
the tests of the training mechanics (resume, cancel, commands) train a 32 px model for 2-3 epochs.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import roc_auc_score

from lib.__main__ import main as cli
from lib.data.imageio import read_image, read_mask
from lib.errors import DataError, ModelError
from lib.loris.anomaly import METRICS
from lib.loris.predictor import OUTPUT_FILES, LorisPredictor
from lib.pipeline import Pipeline, run_inference
from lib.loris.model_files import CHECKPOINT_FILE, load_model
from lib.loris.settings import LorisSettings
from lib.loris.train import train

from loris_fixtures import make_records

pytestmark = pytest.mark.slow  # trains models (tiny sizes, about 15 s in all)


def tiny(**changes):
    base = dict(image_size=32, channels=(8, 16, 32), strides=(2, 2), max_epochs=2, patience=50, msgms_scales=3)
    base.update(changes)
    return LorisSettings.quick(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loris")
    return {
        "root": root,
        "train": make_records(root / "train", 20, 3, seed=1, prefix="tr"),  # the distended ones must be ignored
        "valid": make_records(root / "valid", 5, 3, seed=2, prefix="va"),
        "test": make_records(root / "test", 8, 8, seed=3, prefix="te"),
    }


@pytest.fixture(scope="module")
def trained(data):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    epochs = []
    settings = LorisSettings.quick(image_size=64, channels=(16, 32, 64, 128), strides=(2, 2, 2), max_epochs=30,
                                   patience=30, seed=0)
    summary = train(data["train"], data["root"] / "model", settings, valid_records=data["valid"], progress=False,
                    on_epoch=epochs.append)
    torch.set_num_threads(threads)
    return summary, epochs


def test_training_uses_normal_images_only_and_saves_a_calibrated_model(data, trained):
    summary, epochs = trained
    assert summary["n_train"] == 20 and summary["n_valid"] == 5 and summary["n_valid_distended"] == 3
    assert [e["epoch"] for e in epochs] == list(range(1, 31))
    assert {"loss", "msgms", "ssim", "l2"} <= set(epochs[0]["train"]) and "valid_loss" in epochs[0]["valid"]
    assert epochs[0]["monitor"] == "valid_loss" and epochs[0]["max_epochs"] == 30
    assert epochs[-1]["train"]["loss"] < epochs[0]["train"]["loss"]
    bundle = load_model(data["root"] / "model")
    assert sorted(bundle.training["train_images"]) == [f"tr{i:03d}" for i in range(20)]
    assert set(bundle.calibration) == set(METRICS)
    for entry in bundle.calibration.values():
        assert entry["image_rule"] == "youden" and entry["pixel_rule"] in ("dice", "dice_capped")
        assert entry["valid_normal_box_share"] <= 0.05 and entry["display_range"][1] > entry["pixel_threshold"]
    assert (data["root"] / "model" / CHECKPOINT_FILE).is_file()


def test_trained_model_separates_distended_from_normal_and_segments_the_recess(data, trained):
    predictor = LorisPredictor.load(data["root"] / "model")
    test = data["test"]
    preds = predictor.predict_batch([read_image(r.image_path) for r in test], [r.box for r in test], METRICS)
    labels = [r.label == "distended" for r in test]
    for metric in ("msgmsd", "dd"):
        assert roc_auc_score(labels, [p[metric].score for p in preds]) > 0.75, metric
    dice = []
    for r, p in zip(test, preds):
        if r.mask_path is not None:
            truth, mask = read_mask(r.mask_path), p["dd"].mask
            dice.append(2 * (truth & mask).sum() / (truth.sum() + mask.sum()))
    assert np.mean(dice) > 0.2


def test_batched_prediction_equals_one_by_one(data, trained):
    predictor = LorisPredictor.load(data["root"] / "model")
    recs = data["test"][6:10]
    images = [read_image(r.image_path) for r in recs]
    batch = predictor.predict_batch(images, [r.box for r in recs], ("msgmsd", "dd"))
    for img, r, both in zip(images, recs, batch):
        one = predictor.predict(img, r.box, "dd")
        np.testing.assert_allclose(one.anomaly_map, both["dd"].anomaly_map, atol=1e-5)
        assert one.score == pytest.approx(both["dd"].score, abs=1e-6)
        assert both["msgmsd"].reconstruction is both["dd"].reconstruction  # one forward pass for both


def test_resume_continues_from_the_last_checkpoint(data, tmp_path):
    records = data["train"]
    first = train(records, tmp_path / "m", tiny(max_epochs=2), valid_records=data["valid"], progress=False)
    again = train(records, tmp_path / "m", tiny(max_epochs=3), valid_records=data["valid"], resume=True, progress=False)
    assert (first["epochs_run"], again["epochs_run"], again["resumed"]) == (2, 3, True)
    assert [h["epoch"] for h in again["history"]] == [1, 2, 3]
    with pytest.raises(ModelError, match="differs in image_size"):
        train(records, tmp_path / "m", tiny(image_size=64), valid_records=data["valid"], resume=True, progress=False)


def test_should_stop_ends_training_and_still_saves_the_best_model(data, tmp_path):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 6  # after the first epoch's batches

    summary = train(data["train"], tmp_path / "m", tiny(max_epochs=50), valid_records=data["valid"],
                    progress=False, should_stop=stop)
    assert summary["stopped"] == "cancelled" and summary["epochs_run"] < 50
    assert load_model(tmp_path / "m").calibration


@pytest.mark.parametrize("mode", ["autoencoder", "riad"])
def test_baseline_modes_train_and_predict(data, tmp_path, mode):
    summary = train(data["train"], tmp_path / "m", tiny(max_epochs=1, mode=mode), valid_records=data["valid"],
                    progress=False)
    assert summary["epochs_run"] == 1
    predictor = LorisPredictor.load(tmp_path / "m")
    assert predictor.settings.mode == mode
    r = data["test"][0]
    scores = predictor.score_batch([read_image(r.image_path)] * 2, [r.box] * 2, ("msgmsd", "dd"))
    assert scores["msgmsd"][0] == scores["msgmsd"][1]  # RIAD's random masks are seeded: same image, same score


def test_no_normal_training_image_is_a_clear_error(data, tmp_path):
    distended = [r for r in data["train"] if r.label == "distended"]
    with pytest.raises(DataError, match="no normal image with a box"):
        train(distended, tmp_path / "m", tiny(), progress=False)


def test_run_inference_writes_the_outputs_in_the_image_geometry(data, trained, tmp_path):
    # a 96 x 72 (W x H) copy of a test image: outputs must come back on that grid, not the network's 64 x 64
    from PIL import Image

    from lib.data.imageio import write_png

    r = data["test"][-1]
    big = np.asarray(Image.fromarray(read_image(r.image_path)).resize((96, 72), Image.BILINEAR))
    write_png(tmp_path / "big.png", np.clip(big, 0, 1))
    x0, y0, x1, y1 = r.box
    box = (x0 * 3 // 2, y0 * 9 // 8, x1 * 3 // 2, y1 * 9 // 8)
    timings = {}
    result = run_inference(Pipeline.load(data["root"] / "model"), tmp_path / "big.png", tmp_path / "out", box,
                           timings=timings)
    assert set(timings) == {"read_ms", "predict_ms", "write_ms"} and all(v > 0 for v in timings.values())
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == set(OUTPUT_FILES.values())
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved == result
    assert {"score", "distended", "threshold", "pixel_threshold", "metric", "pixel_metric", "display_range", "box",
            "box_source", "detector_confidence", "image_size", "image"} <= set(saved)
    assert (saved["metric"], saved["pixel_metric"], saved["box_source"]) == ("msgmsd", "dd", "request")
    assert saved["box"] == list(box) and saved["image_size"] == [96, 72]
    amap = sitk.ReadImage(str(tmp_path / "out" / "anomaly_map.nrrd"))
    assert amap.GetSize() == (96, 72) and amap.GetPixelID() == sitk.sitkFloat32
    assert amap.GetOrigin() == (0.0, 0.0) and amap.GetSpacing() == (1.0, 1.0)
    mask = read_mask(tmp_path / "out" / "mask.png")
    assert mask.shape == (72, 96) and not mask[:, : box[0]].any()  # inside the box only
    assert read_image(tmp_path / "out" / "reconstruction.png").shape == (72, 96)


@pytest.mark.parametrize("box", [(10, 10, 80, 20), (30, 30, 20, 40), (5, 5, 5, 9)])
def test_bad_box_writes_nothing(data, trained, tmp_path, box):
    r = data["test"][0]
    with pytest.raises(DataError, match="box"):
        run_inference(Pipeline.load(data["root"] / "model"), r.image_path, tmp_path / "out", box)
    assert not (tmp_path / "out").exists()


def test_commands_train_and_infer(data, tmp_path, capsys):
    from lib.data.flat import write_flat

    flat = tmp_path / "flat"
    write_flat(flat, data["train"] + data["valid"])
    model = tmp_path / "model"
    rc = cli(["train", "--data", str(flat), "--out", str(model), "--quick", "--epochs", "2", "--image-size", "32",
              "--no-progress", "--device", "cpu"])
    assert rc == 0 and "model saved" in capsys.readouterr().out
    r = data["test"][-1]
    out = tmp_path / "out"
    rc = cli(["infer", "--model", str(model), "--image", str(r.image_path), "--box", *map(str, r.box), "--out", str(out)])
    assert rc == 0 and (out / "result.json").is_file()
    # errors: exit 2 with a message, nothing written
    assert cli(["infer", "--model", str(tmp_path / "none"), "--image", str(r.image_path), "--box", "1", "1", "5", "5",
                "--out", str(tmp_path / "o2")]) == 2
    assert cli(["infer", "--model", str(model), "--image", str(tmp_path / "missing.png"), "--box", "1", "1", "5", "5",
                "--out", str(tmp_path / "o3")]) == 2
    assert cli(["infer", "--model", str(model), "--image", str(r.image_path), "--out", str(tmp_path / "o4")]) == 2
    err = capsys.readouterr().err
    assert "model directory not found" in err and "image file not found" in err and "--box" in err
    assert not any((tmp_path / d).exists() for d in ("o2", "o3", "o4"))


def test_the_automatic_split_keeps_normal_images_in_validation(data):
    from lib.loris.train import split_patients

    # patients "tr p0".."trp5" normal; a distended-only patient drawn for validation must not leave it without normals
    recs = [r for r in data["train"] if r.label == "normal"] + [
        r.__class__(**{**r.__dict__, "patient_id": "sick"}) for r in data["train"] if r.label == "distended"]
    for seed in range(6):
        train_part, valid_part = split_patients(recs, 0.15, seed)
        assert any(r.label == "normal" for r in valid_part)
        assert not {r.patient_id for r in train_part} & {r.patient_id for r in valid_part}
        assert len(train_part) + len(valid_part) == len(recs)
