"""Image and box preparation for the detector, shared by training, validation and inference.

The detector sees an image resized (not padded) to ``S x S`` with values in
``[0, 1]``, and the recess box scaled the same way (the LoRIS convention,
:func:`lib.data.geometry.to_network` / :func:`~lib.data.geometry.from_network`).

Axis order: ``monai.apps.detection`` reads a box ``[x_min, y_min, x_max, y_max]``
along the tensor's spatial axes *in order* (first spatial axis = "x"). Our
images are ``(H, W)`` arrays (row = y). So the network tensor is the transposed
image, ``(1, W', H')`` = ``(1, S, S)`` with axes ``(x, y)``; then a box of the
project convention is a MONAI ``StandardMode`` box as it is, with no coordinate
swapping anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize

from lib.data.geometry import FloatBox, from_network, to_network
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


def network_image(image: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W)`` float image in [0, 1] -> ``(1, S, S)`` float32 tensor with axes ``(x, y)``.

    Area interpolation (``monai.transforms.Resize(mode="area")``): the average of
    the covered pixels, the same whether the image is shrunk or enlarged.
    """
    resized = Resize((size, size), mode="area")(np.ascontiguousarray(image.T)[None])
    tensor = torch.as_tensor(np.asarray(resized), dtype=torch.float32)
    return tensor.clamp_(0.0, 1.0)


def network_box(box: Box, image_size: tuple[int, int], size: int) -> FloatBox:
    """Box in the original ``(W, H)`` image -> float box on the ``S x S`` network grid (MONAI StandardMode)."""
    return to_network(box, image_size, size)


def original_box(box, image_size: tuple[int, int], size: int) -> Box:
    """Float box on the ``S x S`` network grid -> integer box in the original ``(W, H)`` image (max exclusive)."""
    return from_network(tuple(float(v) for v in box), image_size, size)
