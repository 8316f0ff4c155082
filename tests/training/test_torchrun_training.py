"""``torchrun --nproc_per_node 2 -m lib train`` / ``train-detector`` on the CPU (gloo): two processes train one model together."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.__main__ import main as cli

pytestmark = pytest.mark.slow  # two training processes (32 px, 2 epochs: about 20 s on 2 cores)

REPO = Path(__file__).resolve().parents[2]


def _torchrun(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", "-m", "lib", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_gloo_processes_train_one_model_that_infers(tiny_flat, tmp_path):
    model = tmp_path / "model"
    proc = _torchrun("train", "--data", str(tiny_flat), "--out", str(model), "--quick", "--epochs", "2",
                     "--image-size", "32", "--channels", "8", "16", "32", "--device", "cpu", "--no-progress")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    # the log: world size 2, and both ranks stopped at the same epoch
    assert "world size 2: 2 processes trained together (batch 4 per process, 8 per step)" in log, log[-3000:]
    assert "epochs run by each rank: [2, 2]" in log
    assert "rank 1 of world size 2: 2 epochs (max epochs) on cpu; rank 0 writes the model" in log
    assert log.count("model saved in") == 1  # rank 0 alone publishes

    # one model, written once, that infers
    assert sorted(p.name for p in model.iterdir()) == ["checkpoint_last.pt", "model.json", "model.pt"]
    info = json.loads((model / "model.json").read_text())
    assert info["training"]["world_size"] == 2 and info["training"]["rank_epochs"] == [2, 2]
    from lib.data.dataset import load_dataset

    record = next(r for r in load_dataset(tiny_flat).records if r.box is not None)
    out = tmp_path / "out"
    assert cli(["infer", "--model", str(model), "--image", str(record.image_path), "--box", *map(str, record.box),
                "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["box"] == list(record.box) and result["metric"] == "msgmsd"

    # resume: the two processes continue from rank 0's checkpoint
    proc = _torchrun("train", "--data", str(tiny_flat), "--out", str(model), "--quick", "--epochs", "3",
                     "--image-size", "32", "--channels", "8", "16", "32", "--device", "cpu", "--no-progress", "--resume")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "epochs run by each rank: [3, 3]" in log and "no checkpoint" not in log
    assert json.loads((model / "model.json").read_text())["training"]["resumed"] is True


def test_two_gloo_processes_train_one_detector_and_stop_at_the_same_epoch(tiny_flat, tmp_path):
    from lib.detection.infer import RecessDetector

    model = tmp_path / "detector"
    args = ("train-detector", "--data", str(tiny_flat), "--out", str(model), "--image-size", "64", "--batch-size", "4",
            "--schedule", "plateau", "--patience", "1", "--device", "cpu", "--no-progress")
    proc = _torchrun(*args, "--epochs", "3")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    # rank 0 alone prints the summary (stdout: one JSON document) and writes the model
    summary = json.loads(proc.stdout)
    epochs = summary["epochs_run"]
    assert summary["world_size"] == 2 and summary["rank_epochs"] == [epochs, epochs]  # both ranks stop together
    assert ("world size 2: 2 processes trained together (batch 4 per process, 8 per step); "
            f"epochs run by each rank: [{epochs}, {epochs}]") in log
    stopped = summary["stopped"].replace("_", " ")
    assert f"rank 1 of world size 2: {epochs} epochs ({stopped}) on cpu; rank 0 writes the model" in log
    assert sorted(p.name for p in model.iterdir()) == ["checkpoint_last.pt", "model.json", "model.pt"]
    info = json.loads((model / "model.json").read_text())
    assert info["training"]["world_size"] == 2 and info["epoch"] == summary["best_epoch"]
    detector = RecessDetector.load(model)
    assert detector.settings.image_size == 64 and 0.0 < detector.score_threshold < 1.0

    # resume: the two processes continue from rank 0's checkpoint
    proc = _torchrun(*args, "--epochs", "5", "--resume")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    again = json.loads(proc.stdout)
    assert again["resumed"] is True and again["epochs_run"] >= epochs
    assert again["rank_epochs"] == [again["epochs_run"]] * 2
