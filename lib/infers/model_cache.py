"""One loaded model per model directory, reloaded when the directory changes.

Trainers publish a new model by swapping a whole directory into place (see
:mod:`lib.trainers.publish`), so the infer tasks notice a retrained model by a
change of the directory's fingerprint and reload it on the next request: no
server restart. Between two requests nothing is re-read.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lib.errors import NotTrainedError

_CACHES: dict[str, "ModelCache"] = {}
_CACHES_LOCK = threading.Lock()


def fingerprint(model_dir: Path) -> tuple | None:
    """Identity of a model directory's content: its inode plus name, size and mtime of each file; None if absent."""
    try:
        st = os.stat(model_dir)
        entries = sorted(os.scandir(model_dir), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    files = tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file())
    return (st.st_ino, files)


class ModelCache:
    """Load a model with ``loader(model_dir, device)`` once; reload when :func:`fingerprint` changes.

    Use :meth:`for_dir` so that every task serving one directory (the ``loris``
    infer tasks, the scoring method) shares one loaded copy.
    """

    def __init__(self, model_dir: Path, loader: Callable[[Path, str], Any], name: str):
        self.model_dir = Path(model_dir)
        self.name = name
        self._loader = loader
        self._lock = threading.Lock()
        self._cached: tuple | None = None  # (fingerprint, device, model)

    @classmethod
    def for_dir(cls, model_dir: Path, loader: Callable[[Path, str], Any], name: str) -> "ModelCache":
        key = str(Path(model_dir).resolve())
        with _CACHES_LOCK:
            if key not in _CACHES:
                _CACHES[key] = cls(Path(model_dir), loader, name)
            return _CACHES[key]

    def version(self) -> str | None:
        """A short string that changes whenever the model changes; None when there is no model directory."""
        fp = fingerprint(self.model_dir)
        return None if fp is None else hashlib.sha1(repr(fp).encode()).hexdigest()[:12]

    def get(self, device: str = "cpu"):
        """The loaded model for ``device``.

        Raises:
            NotTrainedError: no model directory yet.
            ModelError / NotTrainedError: whatever the loader raises for an incomplete directory.
        """
        with self._lock:
            fp = fingerprint(self.model_dir)
            if fp is None and self._cached is not None:
                # a trainer is swapping the directory: it is back within milliseconds
                for _ in range(50):
                    time.sleep(0.02)
                    fp = fingerprint(self.model_dir)
                    if fp is not None:
                        break
            if fp is None:
                raise NotTrainedError(f"no {self.name} model at {self.model_dir}; train it first (POST /train/{self.name})")
            if self._cached is not None and self._cached[0] == fp and self._cached[1] == device:
                return self._cached[2]
            model = self._loader(self.model_dir, device)
            self._cached = (fp, device, model)
            return model
