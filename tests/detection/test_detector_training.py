"""Training a tiny detector on generated images, loading it back, and what it answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lib.__main__ import main as cli
from lib.data.imageio import read_image, write_png
from lib.detection.cli_detect import detect_file
from lib.detection.infer import Detection, RecessDetector
from lib.detection.metrics import detection_metrics
from lib.detection.model_files import LAST
from lib.detection.settings import DetectorSettings
from lib.detection.train import train_detector
from lib.errors import DataError, ModelError, NotTrainedError

EPOCHS = 12


def tiny_settings(**overrides) -> DetectorSettings:
    values = dict(image_size=64, max_epochs=EPOCHS, patience=EPOCHS, batch_size=4, base_channels=8, fpn_channels=16)
    values.update(overrides)
    return DetectorSettings(**values)


@pytest.fixture(scope="module")
def trained(tiny_records, tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("detector") / "model"
    epochs = []
    summary = train_detector(tiny_records, model_dir, tiny_settings(), progress=False, on_epoch=epochs.append)
    return model_dir, summary, epochs


def test_training_writes_a_complete_model_directory(trained):
    model_dir, summary, epochs = trained
    assert {p.name for p in model_dir.iterdir()} == {"model.pt", "detector.json", "last.pt"}
    info = json.loads((model_dir / "detector.json").read_text())
    assert info["format"] == "loris-recess-detector" and info["settings"]["image_size"] == 64
    assert summary["epochs_run"] == len(epochs) == EPOCHS
    assert summary["best_epoch"] == info["epoch"]
    assert summary["valid_source"] == "held-out patients"
    assert set(summary["validation"]) >= {"precision50", "map50", "map75", "mean_iou", "n_images"}
    # validation_all adds the held-out distended image(s) to the normal ones
    assert summary["validation_all"]["n_images"] >= summary["validation"]["n_images"]


def test_training_uses_normal_images_only(tiny_records, trained):
    _, summary, _ = trained
    normals = [r for r in tiny_records if r.label == "normal"]
    assert summary["n_train"] + summary["n_valid"] == len(normals)


def test_detector_returns_one_integer_box_inside_each_image(trained, tiny_records):
    model_dir, _, _ = trained
    detector = RecessDetector.load(model_dir)
    images = [read_image(r.image_path) for r in tiny_records[:6]]
    found = detector.detect_batch(images, min_confidence=0.0)
    assert len(found) == len(images)
    for image, detection in zip(images, found):
        assert isinstance(detection, Detection)
        assert len(detection.box) == 4 and all(type(v) is int for v in detection.box)
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        assert 0.0 <= detection.confidence <= 1.0
    assert detector.detect(images[0], min_confidence=0.0) == found[0]


def test_detector_learned_something_on_held_out_patients(trained):
    _, summary, _ = trained
    # 12 epochs on 18 tiny images: far from perfect, far from chance (a random box has IoU ~0.05)
    assert summary["validation"]["mean_iou"] > 0.3


def test_blank_image_gives_nothing_found_not_a_crash(trained, tiny_records):
    model_dir, _, _ = trained
    detector = RecessDetector.load(model_dir)
    blank = np.zeros((60, 80), np.float32)
    assert detector.detect(blank) is None
    assert detector.detect(blank, min_confidence=0.0) is None
    image = read_image(tiny_records[1].image_path)
    found = detector.detect_batch([blank, image, np.ones((30, 30), np.float32)], min_confidence=0.0)
    assert found[0] is None and isinstance(found[1], Detection) and found[2] is None


def test_detect_command_answers_json_found_and_not_found(trained, tiny_records, tmp_path, capsys):
    model_dir, _, _ = trained
    found = detect_file(model_dir, tiny_records[1].image_path, threshold=0.0)
    assert found["found"] is True and len(found["box"]) == 4 and isinstance(found["confidence"], float)
    write_png(tmp_path / "blank.png", np.zeros((60, 80), np.float32))
    missing = detect_file(model_dir, tmp_path / "blank.png")
    assert missing["found"] is False and missing["box"] is None and missing["confidence"] is None
    assert "blank" in missing["message"]
    unsure = detect_file(model_dir, tiny_records[1].image_path, threshold=1.0)
    assert unsure["found"] is False and "confidence >= 1" in unsure["message"]
    assert cli(["detect", "--model", str(model_dir), "--image", str(tmp_path / "blank.png")]) == 0
    assert json.loads(capsys.readouterr().out) == missing
    assert cli(["detect", "--model", str(tmp_path / "absent"), "--image", str(tmp_path / "blank.png")]) == 2
    assert "no such detector model directory" in capsys.readouterr().err


def test_detection_metrics_cover_normal_and_distended_records(trained, tiny_records):
    model_dir, _, _ = trained
    metrics = detection_metrics(RecessDetector.load(model_dir), tiny_records[:4])
    assert metrics["n_images"] == 4
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("precision50", "map50", "map75", "mean_iou"))


def test_resume_continues_where_training_stopped(tiny_records, tmp_path):
    model_dir = tmp_path / "model"
    first = train_detector(tiny_records, model_dir, tiny_settings(max_epochs=1), progress=False)
    assert first["epochs_run"] == 1 and (model_dir / LAST).is_file()
    epochs = []
    second = train_detector(tiny_records, model_dir, tiny_settings(max_epochs=2), resume=True, progress=False,
                            on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [1]
    assert second["epochs_run"] == 2
    with pytest.raises(ModelError, match="cannot resume.*image_size"):
        train_detector(tiny_records, model_dir, tiny_settings(image_size=96, max_epochs=3), resume=True, progress=False)


def test_should_stop_ends_training_and_keeps_the_best_so_far(tiny_records, tmp_path):
    calls = []
    summary = train_detector(tiny_records, tmp_path / "m", tiny_settings(max_epochs=5), progress=False,
                             on_epoch=calls.append, should_stop=lambda: len(calls) >= 1)
    assert summary["stopped"] == "should_stop" and summary["epochs_run"] == 1
    RecessDetector.load(tmp_path / "m")


def test_no_normal_boxed_image_is_a_clear_error(tiny_records, tmp_path):
    distended = [r for r in tiny_records if r.label == "distended"]
    with pytest.raises(DataError, match="no normal image with a recess box"):
        train_detector(distended, tmp_path / "m", tiny_settings(), valid_records=[], progress=False)


def test_loading_reports_missing_untrained_and_foreign_models(tmp_path):
    with pytest.raises(ModelError, match="no such detector model directory"):
        RecessDetector.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotTrainedError, match="train-detector"):
        RecessDetector.load(tmp_path / "empty")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable detector checkpoint"):
        RecessDetector.load(tmp_path / "foreign")
    torch.save({"format": "something-else"}, tmp_path / "foreign" / "model.pt")
    with pytest.raises(ModelError, match="not a recess-detector checkpoint"):
        RecessDetector.load(tmp_path / "foreign")


def test_bad_image_is_a_clear_error(trained):
    detector = RecessDetector.load(trained[0])
    with pytest.raises(DataError, match="2D grayscale"):
        detector.detect(np.zeros((4, 5, 3), np.float32))


def test_train_detector_command_reads_a_dataset_folder_and_writes_a_loadable_model(tiny_records, tmp_path, capsys):
    from lib.data.flat import write_flat

    data = tmp_path / "data"
    write_flat(data, tiny_records)
    rc = cli(["train-detector", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "1",
              "--image-size", "64", "--threads", "1", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 0
    assert RecessDetector.load(tmp_path / "model").settings.image_size == 64
