"""Preprocessing shared by training and inference: resize, [-1, 1], boxes on the grid, back to the image."""

import numpy as np
import torch

from lib.loris import preprocess


def test_images_of_any_size_become_a_square_batch_in_minus_one_one():
    a = np.zeros((30, 40), np.float32)
    b = np.ones((64, 48), np.float32)
    x, boxes = preprocess.batch([a, b], [(0, 0, 40, 30), (12, 16, 24, 32)], 16)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    assert float(x[0].max()) == -1.0 and float(x[1].min()) == 1.0
    assert boxes.tolist() == [[0, 0, 16, 16], [4, 4, 8, 8]]


def test_grid_box_covers_every_pixel_the_box_touches():
    # 100 px wide -> 16: x 10..21 -> 1.6..3.36 -> pixels 1..4 (exclusive)
    assert preprocess.network_box((10, 0, 21, 100), (100, 100), 16) == (1, 0, 4, 16)


def test_maps_go_back_to_the_original_geometry():
    m = torch.arange(16.0).reshape(1, 4, 4)
    out = preprocess.to_original(m, (10, 6))
    assert out.shape == (6, 10) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 15


def test_masks_on_the_grid_are_majority_coverage():
    mask = np.zeros((8, 8), bool)
    mask[:4, :] = True
    grid = preprocess.mask_tensor(mask, 4)
    assert grid.shape == (1, 4, 4) and grid[0, :2].all() and not grid[0, 2:].any()
