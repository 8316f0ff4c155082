"""Boxes between an image's own pixel grid and the network's ``S x S`` grid.

Images of any ``W x H`` are resized (not padded) to ``S x S``. A box in the
original image, ``(x_min, y_min, x_max, y_max)`` with max exclusive, maps to a
float box on the resized grid by scaling x by ``S / W`` and y by ``S / H``; the
inverse scaling followed by rounding gives back the original integers exactly
(the scale factors are exact enough in float64 for any image under 10^6 px).
"""

from __future__ import annotations

import math

from lib.data.records import Box

FloatBox = tuple[float, float, float, float]


def scale_box(box, from_size: tuple[int, int], to_size: tuple[int, int]) -> FloatBox:
    """Scale a box from an image of ``from_size = (W, H)`` to one of ``to_size = (W', H')``."""
    (w0, h0), (w1, h1) = from_size, to_size
    sx, sy = w1 / w0, h1 / h0
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def to_network(box: Box, image_size: tuple[int, int], size: int) -> FloatBox:
    """Box in the original ``image_size = (W, H)`` image -> float box on the ``size x size`` grid."""
    return scale_box(box, image_size, (size, size))


def from_network(box: FloatBox, image_size: tuple[int, int], size: int) -> Box:
    """Float box on the ``size x size`` grid -> integer box in the original ``(W, H)`` image.

    Rounds to the nearest pixel and clips to the image, keeping at least one pixel.
    """
    w, h = image_size
    x0, y0, x1, y1 = scale_box(box, (size, size), image_size)
    x0 = min(max(int(round(x0)), 0), w - 1)
    y0 = min(max(int(round(y0)), 0), h - 1)
    x1 = min(max(int(round(x1)), x0 + 1), w)
    y1 = min(max(int(round(y1)), y0 + 1), h)
    return (x0, y0, x1, y1)


def covering_pixels(box: FloatBox, width: int, height: int) -> Box:
    """The integer pixel box that fully covers a float box (floor the mins, ceil the maxes), clipped.

    Used for the inpainting mask on the resized grid: every pixel touched by
    the recess box is hidden from the network.
    """
    x0, y0, x1, y1 = box
    eps = 1e-6  # keep 3.0000000001 from covering one pixel more than 3.0
    ix0 = min(max(int(math.floor(x0 + eps)), 0), width - 1)
    iy0 = min(max(int(math.floor(y0 + eps)), 0), height - 1)
    ix1 = min(max(int(math.ceil(x1 - eps)), ix0 + 1), width)
    iy1 = min(max(int(math.ceil(y1 - eps)), iy0 + 1), height)
    return (ix0, iy0, ix1, iy1)


def box_iou(a, b) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes (max exclusive)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
