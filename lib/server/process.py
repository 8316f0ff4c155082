"""Start and stop a real ``monailabel start_server`` of this app as a subprocess.

:func:`start_server` runs ``python -m monailabel.main start_server --app APP
--studies DATASTORE --conf KEY VALUE ... --host HOST --port PORT`` in its own
process group, with this repository on ``PYTHONPATH``, its output appended to a
log file, and returns once ``GET /info/`` answers 200 (or raises
:class:`ServerError` with the log's tail when the process exits or the timeout
passes). :meth:`ServerHandle.stop` ends the whole process group (the server and
the training/scoring children MONAI Label starts), politely first.

Used by ``python -m lib bench`` and the tests' ``server`` fixture; the first-run
setup (``make run``) runs the same :func:`server_command` in the foreground. The host defaults to ``127.0.0.1`` (this machine only).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib.errors import LorisError

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "monailabel_app"
STARTUP_TIMEOUT_S = 120.0

QUIET_ENV = {
    "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    "MONAI_LABEL_TRACKING_ENABLED": "false",
}
"""Environment for a server under measurement or test: no background scoring, no request tracking."""


class ServerError(LorisError):
    """The server did not start (the message carries the tail of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    """A running server.

    Attributes:
        url: ``http://HOST:PORT`` (no trailing slash).
        command: the command line that started it.
        env: its environment.
        log_path: where its stdout and stderr go.
        process: the ``Popen`` of the server (leader of its own process group).
    """

    url: str
    command: list[str]
    env: dict
    log_path: Path
    cwd: Path
    process: subprocess.Popen | None = None
    started_s: float = field(default=0.0)
    """Seconds from the process start until ``/info/`` answered."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> "ServerHandle":
        """Start the process and wait until it answers (see :meth:`wait_ready`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Poll ``GET /info/`` every 0.5 s until it answers 200; :class:`ServerError` on exit or timeout."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the MONAI Label server exited with code {self.process.returncode}; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise ServerError(f"the MONAI Label server did not answer {self.url}/info/ within {timeout:.0f} s; "
                          f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout`` seconds; no-op when not running."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server's whole process group at once (a crash: nothing gets to clean up)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_url(studies) -> bool:
    return str(studies).startswith(("http://", "https://"))


def server_command(app_dir: str | os.PathLike, studies: str | os.PathLike, conf: dict | None, host: str,
                   port: int) -> list[str]:
    """The ``monailabel start_server`` command line (``conf`` values become ``--conf KEY VALUE`` pairs).

    ``studies`` is a datastore folder or the URL of a DICOMweb server (``http://HOST/dicom-web``)."""
    studies = str(studies) if _is_url(studies) else str(Path(studies).resolve())
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(Path(app_dir).resolve()),
           "--studies", studies]
    for key, value in (conf or {}).items():
        cmd += ["--conf", str(key), str(value)]
    return cmd + ["--host", host, "--port", str(int(port))]


def start_server(app_dir: str | os.PathLike = APP_DIR, studies: str | os.PathLike = "", conf: dict | None = None,
                 host: str = "127.0.0.1", port: int | None = None, *, env: dict | None = None,
                 log_path: str | os.PathLike | None = None, timeout: float = STARTUP_TIMEOUT_S) -> ServerHandle:
    """Start ``monailabel start_server`` of ``app_dir`` on the datastore ``studies`` and wait until it answers.

    Args:
        app_dir: the MONAI Label app folder (default: this repository's ``monailabel_app``).
        studies: the datastore folder, or a DICOMweb URL (then give ``log_path``).
        conf: ``--conf`` pairs, e.g. ``{"models_dir": "/path/models"}``.
        host, port: where to listen (port None = a free one).
        env: extra environment variables (over this process's environment; the repository is put on
            ``PYTHONPATH``). Pass :data:`QUIET_ENV` to switch off background scoring and tracking.
        log_path: server output (default: ``server.log`` next to the datastore).
        timeout: seconds to wait for ``/info/``.

    Returns:
        the running :class:`ServerHandle` (use it as a context manager, or call ``stop()``).

    Raises:
        ServerError: the server exited or did not answer in time (with its log's tail).
    """
    if not studies:
        raise ServerError("start_server: a datastore folder (studies) is required")
    port = free_port(host) if port is None else int(port)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    if log_path is None and _is_url(studies):
        raise ServerError("start_server: a DICOMweb datastore needs a log_path")
    log = Path(log_path) if log_path is not None else Path(studies).resolve().parent / "server.log"
    handle = ServerHandle(url=f"http://{host}:{port}", command=server_command(app_dir, studies, conf, host, port),
                          env=full_env, log_path=log, cwd=log.parent)
    return handle.start(timeout)
