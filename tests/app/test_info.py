"""/info lists every model, trainer, strategy and scoring method, and the trainers' declared params."""

import pytest
from monailabel.client import MONAILabelClient

pytestmark = pytest.mark.server


def test_info_lists_models_trainers_strategies_and_scoring(server, tmp_path):
    info = MONAILabelClient(server.url, tmpdir=str(tmp_path)).info()
    assert set(info["models"]) == {"loris", "loris_anomaly_map", "recess_detection"}
    assert set(info["trainers"]) == {"loris", "recess_detection"}
    assert {"loris_uncertain", "loris_most_anomalous", "random"} <= set(info["strategies"])
    assert set(info["scoring"]) == {"loris_scoring"}


def test_trainers_declare_monai_label_params_with_defaults(server, tmp_path):
    info = MONAILabelClient(server.url, tmpdir=str(tmp_path)).info()
    for name in ("loris", "recess_detection"):
        config = info["trainers"][name]["config"]
        for key in ("max_epochs", "early_stop_patience", "train_batch_size", "val_split", "learning_rate", "quick"):
            assert key in config, (name, key)
        assert config["quick"] is True
