"""Image and box preparation for the detector, shared by training, validation and inference.

The detector sees an image resized (not padded) to its input grid of
``(H', W')`` pixels (:attr:`DetectorSettings.input_shape`, e.g. 192 x 256),
values in ``[0, 1]``, as a ``(1, H', W')`` tensor (rows = y, columns = x, as the
image). A box ``(x_min, y_min, x_max, y_max)`` is scaled by ``W' / W`` along x
and ``H' / H`` along y; the way back rounds to whole pixels of the original
image and gives back every integer box exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize

from lib.data.geometry import FloatBox, scale_box
from lib.data.records import Box
from lib.errors import DataError


def check_image(image, where: str = "image") -> np.ndarray:
    """Return ``image`` as a float32 ``(H, W)`` array in ``[0, 1]``, or raise a DataError naming the problem."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise DataError(f"{where}: expected a 2D grayscale image (H, W), got shape {tuple(array.shape)}")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise DataError(f"{where}: image of shape {tuple(array.shape)} is too small")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"{where}: image contains NaN or infinite values")
    return np.clip(array, 0.0, 1.0)


def network_image(image: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` float image in [0, 1] -> ``(1, H', W')`` float32 tensor, ``shape = (H', W')``.

    Area interpolation (``monai.transforms.Resize(mode="area")``): the average of
    the covered pixels, the same whether the image is shrunk or enlarged.
    """
    resized = Resize(tuple(shape), mode="area")(np.ascontiguousarray(image)[None])
    tensor = torch.as_tensor(np.asarray(resized), dtype=torch.float32)
    return tensor.clamp_(0.0, 1.0)


def network_box(box: Box, image_size: tuple[int, int], shape: tuple[int, int]) -> FloatBox:
    """Box in the original ``image_size = (W, H)`` image -> float box on the ``shape = (H', W')`` input grid."""
    return scale_box(box, image_size, (shape[1], shape[0]))


def original_box(box, image_size: tuple[int, int], shape: tuple[int, int]) -> Box:
    """Float box on the ``shape = (H', W')`` input grid -> integer box in the original ``(W, H)`` image.

    Rounds to the nearest pixel and clips to the image, keeping at least one pixel (max exclusive).
    """
    w, h = image_size
    x0, y0, x1, y1 = scale_box(tuple(float(v) for v in box), (shape[1], shape[0]), image_size)
    x0 = min(max(int(round(x0)), 0), w - 1)
    y0 = min(max(int(round(y0)), 0), h - 1)
    x1 = min(max(int(round(x1)), x0 + 1), w)
    y1 = min(max(int(round(y1)), y0 + 1), h)
    return (x0, y0, x1, y1)
