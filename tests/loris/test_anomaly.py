"""Anomaly maps: the definitions of LORIS-NOTES.md, pinned against independent NumPy/SciPy references."""

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


# --- an independent reference of the MSGMSD recipe (NumPy / SciPy only) ----------------------------------------
PX = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64)
PY = np.array([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], dtype=np.float64)


def _gms_ref(a, b, c=0.0026):
    def mag(x):
        gx = ndimage.correlate(x, PX, mode="constant", cval=0.0)
        gy = ndimage.correlate(x, PY, mode="constant", cval=0.0)
        return np.sqrt(gx ** 2 + gy ** 2 + 1e-12)

    ga, gb = mag(a), mag(b)
    return (2 * ga * gb + c) / (ga ** 2 + gb ** 2 + c)


def _upsample_bilinear(x, factor):
    # half-pixel centres, edge clamped = torch's bilinear with align_corners=False
    return ndimage.zoom(x, factor, order=1, mode="nearest", grid_mode=True)


def _msgmsd_ref(p, r, scales=4):
    p = ndimage.median_filter(p, size=3, mode="mirror")  # mirror = torch "reflect" (edge not repeated)
    r = ndimage.median_filter(r, size=3, mode="mirror")
    total = np.zeros_like(p)
    for s in range(scales):
        if s:
            h, w = p.shape
            p = p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            r = r.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        total += _upsample_bilinear(_gms_ref(p, r), 2 ** s)
    sim = ndimage.uniform_filter(total / scales, size=3, mode="mirror")
    return 1.0 - sim


def test_msgmsd_matches_a_numpy_reference_on_a_tiny_case():
    a, b = _pair(3, 16)
    ours = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), "msgmsd").numpy()
    for i in range(2):
        ref = _msgmsd_ref(a[i, 0].astype(np.float64), b[i, 0].astype(np.float64))
        np.testing.assert_allclose(ours[i, 0], ref, atol=2e-5)


def test_gmsd_is_the_single_scale_msgmsd():
    a, b = _pair(4, 16)
    ours = anomaly_map(torch.from_numpy(a), torch.from_numpy(b), "gmsd").numpy()
    ref = _msgmsd_ref(a[0, 0].astype(np.float64), b[0, 0].astype(np.float64), scales=1)
    np.testing.assert_allclose(ours[0, 0], ref, atol=2e-5)


def test_gms_hand_value_on_a_step_edge():
    # p: a vertical step of height 1; r: flat. Next to the step the unnormalized Prewitt gives |gx| = 3 in p
    # and g = sqrt(eps) in r, so GMS = (2 * 3 * sqrt(eps) + c) / (9 + eps + eps + c); far from it both are flat: 1.
    from lib.loris.msgms import gms

    p = torch.zeros(1, 1, 8, 8)
    p[..., 4:] = 1.0
    g = gms(p, torch.zeros_like(p))[0, 0].double()
    eps, c = 1e-12, 0.0026
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
