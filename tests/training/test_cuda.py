"""The GPU path: training, inference, mixed precision, NCCL data parallelism, folds on GPUs, the server's multi_gpu.

Marked ``cuda`` and skipped without a CUDA GPU (``-m cuda`` selects them; ``scripts/gpu_check.sh`` runs them
with the rest of the GPU checks). The two-GPU tests are skipped with fewer than two GPUs.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


def _tiny(**changes):
    from lib.loris.settings import LorisSettings

    return LorisSettings.quick(**{"image_size": 32, "channels": (8, 16, 32), "strides": (2, 2), "max_epochs": 2,
                                  **changes})


def _outputs(model_dir, records, device, precision="float32"):
    from lib.data.imageio import read_boxed_images
    from lib.loris.predictor import LorisPredictor

    boxed = [r for r in records if r.box is not None]
    predictor = LorisPredictor.load(model_dir, device, precision=precision)
    out = predictor.network_outputs(read_boxed_images(boxed), [r.box for r in boxed], ("msgmsd", "dd"))
    return {"reconstruction": out.reconstruction.cpu(), "scores": {k: v.cpu() for k, v in out.scores.items()}}


def test_training_and_inference_run_on_the_gpu(tiny_flat, tmp_path):
    from lib.data.dataset import load_dataset
    from lib.loris.train import train

    records = load_dataset(tiny_flat).records
    summary = train(records, tmp_path / "m", _tiny(), progress=False, device="cuda")
    assert summary["device"].startswith("cuda") and summary["epochs_run"] == 2 and summary["world_size"] == 1
    gpu, cpu = _outputs(tmp_path / "m", records, "cuda"), _outputs(tmp_path / "m", records, "cpu")
    assert float((gpu["reconstruction"] - cpu["reconstruction"]).abs().max()) < 1e-3  # same weights, same outputs


def test_the_detector_trains_on_the_gpu_when_the_device_is_auto(tiny_flat, tmp_path):
    from lib.data.dataset import load_dataset
    from lib.data.imageio import read_boxed_images
    from lib.detection.infer import RecessDetector
    from lib.detection.settings import DetectorSettings
    from lib.detection.train import train_detector

    records = load_dataset(tiny_flat).records
    settings = DetectorSettings(image_size=64, base_channels=8, fpn_channels=16, max_epochs=2, batch_size=4)
    summary = train_detector(records, tmp_path / "d", settings, progress=False, device="auto")
    assert summary["device"].startswith("cuda") and summary["epochs_run"] == 2 and summary["gpu_peak_memory_mb"] > 0
    images = read_boxed_images([r for r in records if r.box is not None][:4])
    gpu = RecessDetector.load(tmp_path / "d", device="cuda").detect_batch(images, min_confidence=0.0)
    cpu = RecessDetector.load(tmp_path / "d", device="cpu").detect_batch(images, min_confidence=0.0)
    for g, c in zip(gpu, cpu):  # same weights, same boxes (up to a pixel of rounding)
        assert max(abs(a - b) for a, b in zip(g.box, c.box)) <= 1 and abs(g.confidence - c.confidence) < 1e-3


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_infers_within_tolerance(tiny_flat, tmp_path, precision):
    from lib.data.dataset import load_dataset
    from lib.loris.train import train
    from lib.training.precision import compare

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    records = load_dataset(tiny_flat).records
    summary = train(records, tmp_path / "m", _tiny(), progress=False, device="cuda", precision=precision)
    assert summary["precision"] == precision and all(h["train"]["loss"] == h["train"]["loss"] for h in summary["history"])
    result = compare(_outputs(tmp_path / "m", records, "cuda"), _outputs(tmp_path / "m", records, "cuda", precision))
    assert result["within_tolerance"], result


@TWO_GPUS
def test_torchrun_trains_on_two_gpus_with_nccl(tiny_flat, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                           "--nproc_per_node", "2", "-m", "lib", "train", "--data", str(tiny_flat), "--out",
                           str(tmp_path / "m"), "--quick", "--epochs", "2", "--image-size", "32", "--channels", "8",
                           "16", "32", "--device", "cuda", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "epochs run by each rank: [2, 2]" in log and "rank 1 of world size 2: 2 epochs" in log and "on cuda:1" in log
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["training"]["world_size"] == 2 and info["training"]["device"] == "cuda:0"


def test_evaluate_workers_on_the_gpu_give_the_serial_numbers(tmp_path):
    from lib.__main__ import main

    data = tmp_path / "data"
    assert main(["sample-data", "--out", str(data), "--patients", "8", "--image-size", "128x96"]) == 0
    results = []
    for workers in ("1", "2"):
        out = tmp_path / f"eval{workers}"
        assert main(["evaluate", "--data", str(data), "--out", str(out), "--folds", "2", "--epochs", "2", "--quick",
                     "--image-size", "64", "--metrics", "msgmsd", "dd", "--methods", "loris", "box-shape",
                     "--threads", "1", "--device", "cuda", "--workers", workers, "--no-progress"]) == 0
        results.append(json.loads((out / "metrics.json").read_text()))
    assert results[0]["methods"] == results[1]["methods"] and results[0]["scoring"] == results[1]["scoring"]


@TWO_GPUS
@pytest.mark.server
def test_server_training_with_multi_gpu_trains_on_every_gpu(server, tmp_path):
    import requests

    from tests.app.helpers import TIMEOUT, wait_train_done

    backup = tmp_path / "loris"
    shutil.copytree(server.models_dir / "loris", backup)
    try:
        started = requests.post(f"{server.url}/train/loris", timeout=TIMEOUT,
                                json={"max_epochs": 2, "quick": True, "multi_gpu": True, "gpus": "all",
                                      "device": "cuda"})
        assert started.status_code == 200, started.text
        status = wait_train_done(server.url, timeout=600)
        assert status["status"] == "DONE", status
        stats = requests.get(f"{server.url}/info/", timeout=TIMEOUT).json()["train_stats"]["loris"]
        assert stats["world_size"] == torch.cuda.device_count()
        assert stats["summary"]["rank_epochs"] == [2] * torch.cuda.device_count()
    finally:
        shutil.rmtree(server.models_dir / "loris")
        shutil.copytree(backup, server.models_dir / "loris")
