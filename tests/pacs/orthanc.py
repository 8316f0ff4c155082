"""A real Orthanc PACS with its DICOMweb plugin for the tests: located, installed when possible, started, stopped.

``python -m tests.pacs.orthanc install`` (``make test`` runs it first) installs the Debian
packages ``orthanc`` and ``orthanc-dicomweb`` with apt-get when they are missing and this
machine allows it (root, or password-less sudo); it never fails the build, it says what it
did. :func:`locate` finds the server binary and the plugin; :class:`Orthanc` runs one
server on a free loopback port with a temporary storage folder (no DICOM port, remote
access off), and stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("orthanc", "orthanc-dicomweb")
PLUGIN_NAMES = ("libOrthancDicomWeb.so",)
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins",
               "/usr/lib/x86_64-linux-gnu/orthanc/plugins")
BINARY_NAMES = ("Orthanc", "orthanc")
INSTALL_TIMEOUT_S = 900


def locate() -> tuple[str, str] | None:
    """``(Orthanc binary, DICOMweb plugin)`` when both are installed, else None."""
    binary = next((found for name in BINARY_NAMES for found in [shutil.which(name)] if found), None)
    if binary is None:
        binary = next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)
    plugin = next((str(Path(d) / n) for d in PLUGIN_DIRS for n in PLUGIN_NAMES if (Path(d) / n).is_file()), None)
    return (binary, plugin) if binary and plugin else None


def _privilege() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with password-less sudo, else None."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def install() -> str:
    """Install the packages when missing and possible; returns what happened, in words (never raises)."""
    if locate() is not None:
        return "Orthanc and its DICOMweb plugin are installed"
    if not shutil.which("apt-get"):
        return "Orthanc is not installed and this machine has no apt-get to install it"
    prefix = _privilege()
    if prefix is None:
        return "Orthanc is not installed and apt-get needs root (or password-less sudo) to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [prefix + ["apt-get", "update", "-q"],
             prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]]
    for step in steps:
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"installing Orthanc failed: {' '.join(step)}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"installing Orthanc failed: {' '.join(step)} exited {done.returncode}: {' | '.join(tail)}"
    return "installed " + " ".join(PACKAGES) if locate() else "apt-get ran but Orthanc or its plugin is still missing"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """One Orthanc server with the DICOMweb plugin, storing into ``folder``.

    Attributes:
        url: its REST root ``http://127.0.0.1:<port>``; :attr:`dicomweb` is the DICOMweb root.
    """

    binary: str
    plugin: str
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 60.0) -> "Orthanc":
        import requests

        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "LoRIS-test-PACS", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([self.binary, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.folder, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.dicomweb}/studies", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.folder / "orthanc.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def store(self, paths) -> None:
        """Upload DICOM files through STOW-RS (what a modality or a PACS gateway does)."""
        import pydicom
        from dicomweb_client import DICOMwebClient

        DICOMwebClient(self.dicomweb).store_instances([pydicom.dcmread(str(p)) for p in paths])


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        print(f"orthanc: {install()}")
        return 0
    found = locate()
    print(f"orthanc: {found if found else 'not installed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
