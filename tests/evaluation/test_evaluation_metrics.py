"""The evaluation metrics agree with hand-computed cases."""

import numpy as np
import pytest

from lib.errors import DataError
from lib.evaluation.metrics import (
    best_dice,
    dice,
    image_auroc,
    pixel_auroc,
    pool_pixels,
    sensitivity_specificity,
    summarize,
)


def test_perfect_image_scores_give_auroc_one_and_reversed_give_zero():
    labels = [False, False, True, True]
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_image_auroc_counts_ties_as_half():
    # pairs (pos, neg): (0.5 vs 0.5) tie = 0.5, (0.5 vs 0.1) = 1, (0.9 vs both) = 2 -> 3.5 / 4
    assert image_auroc([0, 0, 1, 1], [0.5, 0.1, 0.5, 0.9]) == pytest.approx(0.875)


def test_image_auroc_of_one_class_is_undefined_not_a_number():
    assert image_auroc([False, False], [0.1, 0.2]) is None


def test_pixel_auroc_pools_normal_images_as_all_negative():
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True
    perfect = truth.astype(np.float32)
    normal_mask = np.zeros((4, 4), bool)
    # The normal image's bright pixel at 0.5 stays below every anomalous pixel: AUROC still 1.
    normal_map = np.full((4, 4), 0.5, np.float32)
    assert pixel_auroc([truth, normal_mask], [perfect, normal_map]) == 1.0
    # ... but a normal image scoring 1.0 everywhere is a false alarm: 16 + 12 negatives,
    # positives (value 1) tie with the 16 normal pixels and beat the 12 others.
    expected = (12 * 1.0 + 16 * 0.5) / 28
    assert pixel_auroc([truth, normal_mask], [perfect, np.ones((4, 4), np.float32)]) == pytest.approx(expected)
    assert pixel_auroc([truth], [1.0 - perfect]) == 0.0


def test_dice_of_identical_masks_is_one_and_disjoint_zero():
    a = np.zeros((5, 5), bool)
    a[1:4, 1:3] = True
    b = np.zeros((5, 5), bool)
    b[0, 4] = True
    assert dice([a], [a]) == 1.0
    assert dice([a], [b]) == 0.0


def test_dice_pools_pixels_over_images():
    t1 = np.array([[1, 1, 0, 0]], bool)
    p1 = np.array([[1, 0, 0, 0]], bool)
    t2 = np.zeros((1, 4), bool)
    p2 = np.array([[0, 0, 1, 1]], bool)
    # pooled: |P∩T| = 1, |P| = 3, |T| = 2 -> 2/5
    assert dice([t1, t2], [p1, p2]) == pytest.approx(0.4)


def test_best_dice_finds_the_best_pooled_threshold():
    truth = np.array([[1, 1, 1, 0, 0, 0]], bool)
    values = np.array([[0.9, 0.8, 0.3, 0.5, 0.1, 0.0]], np.float32)
    # thresholds: >=0.8 -> P=2,TP=2 : 2*2/(2+3)=0.8 ; >=0.5 -> P=3,TP=2: 4/6 ; >=0.3 -> P=4,TP=3: 6/7=0.857
    value, threshold = best_dice([truth], [values])
    assert value == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.3)
    perfect, _ = best_dice([truth], [truth.astype(np.float32)])
    assert perfect == 1.0


def test_best_dice_without_anomalous_pixels_is_undefined():
    assert best_dice([np.zeros((3, 3), bool)], [np.ones((3, 3))]) == (None, None)


def test_sensitivity_and_specificity_from_decisions():
    labels = [True, True, True, False, False]
    decisions = [True, True, False, False, True]
    sensitivity, specificity = sensitivity_specificity(labels, decisions)
    assert sensitivity == pytest.approx(2 / 3)
    assert specificity == pytest.approx(1 / 2)
    assert sensitivity_specificity([False, False], [False, True]) == (None, 0.5)


def test_pool_pixels_subsamples_only_above_the_limit():
    masks = [np.zeros((10, 10), bool)] * 3
    maps = [np.zeros((10, 10), np.float32)] * 3
    truth, values, subsampled = pool_pixels(masks, maps, max_pixels=1000)
    assert truth.shape == (300,) and not subsampled
    truth, values, subsampled = pool_pixels(masks, maps, max_pixels=100)
    assert truth.shape == (100,) and subsampled


def test_mismatched_shapes_raise_a_clear_error():
    with pytest.raises(DataError, match="image 0"):
        pixel_auroc([np.zeros((3, 3), bool)], [np.zeros((4, 4))])
    with pytest.raises(DataError, match="NaN"):
        image_auroc([0, 1], [0.1, float("nan")])


def test_summarize_keeps_missing_folds_out_of_mean_and_std():
    out = summarize([0.5, None, 1.0])
    assert out == {"mean": 0.75, "std": 0.25, "folds": [0.5, None, 1.0]}
    assert summarize([None]) == {"mean": None, "std": None, "folds": [None]}


def test_best_dice_never_switches_on_pixels_outside_the_region():
    truth = np.array([[1, 1, 0, 1]], bool)
    values = np.array([[0.9, 0.8, 0.1, 0.95]], np.float32)
    region = np.array([[1, 1, 1, 0]], bool)
    # the last anomalous pixel lies outside the region: at best 2 of 3 found with 2 predicted -> 4/5
    value, threshold = best_dice([truth], [values], [region])
    assert value == pytest.approx(0.8)
    assert threshold == pytest.approx(0.8)
