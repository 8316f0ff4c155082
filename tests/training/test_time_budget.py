"""``train --time-budget``: training stops at the budget and the best epoch so far is saved."""

import pytest

from lib.__main__ import main as cli
from lib.loris.model_files import load_model

pytestmark = pytest.mark.slow  # a few seconds of 32 px training


def test_training_stops_at_the_time_budget_and_saves_the_best_epoch(tiny_flat, tmp_path, capsys):
    model = tmp_path / "model"
    assert cli(["train", "--data", str(tiny_flat), "--out", str(model), "--quick", "--epochs", "100000",
                "--image-size", "32", "--channels", "8", "16", "32", "--device", "cpu", "--no-progress",
                "--time-budget", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "(time budget of 0.05 min)" in out and "model saved" in out
    training = load_model(model).training
    assert training["stopped"] == "cancelled" and 1 <= training["best_epoch"] <= training["epochs_run"] < 100000
    assert cli(["train", "--data", str(tiny_flat), "--out", str(model), "--time-budget", "0"]) == 2
    assert "--time-budget must be a positive number of minutes, got 0.0" in capsys.readouterr().err
