"""Preprocessing, built once and shared by training, validation, inference and evaluation.

An image of any ``W x H`` (``float32`` ``(H, W)`` in ``[0, 1]``, as
:func:`lib.data.imageio.read_image` returns it) is resized (bilinear,
anti-aliased when shrinking; not padded) to the network grid ``S x S`` and
scaled to the network's intensity range ``[-1, 1]`` (the ``tanh`` output
range). Its box is scaled to the grid with :mod:`lib.data.geometry` and the
pixels it touches are the ones masked. Results go back to the original
geometry with the inverse resize.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lib.data.geometry import covering_pixels, to_network
from lib.data.records import Box

NETWORK_RANGE = (-1.0, 1.0)
"""Intensity range of the network input and output; images in ``[0, 1]`` map linearly onto it."""

NORMALIZATION = {"input_range": [0.0, 1.0], "network_range": list(NETWORK_RANGE), "resize": "bilinear-antialias"}
"""Saved with every model so that a reader knows how the network saw the images."""


def to_network_range(x):
    """``[0, 1]`` -> ``[-1, 1]`` (tensor or array)."""
    return x * 2.0 - 1.0


def to_unit_range(x):
    """``[-1, 1]`` -> ``[0, 1]`` (tensor or array); not clipped."""
    return (x + 1.0) * 0.5


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size = (H', W')``; anti-aliased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """One image ``(H, W)`` in ``[0, 1]`` -> ``(1, S, S)`` float32 tensor in ``[-1, 1]``."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"expected a 2D image (H, W), got shape {tuple(t.shape)}")
    return to_network_range(resize(t[None, None], (size, size))[0].clamp(0.0, 1.0))


def network_box(box: Box, image_size: tuple[int, int], size: int) -> Box:
    """Box in the original image of ``image_size = (W, H)`` -> integer pixel box on the ``S x S`` grid.

    The box covers every grid pixel the original box touches (so the whole recess is hidden).
    """
    return covering_pixels(to_network(box, image_size, size), size, size)


def batch(images: Sequence[np.ndarray], boxes: Sequence[Box], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (each ``(H, W)`` in ``[0, 1]``, sizes may differ) and their boxes -> network batch.

    Returns:
        ``x``: ``(B, 1, S, S)`` float32 in ``[-1, 1]``;
        ``grid_boxes``: ``(B, 4)`` int64, each ``(x_min, y_min, x_max, y_max)`` on the ``S x S`` grid.
    """
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
    x = torch.stack([image_tensor(img, size) for img in images]) if images else torch.zeros(0, 1, size, size)
    grid = [network_box(b, (img.shape[1], img.shape[0]), size) for img, b in zip(images, boxes)]
    return x, torch.as_tensor(grid, dtype=torch.int64).reshape(-1, 4)


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """A bool mask ``(H, W)`` -> bool ``(1, S, S)`` on the grid (a grid pixel is foreground when >= half covered)."""
    t = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="area")
    return t[0] >= 0.5


def to_original(x: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """A grid map ``(1, S, S)`` or ``(S, S)`` -> float32 ``(H, W)`` array in the original ``image_size = (W, H)``."""
    t = x.reshape(1, 1, *x.shape[-2:]).float()
    w, h = image_size
    return resize(t, (h, w))[0, 0].cpu().numpy().astype(np.float32, copy=False)
