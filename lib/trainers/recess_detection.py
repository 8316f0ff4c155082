"""The ``recess_detection`` trainer: :func:`lib.detection.train.train_detector` on the datastore.

The detector learns from the normal images with a box (the method's training
selects them). See :mod:`lib.trainers.core_task` for params and publishing.
"""

from __future__ import annotations

from pathlib import Path

from lib.data.records import Record
from lib.detection.settings import DetectorSettings
from lib.trainers.core_task import CoreTrainTask


class RecessDetectionTrainer(CoreTrainTask):
    """Train the recess detector from the datastore into ``model_dir`` (``lib.detection`` model folder).

    Data-parallel with ``multi_gpu`` (every rank trains on its share of the images, rank 0 publishes).
    """

    data_parallel = True

    def __init__(self, model_dir: Path, quick_default: bool = True):
        super().__init__(model_dir, "Recess detector (one-box heatmap network) trained on normal boxed images", quick_default)

    def preset(self, quick: bool) -> DetectorSettings:
        return DetectorSettings.quick() if quick else DetectorSettings()

    def run(self, records: list[Record], out_dir: Path, settings: DetectorSettings, device: str) -> dict:
        from lib.detection.train import train_detector

        return train_detector(records, out_dir, settings, progress=True, on_epoch=self.on_epoch, device=device)
