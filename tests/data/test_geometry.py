"""Boxes between the image grid and the network grid."""

import itertools

import numpy as np
import pytest

from lib.data.geometry import box_iou, covering_pixels, from_network, to_network


@pytest.mark.parametrize("image_size", [(640, 480), (480, 640), (97, 53), (1024, 768), (256, 256)])
@pytest.mark.parametrize("size", [64, 128, 256, 320])
def test_box_survives_resize_round_trip_exactly(image_size, size):
    w, h = image_size
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, x1 = sorted(rng.choice(w + 1, size=2, replace=False))
        y0, y1 = sorted(rng.choice(h + 1, size=2, replace=False))
        box = (int(x0), int(y0), int(x1), int(y1))
        assert from_network(to_network(box, image_size, size), image_size, size) == box


def test_to_network_scales_each_axis_by_its_own_factor():
    assert to_network((64, 48, 320, 240), (640, 480), 256) == pytest.approx((25.6, 25.6, 128.0, 128.0))


def test_covering_pixels_floors_mins_and_ceils_maxes():
    assert covering_pixels((2.5, 3.0, 7.2, 9.0), 16, 16) == (2, 3, 8, 9)


def test_covering_pixels_keeps_at_least_one_pixel_and_stays_inside():
    assert covering_pixels((15.9, -3.0, 15.95, 0.1), 16, 16) == (15, 0, 16, 1)


def test_from_network_clips_to_the_image():
    assert from_network((-5.0, -5.0, 300.0, 300.0), (640, 480), 256) == (0, 0, 640, 480)


def test_box_iou_of_identical_disjoint_and_half_overlapping_boxes():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_box_iou_is_symmetric():
    boxes = [(0, 0, 4, 4), (2, 1, 7, 3), (1, 1, 2, 9)]
    for a, b in itertools.permutations(boxes, 2):
        assert box_iou(a, b) == pytest.approx(box_iou(b, a))
