"""The LoRIS MONAI Label app: ``monailabel start_server --app monailabel_app --studies DATASTORE``.

Builds the hardened datastore (:mod:`lib.datastore`) and registers the tasks of
each model's :class:`TaskConfig` (:mod:`lib.configs`): infer tasks ``loris``,
``loris_anomaly_map``, ``recess_detection``; trainers ``loris``,
``recess_detection``; strategies ``loris_uncertain``, ``loris_most_anomalous``,
``random``; scoring method ``loris_scoring``. ``--conf`` keys: see
:mod:`lib.configs.app_config`.
"""

import logging
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "lib" / "__init__.py").is_file() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))  # the project's `lib` package lives beside the app folder

from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from lib.configs.app_config import AppConfig  # noqa: E402
from lib.configs.loris import LorisConfig  # noqa: E402
from lib.configs.recess_detection import RecessDetectionConfig  # noqa: E402
from lib.datastore import HardenedDatastore  # noqa: E402

logger = logging.getLogger(__name__)

TASK_CONFIGS = {"loris": LorisConfig, "recess_detection": RecessDetectionConfig}
"""Model name -> its TaskConfig class (explicit: nothing is looked up by name)."""


class LorisApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.app_config = AppConfig.from_conf(conf, app_dir)
        self.app_config.models_dir.mkdir(parents=True, exist_ok=True)
        self.models = {}
        for name, config_class in TASK_CONFIGS.items():
            config = config_class()
            config.init(name, str(self.app_config.models_dir), conf, None,
                        app_config=self.app_config, datastore_root=Path(studies).resolve())
            self.models[name] = config
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="LoRIS",
            description="Knee-ultrasound suprapatellar recess: box detection and LoRIS anomaly detection",
            version="1.0",
            labels={"distended": 1},
        )

    def init_datastore(self):
        return HardenedDatastore(
            self.studies,
            limits=self.app_config.limits,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        infers = {}
        for config in self.models.values():
            infers.update(config.infer())
        return infers

    def init_trainers(self):
        return {name: config.trainer() for name, config in self.models.items()}

    def init_strategies(self):
        strategies = {"random": Random()}
        for config in self.models.values():
            strategies.update(config.strategy() or {})
        return strategies

    def init_scoring_methods(self):
        methods = {}
        for config in self.models.values():
            methods.update(config.scoring_method() or {})
        return methods
