"""TaskConfig of the ``loris`` model: infer tasks ``loris`` and ``loris_anomaly_map``, its trainer,
the ``loris_uncertain`` / ``loris_most_anomalous`` strategies and the ``loris_scoring`` method.

Expects ``init(..., app_config=AppConfig, datastore_root=Path)``.
"""

from __future__ import annotations

from monailabel.interfaces.config import TaskConfig

from lib.activelearning.scoring import LorisScoring
from lib.activelearning.strategies import LorisStrategy
from lib.infers.loris import LorisInfer
from lib.trainers.loris import LorisTrainer


class LorisConfig(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.app_config = kwargs["app_config"]
        self.datastore_root = kwargs["datastore_root"]

    def infer(self):
        c = self.app_config
        return {
            "loris": LorisInfer(c.loris_dir, c.detector_dir, self.datastore_root, output="segmentation"),
            "loris_anomaly_map": LorisInfer(
                c.loris_dir, c.detector_dir, self.datastore_root, output="anomaly_map",
                description="LoRIS: float32 anomaly map (NRRD, the image's pixel grid) with the same params as loris",
            ),
        }

    def trainer(self):
        return LorisTrainer(self.app_config.loris_dir, quick_default=self.app_config.train_preset == "quick")

    def strategy(self):
        return {
            "loris_uncertain": LorisStrategy("uncertain"),
            "loris_most_anomalous": LorisStrategy("most_anomalous"),
        }

    def scoring_method(self):
        return {"loris_scoring": LorisScoring(self.app_config.loris_dir, self.app_config.detector_dir)}
