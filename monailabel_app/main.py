"""The LoRIS MONAI Label app: ``monailabel start_server --app monailabel_app --studies DATASTORE``.

Builds the hardened datastore (:mod:`lib.server.datastore`) -- or, when ``--studies`` is a
DICOMweb URL (``http://HOST/dicom-web``), the PACS datastore (:mod:`lib.server.pacs_datastore`:
ultrasound instances listed from the PACS, retrieved into a local store beside it that
also keeps the labels) -- and registers the tasks of
each model's :class:`TaskConfig` (:mod:`lib.configs`): infer tasks ``loris``,
``loris_anomaly_map``, ``recess_detection``; trainers ``loris``,
``recess_detection``; strategies ``loris_uncertain``, ``loris_most_anomalous``,
``random``; scoring method ``loris_scoring``. ``--conf`` keys: see
:mod:`lib.configs.app_config`.

In the server process (``server_mode(True)``) it empties the datastore's upload
folder and installs the HTTP layer (:mod:`lib.server.http`): access token, CORS, limits,
strict routes. Whatever the route, :meth:`LorisApp.infer` is the one way to the infer
tasks: it reads only datastore images (by id) or the request's uploaded file, and it
never saves a result as a ``final`` label.
"""

import logging
import math
import os
import re
import shutil
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "lib" / "__init__.py").is_file() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))  # the project's `lib` package lives beside the app folder

from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import DefaultLabelTag  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from lib.configs.app_config import AppConfig  # noqa: E402
from lib.configs.loris import LorisConfig  # noqa: E402
from lib.configs.recess_detection import RecessDetectionConfig  # noqa: E402
from lib.data.atomic import atomic_dir  # noqa: E402
from lib.server.datastore import FILE_INFO_KEYS, HardenedDatastore, check_name  # noqa: E402
from lib.errors import DataError  # noqa: E402
from lib.infers.http_errors import BAD_REQUEST, NOT_FOUND, client_error  # noqa: E402
from lib.infers.loris import load_predictor  # noqa: E402
from lib.infers.recess_detection import load_detector  # noqa: E402

logger = logging.getLogger(__name__)

TASK_CONFIGS = {"loris": LorisConfig, "recess_detection": RecessDetectionConfig}
"""Model name -> its TaskConfig class (explicit: nothing is looked up by name)."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


MODEL_LOADERS = {"loris": load_predictor, "recess_detection": load_detector}
"""How ``PUT /model/<name>`` checks that an uploaded ``model.pt`` is a model of that name: the infer tasks' own loaders."""


def is_dicomweb(studies) -> bool:
    """True when ``--studies`` names a DICOMweb server rather than a folder."""
    return str(studies).startswith(("http://", "https://"))


class LorisApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.app_config = AppConfig.from_conf(conf, app_dir)
        self.app_config.models_dir.mkdir(parents=True, exist_ok=True)
        if is_dicomweb(studies):
            from lib.server.pacs_datastore import default_store

            studies = str(studies).strip().rstrip("/")
            self.datastore_root = self.app_config.dicomweb_store or default_store(app_dir, studies)
        else:
            self.datastore_root = Path(studies).resolve()
        self.models = {}
        for name, config_class in TASK_CONFIGS.items():
            config = config_class()
            config.init(name, str(self.app_config.models_dir), conf, None,
                        app_config=self.app_config, datastore_root=self.datastore_root)
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
        if is_dicomweb(self.studies):
            return self.init_remote_datastore()
        return HardenedDatastore(
            self.studies,
            limits=self.app_config.limits,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_remote_datastore(self):
        """The PACS datastore on the DICOMweb server ``--studies`` (:mod:`lib.server.pacs_datastore`), with its local store
        at ``--conf dicomweb_store``; no tools are downloaded (MONAI Label's own one fetches dcmqi)."""
        from lib.server.pacs_datastore import PacsDatastore, make_client

        logger.info(f"DICOMweb datastore {self.studies}: filter {self.app_config.dicomweb_filter}, local store "
                    f"{self.datastore_root}")
        return PacsDatastore(
            make_client(self.studies), self.datastore_root, self.app_config.dicomweb_filter,
            limits=self.app_config.limits, cache_seconds=settings.MONAI_LABEL_DICOMWEB_CACHE_EXPIRY,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
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

    def _load_sessions(self, load=False):
        return None  # no upload sessions: infer reads datastore images or the request's own file

    # ------------------------------------------------------------------ the server process

    def server_mode(self, mode: bool):
        super().server_mode(mode)
        if mode:
            cleared = self.datastore().clear_uploads()
            if cleared:
                logger.info(f"removed {cleared} upload(s) left by a previous run")
            from monailabel.app import app as fastapi_app

            from lib.server.http.install import install

            install(fastapi_app, self)

    def _local_request(self, url, params, action):
        """MONAI Label's call back into the server (scoring after training), with the access token."""
        import requests

        token = self.app_config.auth_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = requests.post(f"http://127.0.0.1:{settings.MONAI_LABEL_SERVER_PORT}{url}", json=params or {},
                                     headers=headers, timeout=60)
        except requests.RequestException as exc:
            logger.error(f"Failed To Trigger {action}: {exc}")
            return None
        if response.status_code != 200:
            logger.error(f"Failed To Trigger {action}: {response.status_code} {response.text}")
            return None
        return response.json()

    # ------------------------------------------------------------------ names

    def infer_names(self) -> list:
        return sorted(self._infers)

    def trainer_names(self) -> list:
        return sorted(self._trainers)

    def scoring_names(self) -> list:
        return sorted(self._scoring_methods)

    # ------------------------------------------------------------------ infer

    def check_infer_params(self, request: dict) -> None:
        """Check the infer params MONAI Label itself reads (``device``, ``logging``, ``timeout``).

        ``logging`` is dropped once checked: a client does not set the server's log level.

        Raises:
            HTTPException: 400 naming the param.
        """
        device = request.get("device")
        if device is not None and not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d{1,2})?", device)):
            raise client_error(BAD_REQUEST, f"params.device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        level = request.pop("logging", None)
        if level is not None and not (isinstance(level, str) and level.upper() in LOG_LEVELS):
            raise client_error(BAD_REQUEST, f"params.logging: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
        timeout = request.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise client_error(BAD_REQUEST, f"params.timeout: expected a positive number of seconds, got {timeout!r}")

    def _uploaded(self, image) -> bool:
        if not isinstance(image, str) or not os.path.isabs(image):
            return False
        uploads = os.path.realpath(self.datastore().uploads_dir)
        return os.path.dirname(os.path.realpath(image)) == uploads and os.path.isfile(image)

    def infer(self, request, datastore=None):
        """Run an infer task on a datastore image (by id) or an uploaded file; never write a final label.

        Raises:
            HTTPException: 400 a path given as id or a result to save as ``final``; 404 unknown id.
        """
        request = dict(request)
        tag = request.get("label_tag") or DefaultLabelTag.ORIGINAL.value
        if request.get("save_label") and str(getattr(tag, "value", tag)) == DefaultLabelTag.FINAL.value:
            raise client_error(BAD_REQUEST, "label_tag: inference never writes final labels; save a reviewed label "
                                            "with PUT /datastore/label")
        image = request.get("image")
        if self._uploaded(image):
            request["save_label"] = False
        else:
            check_name(image, "image id")
            store = datastore or self.datastore()
            if not store.has_image(image):
                raise client_error(NOT_FOUND, f"image {image!r} not found in the datastore")
        result = super().infer(request, datastore)
        if request.get("save_label") and result.get("file"):
            Path(result["file"]).unlink(missing_ok=True)  # saved into the datastore: the temporary result goes
        return result

    def infer_wsi(self, request, datastore=None):
        raise client_error(NOT_FOUND, "this app has no whole-slide models")

    # ------------------------------------------------------------------ train, active learning, models

    def check_train_params(self, model: str, params: dict) -> None:
        """Check ``/train/<model>`` params in the server, before a training process starts.

        Raises:
            HTTPException: 400 naming the param (booleans are not numbers).
        """
        from lib.trainers.core_task import REQUEST_KEYS

        for key in REQUEST_KEYS:
            if isinstance(params.get(key), bool):
                raise client_error(BAD_REQUEST, f"train param {key}: expected a number, got {params[key]!r}")
        try:
            self._trainers[model].settings_for(params)
        except DataError as exc:
            raise client_error(BAD_REQUEST, str(exc)) from None

    def next_sample(self, request):
        """The next image of a known strategy (404 otherwise), without its server path."""
        strategy = request.get("strategy") or "random"
        if not isinstance(strategy, str) or strategy not in self._strategies:
            raise client_error(NOT_FOUND, f"unknown strategy {strategy!r}; the strategies are "
                                          f"{', '.join(sorted(self._strategies))}")
        tag, labels = request.get("label_tag"), request.get("labels")
        if tag is not None and not isinstance(tag, str):
            raise client_error(BAD_REQUEST, f"params.label_tag: expected text, got {tag!r}")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(v, str) for v in labels)):
            raise client_error(BAD_REQUEST, f"params.labels: expected a list of label names, got {labels!r}")
        result = super().next_sample(request)
        result.pop("path", None)
        if result.get("id"):  # the image's geometry, so that a client shows it in millimetres at once
            info = self.datastore().get_image_info(result["id"])
            result.update({k: info[k] for k in FILE_INFO_KEYS if k in info})
        return result

    def install_model(self, name: str, uploaded: Path) -> Path:
        """Install an uploaded ``model.pt`` as the whole model directory of ``name``, after loading it.

        Returns:
            the installed ``model.pt``.

        Raises:
            HTTPException: 400 when the file does not load as a ``name`` model.
        """
        target = {"loris": self.app_config.loris_dir, "recess_detection": self.app_config.detector_dir}[name]
        with atomic_dir(target) as staged:
            shutil.copyfile(uploaded, staged / "model.pt")
            try:
                MODEL_LOADERS[name](staged, "cpu")
            except Exception as exc:  # a client's file: whatever fails to load it is a bad upload
                message = str(exc).replace(str(staged / "model.pt"), "model.pt").replace(str(staged), "the upload")
                raise client_error(BAD_REQUEST, f"file: not a usable {name} model ({message})") from None
        logger.info(f"installed an uploaded {name} model")
        return target / "model.pt"
