"""Shared fixtures: a real MONAI Label server on a tiny generated datastore with tiny trained models.

``server`` (session scope) generates ~18 synthetic 96 x 64 frames of 4 patients
(one patient left unlabelled), trains a tiny detector and a tiny LoRIS model
(1 epoch, small networks) into a temporary models folder, and starts
``monailabel start_server --app monailabel_app --studies DATASTORE --conf models_dir MODELS``
on a free port bound to 127.0.0.1. Automatic scoring is off
(``MONAI_LABEL_AUTO_UPDATE_SCORING=false``) so tests decide when scoring runs.
Tests that use it are marked ``@pytest.mark.server``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `lib` and `tests.app.helpers` importable under plain `pytest` too
APP_DIR = REPO / "monailabel_app"
STARTUP_TIMEOUT_S = 120


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread: the CI machine has 2 cores, and two threads under load were slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_configure(config):
    config.addinivalue_line("markers", "server: starts a real MONAI Label server subprocess (the `server` fixture)")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; scripts/gpu_check.sh runs them)")


@dataclass
class ServerProcess:
    """A running ``monailabel start_server`` subprocess (:mod:`lib.server.process`) and its datastore.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        datastore: the datastore folder (``--studies``).
        models_dir: where the models live (``--conf models_dir``).
        app_dir: the app folder (``monailabel_app`` of this repository).
        sample_image_id: a labelled normal image of the datastore.
        unlabelled_ids: the images imported without label.
    """

    url: str
    datastore: Path
    models_dir: Path
    app_dir: Path
    log_path: Path
    sample_image_id: str = ""
    unlabelled_ids: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    handle: object = None

    CONF = {"max_upload_bytes": 2000000, "max_image_pixels": 1000000}

    def start(self) -> None:
        from lib.server.process import start_server

        port = int(self.url.rsplit(":", 1)[1])
        conf = {"models_dir": self.models_dir, **self.CONF}
        self.handle = start_server(self.app_dir, self.datastore, conf, "127.0.0.1", port, env=self.env,
                                   log_path=self.log_path, timeout=STARTUP_TIMEOUT_S)

    def log_tail(self, chars: int = 4000) -> str:
        return self.handle.log_tail(chars)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()

    def restart(self) -> None:
        """Stop the server and start it again on the same port, datastore and models."""
        self.stop()
        self.start()


def _tiny_settings():
    from lib.detection.settings import DetectorSettings
    from lib.loris.settings import LorisSettings

    loris = LorisSettings.quick(image_size=32, channels=(8, 16, 32), strides=(2, 2), max_epochs=1)
    # score_threshold 0: an (untrained) 1-epoch detector still reports its best box, so the
    # automatic pipeline can be exercised
    detector = DetectorSettings(image_size=64, base_channels=4, fpn_channels=8, max_epochs=1, batch_size=4,
                                score_threshold=0.0)
    return loris, detector


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real MONAI Label server of this app on a tiny datastore with tiny trained models."""
    import torch

    from lib.server.setup import make_sample_datastore, train_missing

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("monailabel")
    datastore, models_dir = root / "datastore", root / "models"
    records = make_sample_datastore(datastore, patients=4, image_size=(96, 64), seed=1)
    loris, detector = _tiny_settings()
    train_missing(datastore, models_dir, loris_settings=loris, detector_settings=detector)

    from lib.server.process import QUIET_ENV, free_port

    env = {**QUIET_ENV, "MONAI_LABEL_SESSION_PATH": str(root / "sessions"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = ServerProcess(
        url=f"http://127.0.0.1:{free_port()}", datastore=datastore, models_dir=models_dir, app_dir=APP_DIR,
        log_path=root / "server.log", env=env,
        sample_image_id=next(r.image for r in records if r.label == "normal"),
        unlabelled_ids=sorted(r.image for r in records if r.label is None),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(root / "sessions", ignore_errors=True)
