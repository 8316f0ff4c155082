"""MONAI Label's ``multi_gpu`` path: its ``main_worker`` spawned once per rank, as BasicTrainTask does, on the CPU.

MONAI Label spawns one process per GPU; without GPUs it never does, so the ranks here are spawned with
MONAI Label's own ``main_worker`` and the request it would build, with gloo in place of NCCL.
"""

import json

import pytest

from lib.detection.settings import DetectorSettings
from lib.loris.settings import LorisSettings
from lib.server.process import free_port
from lib.trainers.loris import LorisTrainer
from lib.trainers.recess_detection import RecessDetectionTrainer

pytestmark = pytest.mark.slow  # two training processes (32 or 64 px, 2 epochs)


class TinyLorisTrainer(LorisTrainer):
    """The LoRIS trainer with a 32 px network (importable by the spawned ranks)."""

    def preset(self, quick: bool) -> LorisSettings:
        return LorisSettings.quick(image_size=32, channels=(8, 16, 32), strides=(2, 2), max_epochs=2, patience=5)


class TinyDetectorTrainer(RecessDetectionTrainer):
    """The recess detector's trainer with a 64 px network (importable by the spawned ranks)."""

    def preset(self, quick: bool) -> DetectorSettings:
        return DetectorSettings(image_size=64, base_channels=8, fpn_channels=16, max_epochs=2, batch_size=4)


def _spawn_two_ranks(task, data, monkeypatch, run_id: str) -> dict:
    """MONAI Label's ``main_worker`` on two gloo ranks with a ``multi_gpu`` request; checks that rank 0 alone
    published one model folder and returns its ``train_stats.json``."""
    import torch.multiprocessing as mp
    from monailabel.tasks.train.basic_train import main_worker

    from lib.data.dataset import load_dataset

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    records = [r for r in load_dataset(data).records if r.label is not None]
    request = {**task._config, "multi_gpu": True, "device": "cpu", "distributed_backend": "gloo", "run_id": run_id,
               "max_epochs": 2}
    mp.spawn(main_worker, nprocs=2, args=(2, request, records, task))
    target = task.target
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint_last.pt", "model.json", "model.pt",
                                                        "train_stats.json"]
    assert not [p for p in target.parent.iterdir() if p.name != target.name]  # no temporary folder left
    stats = json.loads((target / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["run_id"] == run_id
    assert stats["summary"]["rank_epochs"] == [2, 2] and stats["summary"]["epochs_run"] == 2
    return stats


def test_multi_gpu_ranks_train_together_and_rank_0_publishes(tiny_flat, tmp_path, monkeypatch):
    from lib.loris.predictor import LorisPredictor

    task = TinyLorisTrainer(tmp_path / "models" / "loris")
    assert task._config["precision"] == "float32" and task._config["multi_gpu"] is False  # declared in /info
    stats = _spawn_two_ranks(task, tiny_flat, monkeypatch, "t1")
    assert stats["precision"] == "float32"
    assert LorisPredictor.load(task.target).settings.image_size == 32


def test_multi_gpu_ranks_train_the_detector_together_and_rank_0_publishes(tiny_flat, tmp_path, monkeypatch):
    from lib.detection.infer import RecessDetector

    task = TinyDetectorTrainer(tmp_path / "models" / "recess_detection")
    assert task.data_parallel
    _spawn_two_ranks(task, tiny_flat, monkeypatch, "d1")
    assert RecessDetector.load(task.target).settings.image_size == 64


def test_a_precision_the_trainer_does_not_take_is_refused(tmp_path):
    from lib.errors import DataError

    task = TinyLorisTrainer(tmp_path / "loris")
    assert task.precision_for({"precision": "bf16"}) == "bf16"
    with pytest.raises(DataError, match="precision: 'fp8' is not one of float32, bf16, fp16"):
        task.precision_for({"precision": "fp8"})
