"""Frames without a recess, for training the "nothing found" answer and for calibrating and checking it.

No real frame of another joint ships with the project, so recess-free frames are made:

- :func:`erase_recess`: a real frame whose recess box, widened along the recess, is filled with the
  mirror image of the tissue just above it (cross-faded at the seams): the same anatomy, scanner and
  speckle, without the recess;
- :func:`superficial_view`: the tissue above the recess box (skin, fat, tendon, muscle), stretched to
  the whole frame: layered soft tissue without the recess between fat pads, a stand-in for a scan
  of somewhere else;
- :func:`speckle_frame`: Rayleigh speckle without anatomy (a probe in the air or on a phantom);
- :func:`uniform_frame`: a uniform grey level, with or without Gaussian noise.

All images are ``(H, W)`` float32 in [0, 1]; boxes ``(x_min, y_min, x_max, y_max)``, max exclusive.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lib.data.records import Box

FEATHER = 8
"""Width in pixels of the cross-fade around an erased recess box."""
WIDEN = 0.25
"""An erased box is first widened by this fraction of its width on each side: annotators often box only
the clearest stretch of the recess, and what is left of it beyond the box must go too."""
KINDS = ("erased", "superficial", "speckle", "uniform")
"""The kinds of recess-free frames :func:`negative_frame` makes."""


def erase_recess(image: np.ndarray, box: Box, feather: int = FEATHER, widen: float = WIDEN) -> np.ndarray:
    """``image`` with its recess box (widened by ``widen`` of its width on each side) replaced by the mirrored
    tissue above it (below it when there is more room there)."""
    height, width = image.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    extra = int(round(widen * (x1 - x0)))
    x0, x1 = max(x0 - extra, 0), min(x1 + extra, width)
    out = image.astype(np.float32, copy=True)
    from_above = y0 >= height - y1
    rows = np.arange(y0, min(y1 + feather, height)) if from_above else np.arange(max(y0 - feather, 0), y1)
    if rows.size == 0:
        return out
    source = (2 * y0 - 1 - rows) if from_above else (2 * y1 - 1 - rows)
    source = np.abs(source)  # reflect at the frame's edge when the band does not fit
    source = np.where(source >= height, 2 * height - 1 - source, source).clip(0, height - 1)
    cols = np.arange(max(x0 - feather, 0), min(x1 + feather, width))
    # Weight 1 inside the box, fading to 0 over `feather` px outside it (left, right, and the far side).
    wx = np.clip(np.minimum(cols - (x0 - feather), (x1 + feather) - cols) / max(feather, 1), 0.0, 1.0)
    far = (y1 + feather - rows) if from_above else (rows - (y0 - feather))
    wy = np.clip(far / max(feather, 1), 0.0, 1.0)
    alpha = (wy[:, None] * wx[None, :]).astype(np.float32)
    band = image[np.ix_(source, cols)]
    out[np.ix_(rows, cols)] = alpha * band + (1.0 - alpha) * image[np.ix_(rows, cols)]
    return out


def superficial_view(image: np.ndarray, box: Box) -> np.ndarray:
    """The part of ``image`` above the recess box, resized to the whole frame (``(H, W)``)."""
    height, width = image.shape
    top = max(int(box[1]), 2)
    part = image[:top]
    zoom = (height / part.shape[0], 1.0)
    out = ndimage.zoom(part, zoom, order=1, mode="nearest")
    return np.clip(out[:height], 0.0, 1.0).astype(np.float32)


def speckle_frame(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fully developed speckle (Rayleigh envelope of a smoothed complex field), log-compressed, with a random
    level, depth attenuation and grain size."""
    height, width = shape
    grain = rng.uniform(0.6, 2.5, size=2)
    field = [ndimage.gaussian_filter(rng.standard_normal(shape), grain) for _ in range(2)]
    envelope = np.hypot(*field)
    envelope /= envelope.mean() + 1e-8
    depth = np.linspace(0.0, 1.0, height)[:, None]
    level = rng.uniform(0.2, 0.7) - rng.uniform(0.0, 0.4) * depth
    image = level + rng.uniform(0.08, 0.2) * np.log(envelope + 1e-3)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def uniform_frame(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A uniform grey level (black a quarter of the time), with Gaussian noise three times in four."""
    level = rng.uniform(0.0, 1.0) if rng.random() < 0.75 else 0.0
    std = rng.uniform(0.0, 0.15) if rng.random() < 0.75 else 0.0
    return np.clip(level + std * rng.standard_normal(shape), 0.0, 1.0).astype(np.float32)


def negative_frame(kind: str, rng: np.random.Generator, image: np.ndarray, box: Box) -> np.ndarray:
    """A recess-free frame of ``kind`` (one of :data:`KINDS`) made from a boxed frame (or only its shape)."""
    if kind == "erased":
        return erase_recess(image, box)
    if kind == "superficial":
        return superficial_view(image, box)
    if kind == "speckle":
        return speckle_frame(rng, image.shape)
    if kind == "uniform":
        return uniform_frame(rng, image.shape)
    raise ValueError(f"unknown negative kind {kind!r}; valid kinds are {', '.join(KINDS)}")
