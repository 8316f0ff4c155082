"""Training augmentations that keep the recess box exact.

Geometry (zoom, vertical stretch, translation, optional horizontal flip) is
one random crop window of the original image, possibly reaching past its
border (zero padding, like the dark surround of an ultrasound sector), that
always contains the whole recess box; the window is then resized to the input
grid by the same :func:`~lib.detection.preprocess.network_image` as at
inference. The box is moved by the window offset and scaled by the same
factors, so it stays exact and the image is interpolated only once.

Intensity (gain, gamma, noise) uses MONAI's random intensity transforms.

Frames without a recess (:mod:`lib.detection.negatives`) go through the same
geometry and intensity changes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from monai.transforms import Compose, RandAdjustContrast, RandGaussianNoise, RandScaleIntensity

from lib.data.geometry import FloatBox
from lib.data.records import Box
from lib.detection.negatives import negative_frame
from lib.detection.preprocess import network_box, network_image
from lib.detection.settings import DetectorSettings
from lib.training.random_states import random_state_from_dict, random_state_to_dict

NEGATIVE_KINDS = ("erased", "erased", "erased", "speckle", "uniform")
"""Training negatives are drawn from this list (three in five erase the recess of the training image)."""


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


def _centre_line(image: np.ndarray, box: Box) -> tuple[float, float]:
    """``(slope, intercept)`` of the recess's centre line in the box: a straight line through the darkest
    row of each column, weighted by how much darker than its column that row is, refitted once without
    the columns farther than a quarter of the box height from the first fit. The box's middle row when
    that line does not stay well inside the box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    part = ndimage.gaussian_filter(image[y0:y1, x0:x1].astype(np.float64), (2.0, 4.0))
    rows = part.argmin(axis=0) + y0 + 0.5
    cols = np.arange(x0, x1) + 0.5
    weights = np.clip(np.median(part, axis=0) - part.min(axis=0), 0.0, None) ** 2 + 1e-9
    if cols.size < 2:
        return 0.0, float((y0 + y1) / 2)
    fit = np.polyfit(cols, rows, 1, w=np.sqrt(weights))
    near = np.abs(np.polyval(fit, cols) - rows) < max((y1 - y0) / 4.0, 2.0)
    if near.sum() >= 2:
        fit = np.polyfit(cols[near], rows[near], 1, w=np.sqrt(weights[near]))
    ends = np.polyval(fit, [x0, x1])
    margin = 0.15 * (y1 - y0)
    if ends.min() < y0 + margin or ends.max() > y1 - margin:  # not a line inside the box: use its middle
        return 0.0, float((y0 + y1) / 2)
    return float(fit[0]), float(fit[1])


LINE_HALF = 0.1
"""Assumed half-thickness of a normal recess line, as a fraction of its box height (boxes carry margins)."""


def bulge(image: np.ndarray, box: Box, rng: np.random.Generator, swell: float,
          fluid: float = 0.0) -> tuple[np.ndarray, Box]:
    """Swell a normal recess into a lens of fluid, as a distended recess looks; the box follows.

    Along the recess's centre line ``c(x)`` (:func:`_centre_line`) the line (half-thickness ``h0``,
    :data:`LINE_HALF` of the box height) is stretched into a lens of half-thickness ``h0 + L(x)``, where
    ``L(x)`` is a bump over most of the box peaking at ``swell`` times the box height, shared between the
    upper side (a random half to all of it: fluid lifts the tendon more than it pushes the bone) and the
    lower side; the tissue on each side is pushed away by that side's growth (by all of it up to half a
    box height beyond the box, then less and less, not at all two box heights from the line), so the
    rest of the frame keeps its place. The lens is then darkened by the factor ``1 - fluid``
    (1: anechoic), with a 3-pixel soft edge. The box keeps its x extent; its top and bottom move with
    the tissue there (by each side's growth at the peak).

    Args:
        image: ``(H, W)`` float image in [0, 1]; box: its recess box (pixels, max exclusive).
        rng: draws where along the box the lens peaks, its reach on each side and its profile.

    Returns:
        ``(swollen image (H, W) float32, its box)``.
    """
    height, width = image.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    box_height = max(y1 - y0, 2)
    slope, intercept = _centre_line(image, box)
    half = LINE_HALF * box_height
    near = 0.5 * box_height + half  # distance from the line up to which the tissue moves by the full L
    far = 2.0 * box_height  # distance from the line beyond which nothing moves
    centre = rng.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))
    left, right = (centre - x0) * rng.uniform(0.75, 1.0), (x1 - centre) * rng.uniform(0.75, 1.0)
    xs = np.arange(width, dtype=np.float64) + 0.5
    t = np.where(xs < centre, (xs - centre) / max(left, 1.0), (xs - centre) / max(right, 1.0))
    profile = np.clip(np.cos(0.5 * np.pi * np.clip(t, -1.0, 1.0)), 0.0, None) ** rng.uniform(1.0, 3.0)
    lens = swell * box_height * profile  # (W,) total growth of the lens's thickness
    upward = rng.uniform(0.5, 1.0)  # share of the growth above the line (the bone below barely moves)
    line = slope * xs + intercept  # (W,)
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    offset = ys - line[None, :]
    d = np.abs(offset)  # distance from the centre line, (H, W)
    grow = np.where(offset < 0, upward, 1.0 - upward) * lens[None, :]  # this side's growth, (H, W)
    lens_edge = half + grow
    fade = np.clip((far - d) / (far - near), 0.0, 1.0)
    outside = line[None, :] + np.sign(offset) * (d - grow * fade * fade * (3.0 - 2.0 * fade))
    inside = line[None, :] + offset * half / lens_edge
    source = np.where(d < lens_edge, inside, outside)
    coords = np.stack([source - 0.5, np.broadcast_to(xs[None, :] - 0.5, source.shape)])
    swollen = ndimage.map_coordinates(image, coords, order=1, mode="nearest").astype(np.float32)
    if fluid > 0:
        depth = np.clip((lens_edge - d) / 3.0, 0.0, 1.0) * (lens[None, :] > 0.5)
        swollen *= (1.0 - fluid * depth * depth * (3.0 - 2.0 * depth)).astype(np.float32)
    new_y0 = max(int(np.floor(y0 - upward * lens.max())), 0)
    new_y1 = min(int(np.ceil(y1 + (1.0 - upward) * lens.max())), height)
    return swollen, (x0, new_y0, x1, new_y1)


class BoxAugmenter:
    """Random views of an ``(image, box)`` pair for training.

    Args:
        settings: ``scale_range``, ``stretch_range``, ``translate_fraction``, ``flip``, ``gain_range``,
            ``gamma_range``, ``noise_std``, the input grid, and ``augment`` (False gives the plain
            inference view).
        seed: seed of the geometric draws and of the MONAI intensity transforms.
    """

    def __init__(self, settings: DetectorSettings, seed: int = 0):
        self.settings = settings
        self.intensity = Compose([
            RandScaleIntensity(factors=settings.gain_range, prob=1.0 if settings.gain_range > 0 else 0.0),
            RandAdjustContrast(prob=1.0 if settings.gamma_range > 0 else 0.0,
                               gamma=(1.0 - settings.gamma_range, 1.0 + settings.gamma_range)),
            RandGaussianNoise(prob=1.0 if settings.noise_std > 0 else 0.0, std=settings.noise_std),
        ])
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every random draw (geometry, negatives, intensity) from ``seed``."""
        self.rng = np.random.default_rng(seed)
        self.intensity.set_random_state(seed=seed)

    def state_dict(self) -> dict:
        """The state of every random draw (a training checkpoint saves it: a resumed training draws on)."""
        return {"rng": self.rng.bit_generator.state,
                "intensity": [random_state_to_dict(t.R) for t in self.intensity.transforms]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for transform, saved in zip(self.intensity.transforms, state["intensity"]):
            random_state_from_dict(transform.R, saved)

    def __call__(self, image: np.ndarray, box: Box) -> tuple[torch.Tensor, FloatBox]:
        """One random view: ``(1, H', W')`` tensor and the box on the input grid."""
        s = self.settings
        shape = s.input_shape
        height, width = image.shape
        if not s.augment:
            return network_image(image, shape), network_box(box, (width, height), shape)
        if s.bulge_fraction > 0 and self.rng.random() < s.bulge_fraction:
            image, box = bulge(image, box, self.rng, self.rng.uniform(0.05, s.bulge_swell),
                               fluid=self.rng.uniform(0.3, 1.0))
        zoom = self.rng.uniform(1.0 - s.scale_range, 1.0 + s.scale_range)
        stretch = self.rng.uniform(1.0 - s.stretch_range, 1.0 + s.stretch_range)
        tx, ty = self.rng.uniform(-s.translate_fraction, s.translate_fraction, size=2)
        x0, x1 = _axis_window(width, box[0], box[2], zoom, tx)
        y0, y1 = _axis_window(height, box[1], box[3], zoom * stretch, ty)
        view = crop_window(image, (x0, y0, x1, y1))
        local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        if s.flip and self.rng.random() < 0.5:
            view = view[:, ::-1]
            local = (view.shape[1] - local[2], local[1], view.shape[1] - local[0], local[3])
        tensor = network_image(view, shape)
        tensor = torch.as_tensor(np.asarray(self.intensity(tensor)), dtype=torch.float32).clamp_(0.0, 1.0)
        return tensor, network_box(local, (view.shape[1], view.shape[0]), shape)

    def negative(self, image: np.ndarray, box: Box) -> torch.Tensor:
        """A random view (``(1, H', W')``, no box) of a recess-free frame made from a boxed training frame."""
        kind = NEGATIVE_KINDS[int(self.rng.integers(len(NEGATIVE_KINDS)))]
        frame = negative_frame(kind, self.rng, image, box)
        return self(frame, box)[0]
