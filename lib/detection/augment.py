"""Training augmentations that keep the recess box exact.

Geometry (scale, translation, optional horizontal flip) is one random crop
window of the original image, possibly reaching past its border (zero
padding, like the dark surround of an ultrasound sector), that always contains
the whole recess box; the window is then resized to ``S x S`` by the same
:func:`~lib.detection.preprocess.network_image` as at inference. The box is
moved by the window offset and scaled by the same factors, so it stays exact
and the image is interpolated only once.

Intensity (gain, gamma, noise) uses MONAI's random intensity transforms.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Compose, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity

from lib.data.geometry import FloatBox
from lib.data.records import Box
from lib.detection.preprocess import network_box, network_image
from lib.detection.settings import DetectorSettings


def crop_window(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` window of an ``(H, W)`` image; parts outside the image are 0."""
    height, width = image.shape
    x0, y0, x1, y1 = window
    out = np.zeros((y1 - y0, x1 - x0), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def _axis_window(length: int, lo: int, hi: int, zoom: float, shift: float) -> tuple[int, int]:
    """A window ``[start, start + size)`` on one axis of ``length`` px that contains ``[lo, hi)``."""
    size = max(int(round(length / zoom)), hi - lo, 2)
    start = int(round(length / 2 + shift * length - size / 2))
    start = min(max(start, hi - size), lo)  # keep the box inside
    return start, start + size


class BoxAugmenter:
    """Random views of an ``(image, box)`` pair for training.

    Args:
        settings: ``scale_range``, ``translate_fraction``, ``flip``, ``gain_range``, ``gamma_range``,
            ``noise_std``, ``image_size``, and ``augment`` (False gives the plain inference view).
        seed: seed of the geometric draws and of the MONAI intensity transforms.
    """

    def __init__(self, settings: DetectorSettings, seed: int = 0):
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.intensity = Compose([
            RandScaleIntensity(factors=settings.gain_range, prob=1.0 if settings.gain_range > 0 else 0.0),
            RandAdjustContrast(prob=1.0 if settings.gamma_range > 0 else 0.0,
                               gamma=(1.0 - settings.gamma_range, 1.0 + settings.gamma_range)),
            RandGaussianNoise(prob=1.0 if settings.noise_std > 0 else 0.0, std=settings.noise_std),
        ])
        self.intensity.set_random_state(seed=seed)

    def __call__(self, image: np.ndarray, box: Box) -> tuple[torch.Tensor, FloatBox]:
        """One random view: ``(1, S, S)`` tensor with axes ``(x, y)`` and the box on the ``S x S`` grid."""
        s = self.settings
        size = s.image_size
        height, width = image.shape
        if not s.augment:
            return network_image(image, size), network_box(box, (width, height), size)
        zoom = self.rng.uniform(1.0 - s.scale_range, 1.0 + s.scale_range)
        tx, ty = self.rng.uniform(-s.translate_fraction, s.translate_fraction, size=2)
        x0, x1 = _axis_window(width, box[0], box[2], zoom, tx)
        y0, y1 = _axis_window(height, box[1], box[3], zoom, ty)
        view = crop_window(image, (x0, y0, x1, y1))
        local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        if s.flip and self.rng.random() < 0.5:
            view = view[:, ::-1]
            local = (view.shape[1] - local[2], local[1], view.shape[1] - local[0], local[3])
        tensor = network_image(view, size)
        tensor = torch.as_tensor(np.asarray(self.intensity(tensor)), dtype=torch.float32).clamp_(0.0, 1.0)
        return tensor, network_box(local, (view.shape[1], view.shape[0]), size)

    def negative(self) -> torch.Tensor:
        """A recess-free ``(1, S, S)`` training image (no box): a uniform level, blank or with noise."""
        size = self.settings.image_size
        level = self.rng.uniform(0.0, 1.0) if self.rng.random() < 0.75 else 0.0
        std = self.rng.uniform(0.0, 0.15) if self.rng.random() < 0.75 else 0.0
        image = level + std * self.rng.standard_normal((1, size, size))
        return torch.as_tensor(image, dtype=torch.float32).clamp_(0.0, 1.0)
