"""Anomaly maps: per-pixel deviation between an image ``p`` and its reconstruction ``p_r``.

``anomaly_map(original, reconstruction, metric)`` takes ``(B, 1, H, W)``
tensors in the network's intensity range ``[-1, 1]`` and returns
``(B, 1, H, W)`` (0 = no anomaly, larger = more anomalous), batched, on the
inputs' device. Metrics (``docs/method.md``):

- ``msgmsd``: multi-scale gradient magnitude similarity deviation,
  ``1 - mean3(MSGMS(p, p_r))`` over 4 scales, each scale pooled, then
  median-filtered, then compared (:mod:`lib.loris.msgms`), in ``[0, 1)``;
  best image-level detection in the paper.
- ``gmsd``: the same at a single scale.
- ``dd``: directional difference ``max(p_r - p, 0)``, in ``[0, 2]``: only pixels
  that the reconstruction makes *brighter* count (a dark distended recess is
  repainted as a lighter normal one); best segmentation in the paper.
- ``ssim``: ``1 - SSIM`` map (Gaussian window 11, sigma 1.5, reflect padding so
  that the map keeps the image size; MONAI's SSIM), in ``[0, 2]``.
- ``l2``: squared difference ``(p_r - p)^2``, in ``[0, 4]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.metrics.regression import compute_ssim_and_cs

from lib.loris.msgms import GMS_C, SCALES, deviation_maps, msgmsd_map
from lib.loris.preprocess import NETWORK_RANGE
from lib.loris.settings import METRICS
from lib.errors import DataError

__all__ = ["METRICS", "anomaly_map", "anomaly_maps", "check_metric"]

SSIM_WIN = 11
SSIM_SIGMA = 1.5


def check_metric(metric: str) -> str:
    """Return ``metric`` if known, else raise :class:`DataError` listing :data:`METRICS`."""
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")
    return metric


def _ssim_map(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    half = SSIM_WIN // 2
    pad = (half, half, half, half)
    mode = "reflect" if min(original.shape[-2:]) > half else "replicate"
    ssim, _ = compute_ssim_and_cs(
        F.pad(reconstruction, pad, mode=mode),
        F.pad(original, pad, mode=mode),
        spatial_dims=2,
        kernel_size=(SSIM_WIN, SSIM_WIN),
        kernel_sigma=(SSIM_SIGMA, SSIM_SIGMA),
        data_range=NETWORK_RANGE[1] - NETWORK_RANGE[0],
    )
    return 1.0 - ssim


def anomaly_map(original: torch.Tensor, reconstruction: torch.Tensor, metric: str) -> torch.Tensor:
    """Anomaly map of ``metric`` (one of :data:`METRICS`): ``(B, 1, H, W)`` x 2 -> ``(B, 1, H, W)``."""
    check_metric(metric)
    if original.shape != reconstruction.shape or original.ndim != 4 or original.shape[1] != 1:
        raise ValueError(
            f"anomaly_map expects two (B, 1, H, W) tensors of the same shape, got "
            f"{tuple(original.shape)} and {tuple(reconstruction.shape)}"
        )
    if metric == "msgmsd":
        return msgmsd_map(original, reconstruction, SCALES, GMS_C)
    if metric == "gmsd":
        return msgmsd_map(original, reconstruction, 1, GMS_C)
    if metric == "dd":
        return torch.clamp(reconstruction - original, min=0.0)
    if metric == "ssim":
        return _ssim_map(original, reconstruction)
    return (reconstruction - original) ** 2


def anomaly_maps(original: torch.Tensor, reconstruction: torch.Tensor, metrics=METRICS) -> dict[str, torch.Tensor]:
    """Several metrics at once, ``{metric: (B, 1, H, W)}``; ``msgmsd`` and ``gmsd`` share one GMS pyramid."""
    metrics = [check_metric(m) for m in metrics]
    out = {}
    if "msgmsd" in metrics and "gmsd" in metrics:
        out["msgmsd"], out["gmsd"] = deviation_maps(original, reconstruction, SCALES, GMS_C)
    for m in metrics:
        if m not in out:
            out[m] = anomaly_map(original, reconstruction, m)
    return {m: out[m] for m in metrics}
