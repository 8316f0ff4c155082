"""Parsing the app's JSON answers into typed results."""

import base64

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


def test_colour_range_is_the_servers_display_range_else_from_the_pixel_threshold():
    with_range = results.parse_loris_result({**LORIS_PARAMS, "display_range": [0.12, 0.5]})
    assert with_range.display_range == [0.12, 0.5] and results.map_display_range(with_range) == (0.12, 0.5)
    assert "display_range" not in with_range.extra
    without = results.parse_loris_result(LORIS_PARAMS)
    assert results.map_display_range(without) == (0.12, 0.24)  # [pixel_threshold, 2 * pixel_threshold]
    bare = {k: LORIS_PARAMS[k] for k in ("score", "distended", "threshold", "box")}
    with pytest.raises(results.ResultError, match="display_range.*pixel_threshold"):
        results.map_display_range(results.parse_loris_result(bare))


@pytest.mark.parametrize("bad", [[0.5], [0.5, 0.2], ["a", 1.0], 3.0])
def test_bad_display_range_is_named(bad):
    with pytest.raises(results.ResultError, match="display_range"):
        results.parse_loris_result({**LORIS_PARAMS, "display_range": bad})


def test_map_answer_carries_map_mask_and_result():
    png = b"\x89PNG\r\n\x1a\n" + b"rest"
    params = {**LORIS_PARAMS, "image_size": [96, 64], "model_version": "3",
              "mask_png_base64": base64.b64encode(png).decode()}
    answer = results.parse_loris_answer(params, b"NRRD0004...")
    assert answer.mask_png == png and answer.anomaly_map == b"NRRD0004..."
    assert answer.result.image_size == [96, 64] and answer.result.model_version == "3"
    assert "mask_png_base64" not in answer.params and answer.params["score"] == 0.42
    with pytest.raises(results.ResultError, match="mask_png_base64"):
        results.parse_loris_answer(LORIS_PARAMS, b"NRRD")
    with pytest.raises(results.ResultError, match="not base64"):
        results.parse_loris_answer({**LORIS_PARAMS, "mask_png_base64": "%%%"}, b"NRRD")
    with pytest.raises(results.ResultError, match="does not hold a PNG"):
        results.parse_loris_answer({**LORIS_PARAMS, "mask_png_base64": base64.b64encode(b"GIF").decode()}, b"N")
    with pytest.raises(results.ResultError, match="no anomaly map file"):
        results.parse_loris_answer(params, None)
    with pytest.raises(results.ResultError, match="image_size"):
        results.parse_loris_result({**LORIS_PARAMS, "image_size": [96]})


def test_epochs_are_read_from_the_trainers_log_lines():
    task = {"status": "RUNNING", "request": {"model": "loris", "max_epochs": 40},
            "details": ["loris: {'epoch': 2, 'max_epochs': 30, 'train_loss': 0.5}",
                        "LoRIS train:  10%|#  | 3/30 [00:05<00:45]"]}
    status = results.parse_train_status(task)
    assert (status.epoch, status.max_epochs) == (2, 30) and status.progress() == (2, 30)
    detector = results.parse_train_status({"status": "RUNNING", "request": {"model": "recess_detection",
                                                                            "max_epochs": 12},
                                           "details": ["recess_detection: {'epoch': 4, 'loss': 1.2}"]})
    assert (detector.epoch, detector.max_epochs) == (4, 12)  # the count from the request
    done = results.parse_train_status({"status": "DONE", "request": {"max_epochs": 5}, "details": []})
    assert done.progress() == (5, 5)
    assert results.parse_train_status({"status": "RUNNING", "request": {}}).progress() is None


def test_calibrated_cine_result_gives_spacing_measurements_and_frame():
    params = {**LORIS_PARAMS, "pixel_spacing_mm": [0.1, 0.12], "frame": 2, "frame_count": 3,
              "frame_scores": [0.1, None, 0.42],
              "measurements": {"unit": "mm", "area_mm2": 12.345, "max_thickness_mm": 2.4, "area_pixels": 1029,
                               "max_thickness_pixels": 20}}
    r = results.parse_loris_result(params)
    assert r.pixel_spacing_mm == [0.1, 0.12] and (r.frame, r.frame_count) == (2, 3)
    assert r.frame_scores == [0.1, None, 0.42] and r.extra == {"latency": 1.5}
    text = results.format_result(r)
    assert "Segmented: area 12.3 mm², max thickness 2.4 mm" in text and "Frame: 2 of 0..2 (the most anomalous)" in text
    assert results.format_spacing(r.pixel_spacing_mm) == "0.1 × 0.12 mm"


def test_uncalibrated_result_is_measured_in_pixels_and_says_so():
    params = {**LORIS_PARAMS, "pixel_spacing_mm": None,
              "measurements": {"unit": "pixel", "area_mm2": None, "max_thickness_mm": None, "area_pixels": 120,
                               "max_thickness_pixels": 7}}
    r = results.parse_loris_result(params)
    assert r.pixel_spacing_mm is None and (r.frame, r.frame_count, r.frame_scores) == (0, 1, None)
    assert "area 120 px, max thickness 7 px (no pixel spacing known)" in results.format_result(r)
    assert "Frame" not in results.format_result(r)


@pytest.mark.parametrize("change,message", [
    ({"pixel_spacing_mm": [0.1]}, "pixel_spacing_mm"), ({"pixel_spacing_mm": [0, 0.1]}, "positive"),
    ({"frame": 3, "frame_count": 3}, "frame 3 of an image of 3"), ({"frame": True}, "frame"),
    ({"frame_count": 2, "frame_scores": [0.1]}, "frame_scores"), ({"measurements": [1]}, "measurements"),
])
def test_bad_geometry_fields_are_named(change, message):
    with pytest.raises(results.ResultError, match=message):
        results.parse_loris_result({**LORIS_PARAMS, **change})
