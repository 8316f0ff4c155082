"""TaskConfig of the ``recess_detection`` model: its infer task and trainer.

Expects ``init(..., app_config=AppConfig, datastore_root=Path)``.
"""

from __future__ import annotations

from monailabel.interfaces.config import TaskConfig

from lib.infers.recess_detection import RecessDetectionInfer
from lib.trainers.recess_detection import RecessDetectionTrainer


class RecessDetectionConfig(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.app_config = kwargs["app_config"]
        self.datastore_root = kwargs["datastore_root"]

    def infer(self):
        return {"recess_detection": RecessDetectionInfer(self.app_config.detector_dir, self.datastore_root)}

    def trainer(self):
        return RecessDetectionTrainer(self.app_config.detector_dir, quick_default=self.app_config.train_preset == "quick")
