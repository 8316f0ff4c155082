"""Pixel box <-> markups ROI in RAS: round trips and known geometries."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from LoRISLib import geometry

IDENTITY = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
BOXES = [[0, 0, 1, 1], [10, 20, 30, 40], [3, 7, 64, 48], [0, 0, 64, 48], [63, 47, 64, 48]]


def _geometries():
    yield "identity", IDENTITY
    yield "png", geometry.png_ijk_to_ras()
    yield "spacing_origin", geometry.ijk_to_ras_from_lps((12.5, -3.0, 7.0), (0.2, 0.35, 2.0), np.eye(3).tolist())
    flipped = [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]  # i runs toward R in LPS terms, k flipped
    yield "flipped", geometry.ijk_to_ras_from_lps((5.0, 5.0, 0.0), (0.5, 0.5, 1.0), flipped)
    permuted = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]  # columns go along S, rows along L: a "sagittal" frame
    yield "permuted", geometry.ijk_to_ras_from_lps((1.0, 2.0, 3.0), (0.3, 0.4, 1.0), permuted)


@pytest.mark.parametrize("name,matrix", list(_geometries()))
@pytest.mark.parametrize("box", BOXES)
def test_pixel_box_round_trips_through_ras_roi(name, matrix, box):
    center, size = geometry.pixel_box_to_roi(box, matrix)
    assert geometry.roi_to_pixel_box(center, size, matrix, (64, 48)) == box


def test_png_frame_geometry_matches_itk_png_reader(tmp_path):
    # Slicer reads PNG through ITK: the matrix for a PNG must be what ITK's reader reports, with LPS->RAS applied.
    path = tmp_path / "frame.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(path)
    img = sitk.ReadImage(str(path))
    origin = list(img.GetOrigin()) + [0.0]
    spacing = list(img.GetSpacing()) + [1.0]
    d = img.GetDirection()
    direction = [[d[0], d[1], 0.0], [d[2], d[3], 0.0], [0.0, 0.0, 1.0]]
    assert geometry.ijk_to_ras_from_lps(origin, spacing, direction) == geometry.png_ijk_to_ras()
    # RAS = (-i, -j, 0)
    assert geometry.transform_point(geometry.png_ijk_to_ras(), (5, 7, 0)) == [-5.0, -7.0, 0.0]


def test_png_box_gives_known_roi():
    # pixels 10..29 (cols) x 20..49 (rows): edges at i = 9.5 .. 29.5, j = 19.5 .. 49.5 -> R = -i, A = -j
    center, size = geometry.pixel_box_to_roi([10, 20, 30, 50], geometry.png_ijk_to_ras())
    assert center == pytest.approx([-19.5, -34.5, 0.0])
    assert size == pytest.approx([20.0, 30.0, 1.0])


def test_ras_matrix_matches_sitk_physical_points_for_non_unit_geometry():
    origin, spacing = (12.5, -3.0, 7.0), (0.2, 0.35, 2.0)
    direction = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
    img = sitk.Image(8, 6, 2, sitk.sitkUInt8)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction.flatten().tolist())
    m = geometry.ijk_to_ras_from_lps(origin, spacing, direction.tolist())
    for ijk in [(0, 0, 0), (3, 5, 1), (7.5, -0.5, 0.25)]:
        lps = img.TransformContinuousIndexToPhysicalPoint(ijk)
        ras = [-lps[0], -lps[1], lps[2]]
        assert geometry.transform_point(m, ijk) == pytest.approx(ras)


def test_non_unit_spacing_scales_roi_size():
    m = geometry.ijk_to_ras_from_lps((0, 0, 0), (0.1, 0.2, 3.0), np.eye(3).tolist())
    _, size = geometry.pixel_box_to_roi([0, 0, 10, 5], m)
    assert size == pytest.approx([1.0, 1.0, 3.0])


def test_invert_affine_matches_numpy():
    m = geometry.ijk_to_ras_from_lps((1.0, 2.0, 3.0), (0.3, 0.4, 1.5), [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert np.allclose(geometry.invert_affine(m), np.linalg.inv(np.array(m)))


def test_hand_drawn_roi_snaps_to_nearest_pixel_edges():
    m = geometry.png_ijk_to_ras()
    # ROI edges at i = 9.3 .. 29.8 -> pixel edges 9.8 and 30.3 -> nearest borders 10 and 30
    bounds = [-29.8, -9.3, -50.0, -19.4, -1.0, 1.0]
    assert geometry.ras_bounds_to_pixel_box(bounds, m, (64, 64)) == [10, 20, 30, 50]


def test_roi_partly_outside_is_clipped_to_image():
    m = geometry.png_ijk_to_ras()
    center, size = geometry.pixel_box_to_roi([50, 40, 80, 70], m)
    assert geometry.roi_to_pixel_box(center, size, m, (64, 48)) == [50, 40, 64, 48]


def test_roi_outside_image_raises():
    m = geometry.png_ijk_to_ras()
    with pytest.raises(ValueError, match="does not overlap"):
        geometry.roi_to_pixel_box([100.0, 100.0, 0.0], [5.0, 5.0, 1.0], m, (64, 48))


@pytest.mark.parametrize("box", [[5, 5, 5, 9], [9, 5, 4, 9], [1, 2, 3]])
def test_empty_inverted_or_short_box_raises(box):
    with pytest.raises(ValueError):
        geometry.pixel_box_to_roi(box, IDENTITY)


def test_singular_or_non_affine_matrix_raises():
    with pytest.raises(ValueError, match="singular"):
        geometry.invert_affine([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="affine"):
        geometry.pixel_box_to_roi([0, 0, 2, 2], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
