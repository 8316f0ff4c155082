"""The ``loris`` trainer: :func:`lib.loris.train.train` on the datastore, as a MONAI Label train task.

The loss uses the normal images with a box; labelled distended images are never
in the loss and serve the threshold calibration on validation (the method's
training does both). See :mod:`lib.trainers.core_task` for params and publishing.
"""

from __future__ import annotations

from pathlib import Path

from lib.data.records import Record
from lib.loris.settings import LorisSettings
from lib.trainers.core_task import CoreTrainTask
from lib.training.precision import PRECISIONS


class LorisTrainer(CoreTrainTask):
    """Train LoRIS from the datastore's corrections into ``model_dir`` (``lib.loris`` model directory)."""

    data_parallel = True
    precisions = PRECISIONS

    def __init__(self, model_dir: Path, quick_default: bool = True):
        super().__init__(model_dir, "LoRIS: inpainting network trained on normal boxed images; thresholds "
                         "calibrated on validation (labelled distended images included)", quick_default)

    def preset(self, quick: bool) -> LorisSettings:
        return LorisSettings.quick() if quick else LorisSettings()

    def run(self, records: list[Record], out_dir: Path, settings: LorisSettings, device: str,
            precision: str = "float32") -> dict:
        from lib.loris.train import train

        return train(records, out_dir, settings, progress=True, on_epoch=self.on_epoch, device=device,
                     precision=precision)
