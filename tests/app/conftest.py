"""The ``secured_server`` fixture: a second real server, as a site would run it on a network.

A copy of the ``server`` fixture's datastore and models, served by
``monailabel start_server`` (bound to 127.0.0.1) with an access token read from a
file (``LORIS_AUTH_TOKEN_FILE``), one allowed CORS origin, and its own temporary
folder (``TMPDIR``), so that tests can check that nothing is left in it.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import APP_DIR, STARTUP_TIMEOUT_S

ALLOWED_ORIGIN = "https://viewer.example.org"


@dataclass
class SecuredServer:
    """A running server with an access token.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        token: the access token (also in ``token_file``).
        datastore, models_dir: its own copies.
        tmp_dir: the server's ``TMPDIR``.
        tmp_at_start: what ``tmp_dir`` held once the server answered (MONAI Label's start-up writes a
            logging config there, once per start).
        outside: a folder beside the datastore holding a readable image (never to be served).
    """

    url: str
    token: str
    token_file: Path
    datastore: Path
    models_dir: Path
    tmp_dir: Path
    outside: Path
    log_path: Path
    env: dict = field(default_factory=dict)
    conf: dict = field(default_factory=dict)
    handle: object = None
    tmp_at_start: set = field(default_factory=set)

    @property
    def auth(self) -> dict:
        """The header of an authenticated request."""
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        from lib.server.process import start_server

        port = int(self.url.rsplit(":", 1)[1])
        self.handle = start_server(APP_DIR, self.datastore, self.conf, "127.0.0.1", port, env=self.env,
                                   log_path=self.log_path, timeout=STARTUP_TIMEOUT_S)
        self.tmp_at_start = set(self.tmp_dir.iterdir())

    def kill(self) -> None:
        self.handle.kill()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()


@pytest.fixture(scope="session")
def secured_server(server, tmp_path_factory):
    from lib.server.process import QUIET_ENV, free_port

    root = tmp_path_factory.mktemp("secured")
    datastore, models_dir = root / "datastore", root / "models"
    shutil.copytree(server.datastore, datastore, ignore=shutil.ignore_patterns(".lock", ".uploads"))
    shutil.copytree(server.models_dir, models_dir)
    token = secrets.token_urlsafe(24)
    token_file = root / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    tmp_dir, outside = root / "tmp", root / "outside"
    tmp_dir.mkdir()
    outside.mkdir()
    shutil.copy(next(datastore.glob("*.png")), outside / "secret.png")
    env = {**QUIET_ENV, "TMPDIR": str(tmp_dir), "LORIS_AUTH_TOKEN_FILE": str(token_file),
           "MONAI_LABEL_SESSION_PATH": str(root / "sessions"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    conf = {"models_dir": models_dir, "max_upload_bytes": 2_000_000, "max_image_pixels": 1_000_000,
            "cors_origins": ALLOWED_ORIGIN}
    secured = SecuredServer(url=f"http://127.0.0.1:{free_port()}", token=token, token_file=token_file,
                            datastore=datastore, models_dir=models_dir, tmp_dir=tmp_dir, outside=outside,
                            log_path=root / "server.log", env=env, conf=conf)
    secured.start()
    try:
        yield secured
    finally:
        secured.stop()
