"""lib.training.loop.fit's options for the detector's schedule: keep the last epoch, break ties, step a scheduler."""

from dataclasses import dataclass

import pytest
import torch

from lib.training.loop import EarlyStopping, fit
from lib.training.model_folder import ModelKind
from lib.training.settings import ModelSettings

KIND = ModelKind(format="toy-model", version=1, what="toy model", retrain="python -m toy --out MODEL_DIR")


@dataclass
class ToySettings(ModelSettings):
    max_epochs: int = 5
    patience: int = 1

    def validate(self) -> "ToySettings":
        return self


def _fit(tmp_path, scores, ties=None, checkpoint=None, **options):
    """A one-weight network whose bias counts the epochs; ``scores[epoch - 1]`` is its validation ``iou``."""
    network = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(network.bias)
    optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
    state = {"epoch": 0}

    def train_epoch(epoch, stop):
        state["epoch"] = epoch
        optimizer.step()  # no gradient: changes nothing, but a scheduler expects a step before its own
        with torch.no_grad():
            network.bias.fill_(float(epoch))
        return {"loss": 0.0, "learning_rate": optimizer.param_groups[0]["lr"]}

    def validate():
        e = state["epoch"]
        return {"iou": scores[e - 1], "map": (ties or scores)[e - 1]}

    scheduler = options.pop("scheduler", None)
    result = fit(kind=KIND, out_dir=tmp_path, settings=options.pop("settings", ToySettings()), network=network,
                 train_epoch=train_epoch, validate=validate, monitor="iou", mode="max", progress=False,
                 checkpoint=checkpoint, scheduler=scheduler(optimizer) if scheduler else None,
                 stateful={"optimizer": optimizer}, **options)
    return result, optimizer


def test_keep_last_runs_every_epoch_and_keeps_the_last_weights(tmp_path):
    result, _ = _fit(tmp_path, [0.9, 0.5, 0.4, 0.3, 0.2], keep="last")
    s = result.summary
    assert (s["epochs_run"], s["stopped"], s["best_epoch"], s["best_value"]) == (5, "max_epochs", 5, 0.2)
    assert float(result.best_state["bias"]) == 5.0  # the last epoch's weights, not the best-scoring one's
    best, _ = _fit(tmp_path / "best", [0.9, 0.5, 0.4, 0.3, 0.2])  # keep="best" (default): early stopping
    assert (best.summary["epochs_run"], best.summary["stopped"], best.summary["best_epoch"]) == (2, "early_stopping", 1)
    assert float(best.best_state["bias"]) == 1.0


def test_tie_break_prefers_the_epoch_better_on_the_second_metric(tmp_path):
    scores, maps = [0.5, 0.5, 0.5, 0.4, 0.4], [0.1, 0.3, 0.2, 0.9, 0.9]
    result, _ = _fit(tmp_path, scores, ties=maps, tie_break="map", settings=ToySettings(patience=2))
    assert result.summary["best_epoch"] == 2 and float(result.best_state["bias"]) == 2.0
    plain, _ = _fit(tmp_path / "plain", scores, ties=maps, settings=ToySettings(patience=2))
    assert plain.summary["best_epoch"] == 1  # without tie_break a tie keeps the earlier epoch
    stopper = EarlyStopping(2, "min")
    assert stopper.step(1.0, 1, tie=3.0) and stopper.step(1.0, 2, tie=2.0) and not stopper.step(1.0, 3, tie=2.5)
    assert stopper.best_epoch == 2


def test_a_scheduler_is_stepped_once_per_epoch_and_resumes_from_the_checkpoint(tmp_path):
    def halve(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    result, optimizer = _fit(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5], scheduler=halve, keep="last",
                             settings=ToySettings(max_epochs=3))
    rates = [r["train"]["learning_rate"] for r in result.summary["history"]]
    assert rates == [1.0, 0.5, 0.25] and optimizer.param_groups[0]["lr"] == 0.125
    checkpoint = KIND.load_checkpoint(tmp_path)
    assert checkpoint["scheduler"]["last_epoch"] == 3
    resumed, optimizer = _fit(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5], scheduler=halve, keep="last",
                              checkpoint=checkpoint)
    assert [r["train"]["learning_rate"] for r in resumed.summary["history"]] == [1.0, 0.5, 0.25, 0.125, 0.0625]


def test_reduce_on_plateau_is_stepped_with_the_monitor(tmp_path):
    def plateau(optimizer):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=0)

    result, _ = _fit(tmp_path, [0.5, 0.5, 0.6, 0.6, 0.6], scheduler=plateau, settings=ToySettings(patience=5))
    rates = [r["train"]["learning_rate"] for r in result.summary["history"]]
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_keep_must_be_best_or_last(tmp_path):
    with pytest.raises(ValueError, match="keep must be best or last"):
        _fit(tmp_path, [0.1], keep="first")
