"""Parsing the app's JSON answers into typed results."""

import pytest

from LoRISLib import results

LORIS_PARAMS = {
    "score": 0.42,
    "distended": True,
    "threshold": 0.3,
    "pixel_threshold": 0.12,
    "metric": "msgmsd",
    "box": [10, 20, 30, 40],
    "box_source": "detector",
    "detector_confidence": 0.87,
    "latency": 1.5,
}


def test_loris_result_parses_every_contract_field():
    r = results.parse_loris_result(LORIS_PARAMS)
    assert (r.score, r.distended, r.threshold, r.pixel_threshold) == (0.42, True, 0.3, 0.12)
    assert r.box == [10, 20, 30, 40] and r.box_source == "detector" and r.detector_confidence == 0.87
    assert r.metric == "msgmsd" and r.label == "distended"
    assert r.extra == {"latency": 1.5}


def test_loris_result_optional_fields_default_to_none():
    params = {k: LORIS_PARAMS[k] for k in ("score", "distended", "threshold", "box")}
    r = results.parse_loris_result(params)
    assert r.box_source == "request" and r.pixel_threshold is None and r.detector_confidence is None
    assert results.parse_loris_result({**params, "distended": False}).label == "normal"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"score": None}, "score"),
        ({"score": "high"}, "score"),
        ({"distended": "yes"}, "distended"),
        ({"box": [1, 2, 3]}, "box"),
        ({"box": [5, 5, 2, 9]}, "box"),
        ({"box": [0.5, 0, 3, 4]}, "box"),
        ({"box_source": "guess"}, "box_source"),
    ],
)
def test_loris_result_bad_field_is_named(change, field):
    with pytest.raises(results.ResultError, match=field):
        results.parse_loris_result({**LORIS_PARAMS, **change})


def test_loris_result_missing_field_is_named():
    params = dict(LORIS_PARAMS)
    del params["threshold"]
    with pytest.raises(results.ResultError, match="'threshold' is missing"):
        results.parse_loris_result(params)


def test_detection_found_and_not_found():
    d = results.parse_detection({"box": [1, 2, 30, 40], "confidence": 0.9, "found": True})
    assert d.found and d.box == [1, 2, 30, 40] and d.confidence == 0.9
    none = results.parse_detection({"box": None, "confidence": None, "found": False})
    assert not none.found and none.box is None
    with pytest.raises(results.ResultError, match="null"):
        results.parse_detection({"box": None, "found": True})


def test_train_status_reads_monailabel_task_record_and_latest_epoch():
    task = {
        "id": "abc",
        "status": "RUNNING",
        "request": {"model": "loris", "max_epochs": 10},
        "start_ts": "2026-01-01 10:00:00",
        "details": ["loading data", "Epoch 2/10 loss 0.3", "Epoch 3/10 loss 0.2", "validating"],
    }
    s = results.parse_train_status(task)
    assert s.running and s.model == "loris" and (s.epoch, s.max_epochs) == (3, 10)
    assert s.summary() == "loris: RUNNING, epoch 3/10" and s.last_line == "validating"
    done = results.parse_train_status({"status": "DONE", "request": {"model": "recess_detection"}})
    assert not done.running and done.epoch is None and done.summary() == "recess_detection: DONE"


def test_format_result_shows_decision_score_threshold_and_box_source():
    text = results.format_result(results.parse_loris_result(LORIS_PARAMS))
    assert "DISTENDED" in text and "0.42" in text and "threshold 0.3" in text and "detected recess" in text
