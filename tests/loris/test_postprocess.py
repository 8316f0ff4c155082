"""Score pooling in the box and segmentation post-processing."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from lib.errors import DataError
from lib.loris.postprocess import box_region, image_scores, clean_mask, segment


def test_segmentation_removes_an_isolated_pixel_and_fills_a_one_pixel_hole():
    amap = np.zeros((20, 20), dtype=np.float32)
    amap[5:12, 6:14] = 1.0
    amap[8, 9] = 0.0  # a one-pixel hole
    amap[16, 2] = 1.0  # an isolated pixel
    mask = segment(amap, 0.5)
    expected = np.zeros((20, 20), dtype=bool)
    expected[5:12, 6:14] = True
    np.testing.assert_array_equal(mask, expected)


def test_objects_touching_the_image_edge_keep_their_edge_pixels():
    m = np.zeros((10, 10), dtype=bool)
    m[0:4, 0:5] = True
    np.testing.assert_array_equal(clean_mask(m), m)


def test_segmentation_is_batched_per_image_and_respects_the_region():
    amap = np.zeros((2, 12, 12), dtype=np.float32)
    amap[0, 2:8, 2:8] = 1
    amap[1, 4:10, 4:10] = 1
    region = np.stack([box_region((0, 0, 12, 12), 12, 12), box_region((0, 0, 7, 12), 12, 12)])
    out = segment(amap, 0.5, region)
    np.testing.assert_array_equal(out[0], amap[0] > 0.5)
    assert out[1, :, 7:].sum() == 0 and out[1, 4:10, 4:7].all()


def test_scores_pool_the_map_inside_the_box():
    maps = torch.zeros(2, 1, 6, 6)
    maps[0, 0, 1, 1] = 4.0
    maps[0, 0, 5, 5] = 100.0  # outside the box
    maps[1, 0] = 2.0
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 2]])
    np.testing.assert_allclose(image_scores(maps, boxes, "mean").numpy(), [1.0, 2.0])
    np.testing.assert_allclose(image_scores(maps, boxes, "max").numpy(), [4.0, 2.0])
    with pytest.raises(DataError, match="mean, max"):
        image_scores(maps, boxes, "median")


def test_scores_over_the_whole_image_ignore_the_box():
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 3, 3] = 8.0  # outside the box
    maps[1, 0] = 1.0
    boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 1, 1]])
    np.testing.assert_allclose(image_scores(maps, boxes, "mean", "image").numpy(), [0.5, 1.0])
    np.testing.assert_allclose(image_scores(maps, boxes, "max", "image").numpy(), [8.0, 1.0])
    with pytest.raises(DataError, match="box, image"):
        image_scores(maps, boxes, "mean", "frame")


def _scipy_clean_mask(mask: np.ndarray) -> np.ndarray:
    """The definition: SciPy's binary closing of the zero-padded mask, then its binary opening (3x3 square)."""
    lead = mask.ndim - 2
    structure = np.ones((1,) * lead + (3, 3), dtype=bool)
    padded = np.pad(mask, [(0, 0)] * lead + [(1, 1), (1, 1)])
    closed = ndimage.binary_closing(padded, structure=structure)[..., 1:-1, 1:-1]
    return ndimage.binary_opening(closed, structure=structure)


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 5), (31, 47), (3, 17, 12)])
def test_clean_mask_equals_scipy_binary_closing_then_opening(density, shape):
    rng = np.random.default_rng(int(density * 100) + len(shape))
    mask = rng.random(shape) < density
    np.testing.assert_array_equal(clean_mask(mask), _scipy_clean_mask(mask))
