"""Anomaly maps: the definitions of docs/method.md, pinned against independent NumPy/SciPy references."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from lib.errors import DataError
from lib.loris.anomaly import METRICS, anomaly_map, anomaly_maps


def _pair(seed=0, size=16):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (2, 1, size, size)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("metric", METRICS)
def test_identical_images_give_zero_anomaly(metric):
    a, _ = _pair()
    t = torch.from_numpy(a)
    out = anomaly_map(t, t.clone(), metric)
    assert out.shape == t.shape
    assert float(out.abs().max()) < 1e-6


@pytest.mark.parametrize("metric", METRICS)
def test_maps_keep_shape_and_are_nonnegative(metric):
    a, b = _pair(1, 32)
    out = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), metric)
    assert out.shape == (2, 1, 32, 32)
    assert float(out.min()) >= -1e-6


def test_dd_is_zero_where_darker_and_the_brightening_elsewhere():
    p = torch.zeros(1, 1, 4, 4)
    r = p.clone()
    r[0, 0, 0, :] = -0.5  # darker in the reconstruction: not an anomaly
    r[0, 0, 2, 1] = 0.7  # brighter: counts by how much
    r[0, 0, 3, 3] = 0.25
    dd = anomaly_map(p, r, "dd")[0, 0]
    expected = torch.zeros(4, 4)
    expected[2, 1], expected[3, 3] = 0.7, 0.25
    assert torch.equal(dd, expected)


def test_l2_is_the_squared_difference():
    a, b = _pair(2, 8)
    out = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), "l2").numpy()
    np.testing.assert_allclose(out, (b - a) ** 2, rtol=1e-6)


# --- an independent reference of the MSGMS recipe (NumPy / SciPy only) -----------------------------------------
# Written from the reference code (losses/tf_criterions.py): Grad_Mag_Map = 3x3 median (REFLECT) then Prewitt
# (zero padding), applied at every scale to the average-pooled (VALID) images; MSGMS_Map upsamples each scale
# (tf.image.resize, bilinear, half-pixel centres), averages, mean-filters (3x3, REFLECT); MSGMS_Loss averages
# mean(1 - GMS) over the scales.
PX = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64)
PY = np.array([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], dtype=np.float64)
REF_EPS = np.finfo(np.float64).eps  # the reference's sys.float_info.epsilon


def _grad_mag_ref(x):
    x = ndimage.median_filter(x, size=3, mode="mirror")  # mirror = TF's REFLECT (edge not repeated)
    gx = ndimage.correlate(x, PX, mode="constant", cval=0.0)
    gy = ndimage.correlate(x, PY, mode="constant", cval=0.0)
    return np.sqrt(gx ** 2 + gy ** 2 + REF_EPS)


def _gms_ref(a, b, c=0.0026):
    ga, gb = _grad_mag_ref(a), _grad_mag_ref(b)
    return (2 * ga * gb + c) / (ga ** 2 + gb ** 2 + c)


def _pool_ref(x):
    h, w = x.shape
    return x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _upsample_ref(x, shape):
    # half-pixel centres, edge clamped = tf.image.resize(bilinear) = torch's bilinear with align_corners=False
    return ndimage.zoom(x, (shape[0] / x.shape[0], shape[1] / x.shape[1]), order=1, mode="nearest", grid_mode=True)


def _msgms_scales_ref(p, r, scales=4):
    out = []
    for s in range(scales):
        if s:
            p, r = _pool_ref(p), _pool_ref(r)
        out.append(_gms_ref(p, r))
    return out


def _msgmsd_ref(p, r, scales=4):
    maps = _msgms_scales_ref(p, r, scales)
    total = sum(_upsample_ref(m, p.shape) for m in maps)
    return 1.0 - ndimage.uniform_filter(total / scales, size=3, mode="mirror")


def _msgms_loss_ref(p, r, scales=4):
    return float(np.mean([np.mean(1.0 - m) for m in _msgms_scales_ref(p, r, scales)]))


def _blob_pair(size=128):
    """A smooth image with a bright blob, and a reconstruction without the blob plus mild noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = 0.4 * np.sin(3 * xx) * np.cos(2 * yy) - 0.2
    blob = 0.9 * np.exp(-(((xx - 0.55) ** 2 + (yy - 0.45) ** 2) / 0.004))
    rng = np.random.default_rng(7)
    p = np.clip(smooth + blob, -1, 1)
    r = np.clip(smooth + rng.normal(0, 0.02, smooth.shape), -1, 1)
    return p, r


def test_msgmsd_matches_the_reference_recipe_on_a_tiny_case():
    a, b = _pair(3, 16)
    ours = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), "msgmsd").numpy()
    for i in range(2):
        ref = _msgmsd_ref(a[i, 0].astype(np.float64), b[i, 0].astype(np.float64))
        np.testing.assert_allclose(ours[i, 0], ref, atol=2e-5)


def test_msgmsd_and_the_loss_match_the_reference_recipe_on_a_blob_image():
    from lib.loris.loss import LorisLoss

    p, r = _blob_pair()
    tp, tr = (torch.from_numpy(x.astype(np.float32))[None, None] for x in (p, r))
    ours = anomaly_map(tp, tr, "msgmsd")[0, 0].numpy()
    ref = _msgmsd_ref(p, r)
    inner = (slice(8, -8), slice(8, -8))
    assert float(np.abs(ours - ref)[inner].max()) < 1e-3
    assert float(ref[inner].max()) > 0.3  # the blob is an anomaly: the comparison is not between flat maps
    loss = LorisLoss(ssim_win_size=7)(tr, tp)["msgms"]
    assert float(loss) == pytest.approx(_msgms_loss_ref(p, r), abs=1e-3)


def test_gmsd_is_the_single_scale_msgmsd():
    a, b = _pair(4, 16)
    ours = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), "gmsd").numpy()
    ref = _msgmsd_ref(a[0, 0].astype(np.float64), b[0, 0].astype(np.float64), scales=1)
    np.testing.assert_allclose(ours[0, 0], ref, atol=2e-5)


def test_each_scale_is_pooled_before_it_is_median_filtered():
    # A 4 x 4 bright square on an 8 x 8 frame. Pooled first (the reference order), scale 1 holds a 2 x 2 square
    # in a 4 x 4 frame, and a 3 x 3 median erases it (no window holds 5 of its pixels): flat against flat, so
    # GMS is exactly 1 everywhere. Filtered first, the median only clips the square's corners (a 3 x 3 window
    # on an edge pixel holds 6 square pixels); pooling then leaves a 0.75 square, and GMS drops below 1.
    from lib.loris.msgms import gms_pyramid

    p = torch.zeros(1, 1, 8, 8)
    p[..., 2:6, 2:6] = 1.0
    flat = torch.zeros_like(p)
    pyramid = gms_pyramid(p, flat, scales=2)
    assert torch.equal(pyramid[1], torch.ones(1, 1, 4, 4))
    assert float(pyramid[0].min()) < 0.01  # full size: the clipped square's edges against a flat image
    # the other order would not erase it (the definition this test rules out)
    from lib.loris.msgms import gms, median_filter3

    wrong = gms(torch.nn.functional.avg_pool2d(median_filter3(p), 2), torch.zeros(1, 1, 4, 4))
    assert float(wrong.min()) < 0.01


def test_gms_hand_value_on_a_step_edge():
    # p: a vertical step of height 1; r: flat. Next to the step the unnormalized Prewitt gives |gx| = 3 in p
    # and g = sqrt(eps) in r, so GMS = (2 * 3 * sqrt(eps) + c) / (9 + eps + eps + c); far from it both are flat: 1.
    from lib.loris.msgms import gms

    p = torch.zeros(1, 1, 8, 8)
    p[..., 4:] = 1.0
    g = gms(p, torch.zeros_like(p))[0, 0].double()
    eps, c = float(np.float32(REF_EPS)), 0.0026
    assert float(g[4, 3]) == pytest.approx((2 * 3 * eps ** 0.5 + c) / (9 + 2 * eps + c), rel=1e-5)
    assert float(g[4, 1]) == pytest.approx(1.0)


def test_anomaly_maps_of_several_metrics_equal_the_single_ones():
    a, b = (torch.from_numpy(x) for x in _pair(5, 32))
    many = anomaly_maps(a, b, METRICS)
    for m in METRICS:
        torch.testing.assert_close(many[m], anomaly_map(a, b, m))


def test_unknown_metric_lists_the_valid_ones():
    t = torch.zeros(1, 1, 8, 8)
    with pytest.raises(DataError, match="msgmsd, gmsd, dd, ssim, l2"):
        anomaly_map(t, t, "psnr")


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        anomaly_map(torch.zeros(8, 8), torch.zeros(8, 8), "dd")
