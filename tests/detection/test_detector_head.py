"""The one-box head: heatmap targets, losses and decoding, on hand-made maps (no training)."""

from __future__ import annotations

import math

import pytest
import torch

from lib.detection.losses import detector_loss, heatmap_targets
from lib.detection.network import OUTPUT_STRIDE, build_network, cell_boxes, cell_centres, decode
from lib.detection.settings import DetectorSettings


def _edges_for(box, grid):
    """Log edge distances that make every cell propose exactly ``box`` (cells must lie inside it)."""
    h, w = grid
    x, y = cell_centres(h, w)
    x, y = x.expand(h, w), y.expand(h, w)
    distances = torch.stack([x - box[0], y - box[1], box[2] - x, box[3] - y]).clamp(min=1e-3)
    return torch.log(distances / OUTPUT_STRIDE)[None]


def test_heatmap_target_peaks_once_at_the_box_centre_and_is_elongated_like_the_box():
    box = (40.0, 20.0, 200.0, 44.0)  # 160 x 24 px, centre (120, 32)
    target = heatmap_targets([box, None], (24, 64), sigma_fraction=1 / 6)
    assert target.shape == (2, 1, 24, 64)
    assert int((target[0] == 1).sum()) == 1 and float(target[1].sum()) == 0.0
    row, col = divmod(int(target[0, 0].argmax()), 64)
    assert (row, col) == (32 // OUTPUT_STRIDE, 120 // OUTPUT_STRIDE)
    # 5 cells (20 px) along x stay warmer than 2 cells (8 px) along y: the Gaussian follows the box shape
    assert target[0, 0, row, col + 5] > target[0, 0, row + 2, col]


def test_cells_inside_a_box_decode_to_that_box_exactly():
    box = (37.0, 21.5, 171.0, 46.0)
    grid = (16, 64)
    edges = _edges_for(box, grid)
    heat = torch.full((1, 1, *grid), -8.0)
    heat[0, 0, 8, 26] = 3.0
    heat[0, 0, 8, 25] = 1.0
    for vote in (0.0, 0.3):
        boxes, confidence = decode(heat, edges, window=3, vote=vote)
        assert boxes[0].tolist() == pytest.approx(list(box), abs=1e-3)
        assert confidence[0] == pytest.approx(1 / (1 + math.exp(-3.0)))  # the peak's probability


def test_cell_boxes_are_the_cell_centre_minus_and_plus_the_distances():
    edges = torch.zeros((1, 4, 2, 3))  # every distance is one cell
    boxes = cell_boxes(edges)
    assert boxes[0, :, 1, 2].tolist() == [2.5 * OUTPUT_STRIDE - OUTPUT_STRIDE, 1.5 * OUTPUT_STRIDE - OUTPUT_STRIDE,
                                          2.5 * OUTPUT_STRIDE + OUTPUT_STRIDE, 1.5 * OUTPUT_STRIDE + OUTPUT_STRIDE]


def test_loss_is_low_for_the_right_answer_and_high_for_a_wrong_one():
    box = (40.0, 24.0, 200.0, 48.0)
    grid = (16, 64)
    target = heatmap_targets([box], grid, 1 / 6)
    right_heat = torch.where(target >= 1, 6.0, -6.0)
    right = detector_loss(right_heat, _edges_for(box, grid), [box], 1 / 6, 1.0)
    wrong = detector_loss(torch.flip(right_heat, dims=[-1]), _edges_for((100.0, 4.0, 140.0, 60.0), grid), [box],
                          1 / 6, 1.0)
    assert float(right["box"]) < 1e-3
    assert float(right["loss"]) < 0.1 < float(wrong["heatmap"]) and float(wrong["box"]) > 0.5


def test_a_frame_without_a_recess_trains_only_the_heatmap():
    grid = (8, 16)
    edges = torch.zeros((1, 4, *grid), requires_grad=True)
    losses = detector_loss(torch.zeros((1, 1, *grid)), edges, [None], 1 / 6, 1.0)
    assert float(losses["box"].detach()) == 0.0 and float(losses["heatmap"].detach()) > 0.0


def test_network_maps_are_a_quarter_of_the_non_square_input():
    settings = DetectorSettings(image_size=128, base_channels=4, fpn_channels=8)
    assert settings.input_shape == (96, 128)
    heat, edges = build_network(settings).eval()(torch.zeros((2, 1, 96, 128)))
    assert heat.shape == (2, 1, 24, 32) and edges.shape == (2, 4, 24, 32)
