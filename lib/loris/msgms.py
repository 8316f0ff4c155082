"""Multi-scale gradient magnitude similarity (MSGMS), written once for the loss and the anomaly maps.

The recipe of the LoRIS reference code (``losses/tf_criterions.py``: ``Grad_Mag_Map``, ``GMS``,
``MSGMS_Loss``, ``MSGMS_Map``; see ``docs/method.md``), on intensities as the network sees them
(``[-1, 1]``, one channel). At each of the 4 scales (the image, then three successive 2x2 average
poolings of the *unfiltered* images), in this order:

1. the 3x3 median filter (reflect padding) of both images at that scale;
2. Prewitt gradients by cross-correlation with the unnormalized kernels
   ``gx = [[1,0,-1],[1,0,-1],[1,0,-1]]``, ``gy = [[1,1,1],[0,0,0],[-1,-1,-1]]``
   (zero padding, no division by 3), magnitude ``g = sqrt(gx^2 + gy^2 + eps)``;
3. ``GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c)`` with ``c = 0.0026``.

- **loss** (:func:`msgms_loss`): the mean over the scales of ``mean(1 - GMS_s)`` at each scale's own
  resolution (no upsampling);
- **anomaly map** (:func:`msgmsd_map`): each scale's GMS map upsampled back to full size (bilinear,
  half-pixel centres), the maps averaged, smoothed by a 3x3 mean filter (reflect padding), and the map
  is ``1 - MSGMS``.

The median filter runs at every scale, after the pooling, in the map *and* in the loss (not once at
full size). All functions take ``(B, 1, H, W)`` tensors and are batched; nothing loops over pixels.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

GMS_C = 0.0026
"""Stability constant ``c`` of the GMS (reference value for intensities in ``[-1, 1]``)."""

EPS = sys.float_info.epsilon
"""``eps`` in ``sqrt(gx^2 + gy^2 + eps)`` (the reference's, about 2.2e-16): keeps the gradient of the square
root finite at 0."""

SCALES = 4

PREWITT = torch.tensor(
    [
        [[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]],  # gx
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]],  # gy
    ]
).unsqueeze(1)
"""``(2, 1, 3, 3)``: the unnormalized Prewitt kernels, as cross-correlation (``conv2d``) weights: the
definition :func:`gradient_magnitude` computes (and ``tests/loris/test_anomaly.py`` checks it against)."""


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")


def _median3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Elementwise median of three tensors."""
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def median_filter3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter with reflect padding (``d c b | a b c d``), ``(B, C, H, W)`` -> same shape.

    Exactly the median of each window (the same values as sorting it) without materializing the
    windows: each padded column of three is sorted once (``lo <= mid <= hi``, shared by the three
    windows that contain it); a window's median is then the median of (the largest of its three
    ``lo``, the median of its three ``mid``, the smallest of its three ``hi``). 18 elementwise
    min/max operations, ~30x faster on CPU than sorting the windows (256 px).
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    top, centre, bottom = (padded.narrow(-2, i, h) for i in range(3))  # (B, C, H, W + 2) each
    lo, hi = torch.minimum(top, centre), torch.maximum(top, centre)
    mid, hi = torch.minimum(hi, bottom), torch.maximum(hi, bottom)
    lo, mid = torch.minimum(lo, mid), torch.maximum(lo, mid)
    lo0, lo1, lo2 = (lo.narrow(-1, j, w) for j in range(3))
    mid0, mid1, mid2 = (mid.narrow(-1, j, w) for j in range(3))
    hi0, hi1, hi2 = (hi.narrow(-1, j, w) for j in range(3))
    return _median3(torch.maximum(torch.maximum(lo0, lo1), lo2), _median3(mid0, mid1, mid2),
                    torch.minimum(torch.minimum(hi0, hi1), hi2))


def _sum3(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of 3 neighbours along ``dim`` of a tensor padded by 1 there (the output is 2 shorter)."""
    n = p.shape[dim] - 2
    return p.narrow(dim, 0, n) + p.narrow(dim, 1, n) + p.narrow(dim, 2, n)


def mean_filter3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean filter with reflect padding, ``(B, C, H, W)`` -> same shape.

    Separable sums of shifted views (CPU: ~7x faster than a 3x3 ``avg_pool2d`` at 256 px; equal to it
    up to float rounding).
    """
    return _sum3(_sum3(F.pad(x, (1, 1, 1, 1), mode="reflect"), -2), -1) / 9.0


def gradient_magnitude(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Prewitt gradient magnitude ``sqrt(gx^2 + gy^2 + eps)`` (zero padding), ``(B, 1, H, W)`` -> same shape.

    The cross-correlation with :data:`PREWITT`, computed separably on shifted views: ``gx`` is the
    column-wise 3-sum's left minus right neighbour, ``gy`` the row-wise 3-sum's upper minus lower one
    (equal to ``conv2d`` with :data:`PREWITT` up to float rounding; on CPU ~2.5x faster at 256 px than
    that one-channel convolution).
    """
    _check(x)
    p = F.pad(x, (1, 1, 1, 1))
    w = x.shape[-1]
    cols = _sum3(p, -2)  # (B, 1, H, W + 2): each column's 3-sum
    rows = _sum3(p, -1)  # (B, 1, H + 2, W)
    gx = cols.narrow(-1, 0, w) - cols.narrow(-1, 2, w)
    gy = rows.narrow(-2, 0, x.shape[-2]) - rows.narrow(-2, 2, x.shape[-2])
    return torch.sqrt(gx * gx + gy * gy + eps)


def gms(a: torch.Tensor, b: torch.Tensor, c: float = GMS_C) -> torch.Tensor:
    """Gradient magnitude similarity map ``(2 g1 g2 + c) / (g1^2 + g2^2 + c)`` in ``(0, 1]``, ``(B, 1, H, W)``."""
    ga, gb = gradient_magnitude(a), gradient_magnitude(b)
    return (2.0 * ga * gb + c) / (ga * ga + gb * gb + c)


def gms_pyramid(a: torch.Tensor, b: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> list[torch.Tensor]:
    """GMS maps at ``scales`` scales, each at its own size: at scale ``s`` both inputs are average-pooled
    ``s`` times (2x2, from the unfiltered images), then 3x3 median-filtered, then compared."""
    _check(a)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    n = a.shape[0]
    pair = torch.cat([a, b])  # both images through each step at once: half the per-operation overhead
    maps = []
    for s in range(scales):
        if s:
            pair = F.avg_pool2d(pair, 2)
        filtered = median_filter3(pair)
        maps.append(gms(filtered[:n], filtered[n:], c))
    return maps


def _upsampled_mean(pyramid: list[torch.Tensor]) -> torch.Tensor:
    size = pyramid[0].shape[-2:]
    maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in pyramid]
    return torch.stack(maps).mean(dim=0)


def msgms_map(a: torch.Tensor, b: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> torch.Tensor:
    """MSGMS similarity map: the scales' GMS maps upsampled (bilinear) to ``(H, W)`` and averaged; ``(B, 1, H, W)``."""
    return _upsampled_mean(gms_pyramid(a, b, scales, c))


def msgms_loss(a: torch.Tensor, b: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> torch.Tensor:
    """MSGMS loss (scalar): mean over scales of ``mean(1 - GMS_s)`` (median-filtered at every scale, no upsampling)."""
    return torch.stack([(1.0 - m).mean() for m in gms_pyramid(a, b, scales, c)]).mean()


def msgmsd_map(original: torch.Tensor, reconstruction: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> torch.Tensor:
    """MSGMS deviation anomaly map ``1 - mean3(MSGMS(p, p_r))``, ``(B, 1, H, W)`` in ``[0, 1)``.

    ``scales=1`` gives the single-scale GMSD map.
    """
    return 1.0 - mean_filter3(msgms_map(original, reconstruction, scales, c))


def deviation_maps(original: torch.Tensor, reconstruction: torch.Tensor, scales: int = SCALES, c: float = GMS_C):
    """``(msgmsd, gmsd)`` maps from one GMS pyramid (GMSD = its first scale)."""
    pyramid = gms_pyramid(original, reconstruction, scales, c)
    return 1.0 - mean_filter3(_upsampled_mean(pyramid)), 1.0 - mean_filter3(pyramid[0])
