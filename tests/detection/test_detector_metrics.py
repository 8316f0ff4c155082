"""Detection metrics on hand-made cases (MONAI COCO metric underneath)."""

from __future__ import annotations

import pytest

from lib.detection.infer import Detection
from lib.detection.metrics import box_metrics
from lib.errors import DataError

TRUTHS = [(10, 10, 50, 20), (5, 5, 30, 40), (0, 0, 10, 10), (20, 30, 60, 45)]


def test_perfect_boxes_give_map_one_and_iou_one():
    metrics = box_metrics([Detection(b, 0.9) for b in TRUTHS], TRUTHS, score_threshold=0.5)
    assert metrics == {"precision50": 1.0, "recall50": 1.0, "map50": 1.0, "map75": 1.0, "map50_95": 1.0,
                       "mean_iou": 1.0, "n_images": 4, "n_found": 4}


def test_nothing_found_gives_zero_everywhere():
    metrics = box_metrics([None] * 4, TRUTHS, score_threshold=0.5)
    assert metrics["map50"] == metrics["map75"] == metrics["precision50"] == metrics["mean_iou"] == 0.0
    assert metrics["n_found"] == 0


def test_iou_between_075_and_050_counts_at_50_but_not_at_75():
    # (10,10,50,20) vs (10,10,40,20): IoU = 300 / 400 = 0.75 exactly -> a hit at 0.75 too; shrink a bit more.
    predictions = [Detection((10, 10, 38, 20), 0.9)] + [Detection(b, 0.9) for b in TRUTHS[1:]]
    metrics = box_metrics(predictions, TRUTHS, score_threshold=0.5)
    assert metrics["map50"] == pytest.approx(1.0)
    assert metrics["map75"] < 0.8
    assert metrics["mean_iou"] == pytest.approx((28 * 10 / 400 + 3) / 4)


def test_precision_counts_only_reported_boxes_and_ap_ranks_by_confidence():
    predictions = [
        Detection(TRUTHS[0], 0.9),           # reported hit
        Detection((100, 100, 120, 110), 0.8),  # reported miss
        Detection(TRUTHS[2], 0.1),           # below threshold: not reported, still ranked for AP
        None,
    ]
    metrics = box_metrics(predictions, TRUTHS, score_threshold=0.5)
    assert metrics["precision50"] == 0.5
    assert metrics["recall50"] == 0.25
    assert metrics["n_found"] == 2
    assert metrics["mean_iou"] == pytest.approx(0.25)
    # ranked: hit (p=1, r=.25), miss, hit (p=2/3, r=.5); interpolated AP over 101 recall points
    assert 0.35 < metrics["map50"] < 0.45


def test_no_annotated_boxes_is_a_clear_error():
    with pytest.raises(DataError, match="no boxed images"):
        box_metrics([], [], 0.5)
