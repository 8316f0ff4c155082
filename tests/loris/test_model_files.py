"""The model directory: atomic save, round trip, and clear errors for missing or incompatible models."""

import numpy as np
import pytest
import torch

from lib.errors import ModelError, NotTrainedError
from lib.loris.predictor import LorisPredictor
from lib.loris.model_files import KIND, MODEL_FILE, load_model, read_info, save_model
from lib.loris.network import build_network
from lib.loris.settings import LorisSettings

CAL = {m: {"threshold": 0.3, "pixel_threshold": 0.4, "image_rule": "target_fpr", "pixel_rule": "target_fpr"}
       for m in ("msgmsd", "gmsd", "dd", "ssim", "l2")}


def _settings():
    return LorisSettings.quick(image_size=32, channels=(4, 8), strides=(2,), msgms_scales=3)


def test_round_trip_gives_the_same_predictions(tmp_path):
    s = _settings()
    torch.manual_seed(0)
    net = build_network(s).eval()
    save_model(tmp_path / "m", s, net.state_dict(), CAL, {"epochs_run": 1})
    bundle = load_model(tmp_path / "m")
    assert bundle.settings == s and bundle.calibration == CAL and bundle.training["epochs_run"] == 1
    assert read_info(tmp_path / "m")["format_version"] == 2
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    a = LorisPredictor(net, s, CAL).predict(image, (5, 5, 30, 20))
    b = LorisPredictor.load(tmp_path / "m").predict(image, (5, 5, 30, 20))
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    assert a.score == b.score and a.threshold == 0.3 and a.pixel_threshold == 0.4
    assert not list(tmp_path.glob("m/.*tmp*"))  # no temporary file left behind


def test_incompatible_version_is_an_error_listing_the_problems(tmp_path):
    s = _settings()
    save_model(tmp_path / "m", s, build_network(s).state_dict(), CAL)
    data = torch.load(tmp_path / "m" / MODEL_FILE, weights_only=True)
    data["format_version"] = 99
    data["settings"]["metric"] = "psnr"
    torch.save(data, tmp_path / "m" / MODEL_FILE)
    with pytest.raises(ModelError, match="format_version is 99, this code reads version 2"):
        LorisPredictor.load(tmp_path / "m")


def test_a_version_1_model_is_refused_with_the_command_that_retrains_it(tmp_path):
    s = _settings()
    save_model(tmp_path / "m", s, build_network(s).state_dict(), CAL)
    data = torch.load(tmp_path / "m" / MODEL_FILE, weights_only=True)
    data["format_version"] = 1
    torch.save(data, tmp_path / "m" / MODEL_FILE)
    with pytest.raises(ModelError, match=r"segmented the whole box.*python -m lib train .*POST /train/loris"):
        load_model(tmp_path / "m")


def test_weights_that_do_not_fit_the_settings_are_an_error(tmp_path):
    s = _settings()
    save_model(tmp_path / "m", s.replace(channels=(8, 16)), build_network(s).state_dict(), CAL)
    with pytest.raises(ModelError, match="weights do not match"):
        LorisPredictor.load(tmp_path / "m")


def test_missing_directory_and_untrained_directory(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotTrainedError, match="no trained LoRIS model"):
        load_model(tmp_path / "empty")
    KIND.save_checkpoint(tmp_path / "empty", {"epoch": 1})
    with pytest.raises(NotTrainedError, match="training has started"):
        load_model(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable LoRIS model"):
        load_model(tmp_path / "bad")


def test_uncalibrated_model_cannot_decide(tmp_path):
    s = _settings()
    p = LorisPredictor(build_network(s), s, None)
    with pytest.raises(NotTrainedError, match="no calibrated thresholds"):
        p.predict(np.zeros((32, 32), np.float32), (0, 0, 8, 8))
    assert p.score_batch([np.zeros((32, 32), np.float32)], [(0, 0, 8, 8)])["msgmsd"].shape == (1,)
