"""From anomaly maps to decisions: the image score, and the segmentation mask.

- Score: ``mean`` (paper) or ``max`` (reference code) of the map over the box
  pixels (LoRIS) or over the whole image (the reference code's MSGMSD score, and
  how RIAD and plain autoencoders score), batched on tensors.
- Segmentation: ``map >= pixel_threshold`` (inside the box when
  ``segment_in_box``), then morphological closing followed by opening with a
  3x3 square, the image taken as lying on an infinite background plane
  (the definition of SciPy's ``binary_closing`` / ``binary_opening`` on a
  zero-padded mask). Batched over a leading axis.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.errors import DataError
from lib.loris.masking import box_mask
from lib.loris.settings import POOLINGS, SCORE_REGIONS


def image_scores(maps: torch.Tensor, grid_boxes: torch.Tensor, pooling: str = "mean", region: str = "box") -> torch.Tensor:
    """Image scores ``(B,)``: ``pooling`` of each map ``(B, 1, H, W)`` over its box ``(B, 4)`` (grid pixels)
    when ``region == "box"``, over the whole map when ``region == "image"``."""
    if pooling not in POOLINGS:
        raise DataError(f"unknown pooling {pooling!r}; valid poolings are {', '.join(POOLINGS)}")
    if region not in SCORE_REGIONS:
        raise DataError(f"unknown score region {region!r}; valid regions are {', '.join(SCORE_REGIONS)}")
    if region == "image":
        return maps.mean(dim=(1, 2, 3)) if pooling == "mean" else maps.amax(dim=(1, 2, 3))
    inside = box_mask(grid_boxes.to(maps.device), maps.shape[-2], maps.shape[-1])
    if pooling == "mean":
        return (maps * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3)).clamp(min=1)
    return maps.masked_fill(~inside, float("-inf")).amax(dim=(1, 2, 3))


def _square3(mask: np.ndarray, combine) -> np.ndarray:
    """``combine`` (``np.logical_or``: dilation, ``np.logical_and``: erosion) over each pixel's 3x3 square.

    Pixels outside the array count as background (zero padding); separable, as the square is.
    """
    p = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    rows = combine(combine(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return combine(combine(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Closing then opening with a 3x3 square; ``(H, W)`` or ``(B, H, W)`` bool -> same (each image on its own).

    Both operations as in an infinite background plane: the closing works on a zero-padded copy (so that
    its erosion does not eat pixels on the image edge), the opening's erosion sees background outside.
    The same pixels as ``scipy.ndimage.binary_closing`` on the padded mask then ``binary_opening``
    (``tests/loris/test_postprocess.py`` compares them), 10-30x faster: boolean operations on shifted views.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim < 2:
        raise ValueError(f"clean_mask expects (H, W) or (B, H, W), got shape {mask.shape}")
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    closed = _square3(_square3(padded, np.logical_or), np.logical_and)[..., 1:-1, 1:-1]
    return _square3(_square3(closed, np.logical_and), np.logical_or)


CROP_MARGIN = 2
"""Pixels of background kept around the region when segmenting only its bounding box. The thresholded
mask lies inside the region; the closing's dilation reaches 1 pixel beyond it (inside the zero padding
of :func:`clean_mask`) and nothing else leaves the region's bounding box, so the crop gives exactly the
full-image result (``tests/loris/test_inference_speed.py`` compares both); the margin is a spare."""


def segment(anomaly_map: np.ndarray, pixel_threshold: float, region: np.ndarray | None = None) -> np.ndarray:
    """Segmentation mask: ``anomaly_map >= pixel_threshold`` (within ``region``), closed then opened (3x3).

    Args:
        anomaly_map: ``(H, W)`` or ``(B, H, W)`` float map.
        pixel_threshold: the calibrated pixel threshold.
        region: optional bool array of the same shape; pixels outside are never foreground (the box).
            Only the region's bounding box (plus :data:`CROP_MARGIN`) is processed: the same result,
            several times faster for a box in a large image.
    """
    binary = np.asarray(anomaly_map) >= pixel_threshold
    if region is None:
        return clean_mask(binary)
    region = np.asarray(region, dtype=bool)
    binary &= region
    out = np.zeros_like(binary)
    h, w = binary.shape[-2:]
    flat = region.reshape(-1, h, w)
    rows, cols = np.flatnonzero(flat.any(axis=(0, 2))), np.flatnonzero(flat.any(axis=(0, 1)))
    if rows.size:
        y0, y1 = max(rows[0] - CROP_MARGIN, 0), min(rows[-1] + 1 + CROP_MARGIN, h)
        x0, x1 = max(cols[0] - CROP_MARGIN, 0), min(cols[-1] + 1 + CROP_MARGIN, w)
        out[..., y0:y1, x0:x1] = clean_mask(binary[..., y0:y1, x0:x1])
        out &= region
    return out


def box_region(box, height: int, width: int) -> np.ndarray:
    """Bool ``(H, W)`` array, True inside ``box = (x_min, y_min, x_max, y_max)`` (max exclusive)."""
    region = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    region[y0:y1, x0:x1] = True
    return region
