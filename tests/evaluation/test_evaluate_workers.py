"""``evaluate --workers 2``: folds side by side in worker processes give the serial run's metrics.json numbers."""

import json

import pytest

from lib.__main__ import main
from lib.errors import DataError
from lib.evaluation.protocol import EvaluationConfig

pytestmark = pytest.mark.slow  # two tiny evaluations (2 folds, 1 epoch each)

RUN_SPECIFIC = ("out", "command", "workers", "wall_s")
"""The keys of metrics.json's config that name the run itself rather than its results."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate_workers") / "data"
    assert main(["sample-data", "--out", str(out), "--patients", "8", "--image-size", "128x96"]) == 0
    return out


def _metrics(data, out, workers, capsys):
    assert main(["evaluate", "--data", str(data), "--out", str(out), "--folds", "2", "--epochs", "1", "--quick",
                 "--image-size", "64", "--metrics", "msgmsd", "dd", "--methods", "loris", "box-shape",
                 "--threads", "1", "--no-progress", "--workers", str(workers)]) == 0
    printed = capsys.readouterr().out
    return json.loads((out / "metrics.json").read_text()), printed


def test_two_workers_write_the_serial_runs_numbers(tiny_data, tmp_path, capsys):
    serial, _ = _metrics(tiny_data, tmp_path / "serial", 1, capsys)
    parallel, printed = _metrics(tiny_data, tmp_path / "parallel", 2, capsys)
    assert "2 folds on 2 workers side by side, 1 torch thread(s) each" in printed
    assert parallel["config"]["workers"] == 2 and serial["config"]["workers"] == 1
    for config in (serial["config"], parallel["config"]):
        for key in RUN_SPECIFIC:
            config.pop(key)
    assert parallel == serial  # every number, the configuration and the data summary
    for k in (0, 1):  # each fold's file: the same results, the same test images and scores
        a, b = (json.loads((tmp_path / run / "folds" / f"fold_{k}.json").read_text()) for run in ("serial", "parallel"))
        assert a["methods"] == b["methods"] and a["images"] == b["images"] and a["split"] == b["split"]
    for name in ("report.md", "panels/loris_msgmsd.png", "figures/roc_loris_msgmsd.png"):
        assert (tmp_path / "parallel" / name).stat().st_size > 0, name


def test_workers_must_be_at_least_one(tiny_data, tmp_path):
    with pytest.raises(DataError, match="--workers must be a whole number of at least 1, got 0"):
        EvaluationConfig(data=tiny_data, out=tmp_path / "o", workers=0)
