"""The segmentation's area and greatest thickness, on masks of known geometry, within one pixel's worth."""

import math

import numpy as np
import pytest

from lib.loris.measurements import NO_SPACING_NOTE, measure


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.2, 0.05), (0.0734, 0.0734)])
def test_rectangle_is_measured_exactly(spacing):
    mask = np.zeros((120, 200), bool)
    mask[30:47, 50:140] = True  # 17 rows x 90 columns
    m = measure(mask, spacing)
    assert m["unit"] == "mm" and m["area_pixels"] == 17 * 90 and m["max_thickness_pixels"] == 17
    assert m["area_mm2"] == pytest.approx(17 * 90 * spacing[0] * spacing[1])
    assert m["max_thickness_mm"] == pytest.approx(17 * spacing[1])
    assert m["thickness_at_x"] == 50


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.15, 0.1), (0.08, 0.12)])
@pytest.mark.parametrize("semi_axes_mm", [(9.0, 2.5), (6.0, 4.0), (12.0, 1.2)])
def test_ellipse_area_and_depth_are_within_one_pixel_of_the_true_shape(spacing, semi_axes_mm):
    sx, sy = spacing
    a, b = semi_axes_mm  # half length along x, half depth along y, millimetres
    h, w = int(4 * b / sy) + 10, int(4 * a / sx) + 10
    cx, cy = w * sx / 2, h * sy / 2
    x = (np.arange(w) + 0.5) * sx - cx  # pixel centres in mm
    y = (np.arange(h) + 0.5) * sy - cy
    mask = (x[None, :] / a) ** 2 + (y[:, None] / b) ** 2 <= 1.0
    m = measure(mask, spacing)
    true_area = math.pi * a * b
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    assert abs(m["area_mm2"] - true_area) <= perimeter * max(sx, sy)  # one pixel's worth around the outline
    assert abs(m["max_thickness_mm"] - 2 * b) <= sy  # one pixel along the depth
    assert abs(m["thickness_at_x"] + 0.5 - w / 2) <= a / sx * 0.5  # the deepest column is near the middle


def test_thickness_counts_pixels_not_the_span_of_two_pieces_in_one_column():
    mask = np.zeros((50, 20), bool)
    mask[5:10, 4] = True
    mask[30:36, 4] = True  # 11 pixels in column 4, spread over 31 rows
    mask[10:18, 12] = True  # 8 pixels in column 12
    m = measure(mask, (0.5, 0.25))
    assert m["max_thickness_pixels"] == 11 and m["max_thickness_mm"] == pytest.approx(11 * 0.25)
    assert m["thickness_at_x"] == 4


def test_without_a_spacing_the_measurements_are_in_pixels_and_say_so():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 1:8] = True
    m = measure(mask, None)
    assert m == {"unit": "pixel", "area_mm2": None, "max_thickness_mm": None, "area_pixels": 21,
                 "max_thickness_pixels": 3, "thickness_at_x": 1, "note": NO_SPACING_NOTE}


def test_an_empty_segmentation_measures_zero():
    m = measure(np.zeros((8, 9), bool), (0.1, 0.1))
    assert (m["area_mm2"], m["max_thickness_mm"], m["thickness_at_x"]) == (0.0, 0.0, None)


def test_a_mask_that_is_not_2d_is_refused():
    with pytest.raises(ValueError, match="2D"):
        measure(np.zeros((2, 3, 4), bool), None)
