"""Threshold rules fitted on validation data."""

import numpy as np
import pytest

from lib.loris.calibration import (
    best_dice_threshold,
    fit_calibration,
    fit_image_threshold,
    fit_pixel_threshold,
    segmented_box_share,
)
from lib.loris.postprocess import segment


def test_image_threshold_maximizes_youden_when_both_classes_are_present():
    scores = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8]
    distended = [0, 0, 0, 1, 0, 1, 1]
    out = fit_image_threshold(scores, distended)
    assert out["image_rule"] == "youden"
    assert out["threshold"] == pytest.approx(0.35)  # TPR 1, FPR 1/4: J = 0.75 (0.7 gives 2/3 - 0 = 0.67)
    assert 0.5 < out["valid_auroc"] <= 1


def test_image_threshold_from_target_fpr_without_distended_images():
    scores = np.linspace(0, 1, 101)
    out = fit_image_threshold(scores, np.zeros(101, bool), target_fpr=0.05)
    assert out["image_rule"] == "target_fpr" and out["valid_auroc"] is None
    assert out["threshold"] == pytest.approx(0.95)
    assert np.mean(scores >= out["threshold"]) <= 0.06


def test_best_dice_threshold_on_a_separable_case_and_with_unreachable_positives():
    values = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
    truth = np.array([1, 1, 1, 0, 0, 0], bool)
    t, d = best_dice_threshold(values, truth)
    assert t == pytest.approx(0.8) and d == pytest.approx(1.0)
    t, d = best_dice_threshold(values, truth, extra_positives=3)
    assert d == pytest.approx(2 * 3 / (3 + 6))


def test_pixel_threshold_rules():
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0] = np.linspace(0, 0.2, 16).reshape(4, 4)  # normal
    maps[1, 1:3, 1:3] = 0.9  # distended, mask below
    maps[2] = 0.5  # distended without a mask: ignored by Dice
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 1:3, 1:3] = True
    regions = np.ones((3, 4, 4), bool)
    distended = np.array([False, True, True])
    out = fit_pixel_threshold(maps, masks, regions, regions, np.array([True, True, False]), distended)
    assert out["pixel_rule"] == "dice" and out["pixel_threshold"] == pytest.approx(0.9) and out["valid_dice"] == 1
    assert out["valid_normal_box_share"] == 0.0
    assert out["display_range"][0] == out["pixel_threshold"] and out["display_range"][1] > out["pixel_threshold"]


def test_without_masks_the_pixel_threshold_is_the_cap_on_segmented_normal_box_pixels():
    rng = np.random.default_rng(0)
    maps = (rng.random((2, 8, 8)) * 0.2).astype(np.float32)  # two normal images: low speckle...
    maps[0, 2:6, 2:6] = 0.5  # ...and one 4 x 4 bright square: a quarter of the first image
    regions = np.ones((2, 8, 8), bool)
    distended = np.array([False, False])
    out = fit_pixel_threshold(maps, np.zeros_like(regions), regions, regions, ~distended, distended,
                              normal_box_share=0.125)
    assert out["pixel_rule"] == "normal_box_share" and out["valid_dice"] is None
    assert out["valid_normal_box_share"] <= 0.125
    assert segment(maps[0], out["pixel_threshold"])[2:6, 2:6].all()  # the square is what is segmented
    assert out["pixel_threshold"] <= 0.2  # the lowest such threshold: isolated speckle is opened away


def test_the_dice_threshold_is_capped_when_it_would_segment_whole_normal_boxes():
    # The box is the tight bounding box of the distended region, so "every box pixel" scores a high Dice: the
    # Dice rule alone takes a threshold under every box pixel. The cap keeps 5 % of normal box pixels at most.
    rng = np.random.default_rng(1)
    n, size = 40, 16
    distended = np.arange(n) >= 30
    boxes = np.zeros((n, size, size), bool)
    boxes[:, 6:10, 2:14] = True  # thin normal boxes
    boxes[distended] = False
    boxes[distended, 4:12, 2:14] = True  # tall boxes around the distension
    masks = boxes & distended[:, None, None]
    maps = rng.random((n, size, size)).astype(np.float32) * 0.1  # an uninformative map
    plain = fit_pixel_threshold(maps, masks, boxes, boxes, np.ones(n, bool), distended, normal_box_share=1.0)
    capped = fit_pixel_threshold(maps, masks, boxes, boxes, np.ones(n, bool), distended, normal_box_share=0.05)
    assert plain["pixel_rule"] == "dice" and np.mean(maps[boxes] >= plain["pixel_threshold"]) > 0.99
    assert capped["pixel_rule"] == "dice_capped" and capped["dice_threshold"] == plain["pixel_threshold"]
    assert 0.02 < capped["valid_normal_box_share"] <= 0.05  # at the cap, not far above it
    normal = ~distended
    assert segmented_box_share(maps[normal], boxes[normal], boxes[normal], capped["pixel_threshold"]) <= 0.05
    low, high = capped["display_range"]
    assert low == capped["pixel_threshold"] and high > low


def test_every_metric_is_calibrated_and_says_which_rule():
    rng = np.random.default_rng(0)
    n = 6
    distended = np.array([0, 0, 0, 0, 1, 1], bool)
    masks = np.zeros((n, 8, 8), bool)
    masks[4:, 2:5, 2:5] = True
    maps = {m: rng.random((n, 8, 8)).astype(np.float32) + masks * 2 for m in ("msgmsd", "dd")}
    scores = {m: maps[m].mean(axis=(1, 2)) for m in maps}
    cal = fit_calibration(scores, maps, distended, masks, np.ones((n, 8, 8), bool), np.ones((n, 8, 8), bool),
                          np.ones(n, bool))
    for m in ("msgmsd", "dd"):
        c = cal[m]
        assert (c["image_rule"], c["pixel_rule"]) == ("youden", "dice")
        assert (c["n_normal"], c["n_distended"], c["n_masks"]) == (4, 2, 2)
        assert c["valid_auroc"] == 1.0 and c["valid_dice"] == 1.0
