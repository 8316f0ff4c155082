"""Multi-scale gradient magnitude similarity (MSGMS), written once for the loss and the anomaly maps.

Recipe of the LoRIS reference code (../shared/LORIS-NOTES.md), on intensities
as the network sees them (``[-1, 1]``, one channel):

- gradients by cross-correlation with the unnormalized Prewitt kernels
  ``gx = [[1,0,-1],[1,0,-1],[1,0,-1]]``, ``gy = [[1,1,1],[0,0,0],[-1,-1,-1]]``
  (zero padding, no division by 3), magnitude ``g = sqrt(gx^2 + gy^2 + eps)``;
- ``GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c)`` with ``c = 0.0026``;
- scales: the image and three successive 2x2 average poolings (4 scales).

What is median-filtered differs between the two uses, as in the notes:

- **loss** (:func:`msgms_loss`): no filtering; the mean over the scales of
  ``mean(1 - GMS_s)`` at each scale's own resolution (no upsampling);
- **anomaly map** (:func:`msgmsd_map`): both images are 3x3 median-filtered
  (reflect padding) first; each scale's GMS map is upsampled back to full size
  (bilinear), the maps are averaged, smoothed by a 3x3 mean filter (reflect
  padding), and the map is ``1 - MSGMS``.

All functions take ``(B, 1, H, W)`` tensors and are batched; nothing loops over pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GMS_C = 0.0026
"""Stability constant ``c`` of the GMS (reference value for intensities in ``[-1, 1]``)."""

EPS = 1e-12
"""``eps`` in ``sqrt(gx^2 + gy^2 + eps)``: keeps the gradient of the square root finite at 0."""

SCALES = 4

PREWITT = torch.tensor(
    [
        [[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]],  # gx
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]],  # gy
    ]
).unsqueeze(1)
"""``(2, 1, 3, 3)``: the unnormalized Prewitt kernels, applied as cross-correlation (``conv2d``)."""


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")


_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
    (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)
"""Compare-exchange pairs that leave the median of 9 values in position 4 (Paeth's median-of-9 network)."""


def median_filter3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter with reflect padding (``d c b | a b c d``), ``(B, C, H, W)`` -> same shape.

    The 9 shifted views go through a 19-comparator min/max network: exactly the median of each window
    (the same values as sorting it), without materializing or sorting the windows (~100x faster on CPU).
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    v = [padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9_NETWORK:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[4].contiguous()


def mean_filter3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean filter with reflect padding, ``(B, C, H, W)`` -> same shape."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel_size=3, stride=1)


def gradient_magnitude(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Prewitt gradient magnitude ``sqrt(gx^2 + gy^2 + eps)`` (zero padding), ``(B, 1, H, W)`` -> same shape."""
    _check(x)
    g = F.conv2d(x, PREWITT.to(dtype=x.dtype, device=x.device), padding=1)
    return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2 + eps)


def gms(a: torch.Tensor, b: torch.Tensor, c: float = GMS_C) -> torch.Tensor:
    """Gradient magnitude similarity map ``(2 g1 g2 + c) / (g1^2 + g2^2 + c)`` in ``(0, 1]``, ``(B, 1, H, W)``."""
    ga, gb = gradient_magnitude(a), gradient_magnitude(b)
    return (2.0 * ga * gb + c) / (ga * ga + gb * gb + c)


def gms_pyramid(a: torch.Tensor, b: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> list[torch.Tensor]:
    """GMS maps at ``scales`` scales: the inputs, then successive 2x2 average poolings (each at its own size)."""
    _check(a)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    maps = []
    for s in range(scales):
        if s:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        maps.append(gms(a, b, c))
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
    """MSGMS loss (scalar): mean over scales of ``mean(1 - GMS_s)``; no median filter, no upsampling."""
    return torch.stack([(1.0 - m).mean() for m in gms_pyramid(a, b, scales, c)]).mean()


def msgmsd_map(original: torch.Tensor, reconstruction: torch.Tensor, scales: int = SCALES, c: float = GMS_C) -> torch.Tensor:
    """MSGMS deviation anomaly map ``1 - mean3(MSGMS(median3(p), median3(p_r)))``, ``(B, 1, H, W)`` in ``[0, 1)``.

    ``scales=1`` gives the single-scale GMSD map.
    """
    sim = msgms_map(median_filter3(original), median_filter3(reconstruction), scales, c)
    return 1.0 - mean_filter3(sim)


def deviation_maps(original: torch.Tensor, reconstruction: torch.Tensor, scales: int = SCALES, c: float = GMS_C):
    """``(msgmsd, gmsd)`` maps from one median filtering and one GMS pyramid (GMSD = its first scale)."""
    pyramid = gms_pyramid(median_filter3(original), median_filter3(reconstruction), scales, c)
    return 1.0 - mean_filter3(_upsampled_mean(pyramid)), 1.0 - mean_filter3(pyramid[0])
