"""The size of a segmented distension: its area and its greatest thickness, in millimetres when the spacing is known.

Definitions (``mask`` ``(H, W)`` bool, rows = y = depth below the probe, columns = x
= along the probe; a longitudinal knee scan has the recess running roughly along x):

* ``area``: the number of segmented pixels times the area of one pixel (``x spacing *
  y spacing``, mm²).
* ``max_thickness``: the greatest number of segmented pixels in any one image column,
  times the y spacing (mm): the fluid's greatest depth measured along one scan line
  (the image's vertical, the beam direction of a linear probe), which is how the
  recess's distension is read off a longitudinal scan. Pixels are counted, not
  spanned, so tissue between two separate pieces of one column does not count.
  ``thickness_at_x`` is that column (the first one when several tie).

Both are exact for the pixels of the mask: against the true shape they are off by the
mask's own pixelation (at most about one pixel of thickness; the tests pin
rectangles, ellipses and several spacings). Limits: a recess tilted by ``a`` degrees
from the image's horizontal measures ``1 / cos(a)`` thicker than its perpendicular
thickness (4 % at 15°); the result is that of the segmentation, not a sonographer's
caliper.

Without a pixel spacing (a PNG or an uncalibrated DICOM) only the pixel values are
given: ``unit`` is ``"pixel"``, ``area_mm2`` and ``max_thickness_mm`` are None and
``note`` says why.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NO_SPACING_NOTE = "no pixel spacing is known for this image: measured in pixels"


def measure(mask: np.ndarray, pixel_spacing_mm: Sequence[float] | None = None) -> dict:
    """Area and greatest thickness of ``mask`` (see the module docstring).

    Args:
        mask: ``(H, W)`` segmentation (nonzero = distended).
        pixel_spacing_mm: ``(x, y)`` millimetres per pixel, or None.

    Returns:
        ``{"unit": "mm" | "pixel", "area_mm2", "max_thickness_mm", "area_pixels", "max_thickness_pixels",
        "thickness_at_x"}`` (mm values None without a spacing, ``thickness_at_x`` None for an empty
        mask), plus ``"note"`` without a spacing.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask is a 2D (H, W) array, got shape {mask.shape}")
    per_column = mask.sum(axis=0)
    area = int(per_column.sum())
    thickness = int(per_column.max(initial=0))
    out = {
        "unit": "pixel",
        "area_mm2": None,
        "max_thickness_mm": None,
        "area_pixels": area,
        "max_thickness_pixels": thickness,
        "thickness_at_x": int(np.argmax(per_column)) if area else None,
    }
    if pixel_spacing_mm is None:
        out["note"] = NO_SPACING_NOTE
        return out
    sx, sy = (float(v) for v in pixel_spacing_mm)
    out.update(unit="mm", area_mm2=area * sx * sy, max_thickness_mm=thickness * sy)
    return out
