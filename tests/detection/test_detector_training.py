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
from lib.detection.model_files import CHECKPOINT_FILE, INFO_FILE, MODEL_FILE
from lib.detection.settings import DetectorSettings
from lib.detection.train import train_detector
from lib.errors import DataError, ModelError, NotTrainedError

EPOCHS = 12


def tiny_settings(**overrides) -> DetectorSettings:
    values = dict(image_size=64, max_epochs=EPOCHS, batch_size=4, base_channels=8, fpn_channels=16)
    values.update(overrides)
    return DetectorSettings(**values)


@pytest.fixture(scope="module")
def trained(tiny_records, tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("detector") / "model"
    epochs = []
    summary = train_detector(tiny_records, model_dir, tiny_settings(), progress=False, on_epoch=epochs.append)
    return model_dir, summary, epochs


def test_training_writes_the_model_folder_every_model_shares(trained):
    model_dir, summary, epochs = trained
    assert {p.name for p in model_dir.iterdir()} == {MODEL_FILE, INFO_FILE, CHECKPOINT_FILE} == \
        {"model.pt", "model.json", "checkpoint_last.pt"}
    info = json.loads((model_dir / INFO_FILE).read_text())
    assert info["format"] == "loris-recess-detector" and info["format_version"] == 3
    assert info["settings"]["image_size"] == 64
    assert info["training"]["epochs_run"] == EPOCHS and "history" not in info["training"]
    assert summary["epochs_run"] == len(epochs) == EPOCHS
    # epochs are counted from 1, with the records and summary keys of every model's training loop
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    assert {"epoch", "max_epochs", "train", "valid", "monitor", "value", "best_value", "best_epoch"} <= set(epochs[0])
    assert set(summary) >= {"epochs_run", "best_epoch", "monitor", "best_value", "stopped", "resumed", "device",
                            "seconds", "history", "world_size", "rank", "rank_epochs"}
    assert summary["world_size"] == 1 and summary["rank_epochs"] == [EPOCHS] and summary["resumed"] is False
    # cosine schedule: the learning rate decays towards zero and the last epoch's model is kept
    assert summary["best_epoch"] == info["epoch"] == EPOCHS and summary["stopped"] == "max_epochs"
    rates = [e["train"]["learning_rate"] for e in epochs]
    assert rates[0] == DetectorSettings().learning_rate and rates == sorted(rates, reverse=True)
    assert rates[-1] < 0.02 * rates[0]
    assert summary["valid_source"] == "valid"
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
    alone = detector.detect(images[0], min_confidence=0.0)  # same answer alone as in a batch (float rounding aside)
    assert alone.box == found[0].box and alone.confidence == pytest.approx(found[0].confidence, abs=1e-5)


def test_detector_learned_something_on_held_out_patients(trained):
    _, summary, _ = trained
    # 12 epochs on 18 tiny images: far from perfect, far from chance (a random box has IoU ~0.05)
    assert summary["validation"]["mean_iou"] > 0.3


def test_confidence_floor_is_calibrated_on_validation_and_stored_with_the_model(trained):
    model_dir, summary, _ = trained
    calibration = summary["calibration"]
    floor = calibration["confidence_floor"]
    assert 0.0 < floor < 1.0
    assert calibration["positives"]["n"] == summary["validation"]["n_images"]
    assert set(calibration["negatives"]) >= {"erased", "superficial", "speckle"}
    detector = RecessDetector.load(model_dir)
    assert detector.score_threshold == pytest.approx(floor)
    assert detector.info["calibration"] == calibration
    assert json.loads((model_dir / INFO_FILE).read_text())["calibration"]["confidence_floor"] == floor
    # an explicit score_threshold in the settings wins over the calibrated floor
    fixed = RecessDetector(detector.network, detector.settings.replace(score_threshold=0.9), info=detector.info)
    assert fixed.score_threshold == 0.9


def test_flip_test_averages_the_image_and_its_mirror(trained, tiny_records):
    model_dir, _, _ = trained
    plain = RecessDetector.load(model_dir)
    both = RecessDetector(plain.network, plain.settings.replace(flip_test=True), info=plain.info)
    image = read_image(tiny_records[1].image_path)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    a = both.detect(image, min_confidence=0.0)
    b = both.detect(mirrored, min_confidence=0.0)
    width = image.shape[1]
    # the answer for the mirrored image is the mirrored answer (up to rounding to whole pixels)
    assert abs(b.box[0] - (width - a.box[2])) <= 1 and abs(b.box[2] - (width - a.box[0])) <= 1
    assert abs(b.box[1] - a.box[1]) <= 1 and abs(b.box[3] - a.box[3]) <= 1
    assert b.confidence == pytest.approx(a.confidence, abs=1e-5)


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
    assert "recess detector directory not found" in capsys.readouterr().err


def test_detection_metrics_cover_normal_and_distended_records(trained, tiny_records):
    model_dir, _, _ = trained
    metrics = detection_metrics(RecessDetector.load(model_dir), tiny_records[:4])
    assert metrics["n_images"] == 4
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("precision50", "map50", "map75", "mean_iou"))


def test_plateau_schedule_stops_early_and_keeps_the_best_epoch(tiny_records, tmp_path):
    epochs = []
    summary = train_detector(tiny_records, tmp_path / "m", tiny_settings(schedule="plateau", max_epochs=30, patience=2),
                             progress=False, on_epoch=epochs.append)
    assert summary["stopped"] == "early_stopping"
    best = summary["best_epoch"]
    assert summary["epochs_run"] == best + 2  # two epochs without improvement after the best
    ious = [e["valid"]["mean_iou"] for e in epochs]  # the monitor (mean IoU) breaks its own ties
    assert ious[best - 1] == max(ious) and all(v <= ious[best - 1] for v in ious[best:])
    assert torch.load(tmp_path / "m" / MODEL_FILE, weights_only=True)["epoch"] == best


def test_a_resumed_training_trains_what_the_uninterrupted_one_does(tiny_records, tmp_path):
    settings = tiny_settings(max_epochs=3)
    whole = train_detector(tiny_records, tmp_path / "whole", settings, progress=False)
    model_dir = tmp_path / "model"
    batches = []  # stopped during epoch 2 (5 batches of 4 per epoch): epoch 1 is checkpointed, epoch 2 dropped
    first = train_detector(tiny_records, model_dir, settings, progress=False,
                           should_stop=lambda: batches.append(1) or len(batches) > 6)
    assert (first["stopped"], first["epochs_run"]) == ("cancelled", 1) and (model_dir / CHECKPOINT_FILE).is_file()
    epochs = []
    second = train_detector(tiny_records, model_dir, settings, resume=True, progress=False, on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [2, 3] and second["epochs_run"] == 3 and second["resumed"] is True
    # the optimizer, the schedule and every random draw continue: the same weights, bit for bit
    a = torch.load(tmp_path / "whole" / MODEL_FILE, weights_only=True)
    b = torch.load(model_dir / MODEL_FILE, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["calibration"] == b["calibration"] and whole["validation"] == second["validation"]
    with pytest.raises(ModelError, match="cannot resume.*image_size"):
        train_detector(tiny_records, model_dir, tiny_settings(image_size=96, max_epochs=4), resume=True, progress=False)


def test_should_stop_ends_training_and_keeps_the_last_epoch_so_far(tiny_records, tmp_path):
    calls = []
    summary = train_detector(tiny_records, tmp_path / "m", tiny_settings(max_epochs=5), progress=False,
                             on_epoch=calls.append, should_stop=lambda: len(calls) >= 1)
    assert summary["stopped"] == "cancelled" and summary["epochs_run"] == 1
    assert RecessDetector.load(tmp_path / "m").info["epoch"] == 1
    with pytest.raises(DataError, match="stopped before the first epoch ended"):
        train_detector(tiny_records, tmp_path / "n", tiny_settings(), progress=False, should_stop=lambda: True)
    assert not (tmp_path / "n" / MODEL_FILE).exists()


def test_no_normal_boxed_image_is_a_clear_error(tiny_records, tmp_path):
    distended = [r for r in tiny_records if r.label == "distended"]
    with pytest.raises(DataError, match="no normal image with a recess box"):
        train_detector(distended, tmp_path / "m", tiny_settings(), valid_records=[], progress=False)


def test_loading_reports_missing_untrained_and_foreign_models(tmp_path):
    with pytest.raises(ModelError, match="recess detector directory not found"):
        RecessDetector.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotTrainedError, match="train-detector"):
        RecessDetector.load(tmp_path / "empty")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable recess detector"):
        RecessDetector.load(tmp_path / "foreign")
    torch.save({"format": "something-else", "format_version": 3}, tmp_path / "foreign" / "model.pt")
    with pytest.raises(ModelError, match="format is 'something-else', expected 'loris-recess-detector'"):
        RecessDetector.load(tmp_path / "foreign")


RETRAIN = r"python -m lib train-detector --data DIR --out {folder}, or POST /train/recess_detection"


def test_a_folder_of_the_detectors_own_older_layout_is_refused_naming_the_folder_and_the_retrain_commands(tmp_path):
    old = tmp_path / "old"
    old.mkdir()  # what version 2 wrote: model.pt with a "version" key and "network", detector.json, last.pt
    torch.save({"format": "loris-recess-detector", "version": 2, "settings": {"image_size": 64}, "network": {},
                "epoch": 3, "calibration": {"confidence_floor": 0.2}}, old / "model.pt")
    (old / "detector.json").write_text(json.dumps({"format": "loris-recess-detector", "version": 2}))
    torch.save({"format": "loris-recess-detector", "version": 2, "epoch": 3}, old / "last.pt")
    with pytest.raises(ModelError) as info:
        RecessDetector.load(old)
    message = str(info.value)
    assert str(old / "model.pt") in message and "older version of this project (detector.json, last.pt)" in message
    assert "version 2 kept the detector in a folder layout of its own" in message
    assert RETRAIN.format(folder=old) in message
    # the same file alone (e.g. uploaded or copied without the rest) is refused too
    (old / "detector.json").unlink()
    (old / "last.pt").unlink()
    with pytest.raises(ModelError, match=r"a 'version' key.*train-detector .*POST /train/recess_detection"):
        RecessDetector.load(old)


def test_a_model_folder_of_the_older_retinanet_detector_is_refused_with_the_retrain_commands(tmp_path):
    (tmp_path / "old").mkdir()
    torch.save({"format": "loris-recess-detector", "version": 1, "settings": {"image_size": 128,
                "anchor_aspect_ratios": [4.0, 2.0, 1.0]}, "network": {}}, tmp_path / "old" / "model.pt")
    with pytest.raises(ModelError) as info:
        RecessDetector.load(tmp_path / "old")
    assert "version 1 was the RetinaNet detector" in str(info.value)
    assert RETRAIN.format(folder=tmp_path / "old") in str(info.value)


def test_training_into_a_folder_of_the_older_layout_replaces_it(tiny_records, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    torch.save({"format": "loris-recess-detector", "version": 2, "network": {}}, old / "model.pt")
    (old / "detector.json").write_text("{}")
    torch.save({"format": "loris-recess-detector", "version": 2}, old / "last.pt")
    train_detector(tiny_records, old, tiny_settings(max_epochs=1), resume=True, progress=False)
    assert {p.name for p in old.iterdir()} == {"model.pt", "model.json", "checkpoint_last.pt"}
    assert RecessDetector.load(old).info["epoch"] == 1


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
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 1 and "history" not in summary
    assert RecessDetector.load(tmp_path / "model").settings.image_size == 64
