"""The detector's model directory: what is saved, and reading it back with clear errors.

Layout of ``MODEL_DIR``::

    model.pt       the best checkpoint, self-contained: {"format", "version", "settings",
                   "network" (state dict), "epoch", "monitor", "validation", "calibration"
                   (the confidence floor and what it was fitted on)}; written to a
                   temporary file and renamed, so it is never half-written
    detector.json  the same information without weights, plus the training summary (for people)
    last.pt        the state after the latest epoch (network, optimizer, early-stopping state,
                   history), used by ``--resume``; also written atomically

Only ``model.pt`` is needed for inference: weights and the settings that built
them travel in one file, so they can never come from two different runs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from lib.data.atomic import write_bytes, write_json
from lib.errors import ModelError, NotTrainedError

FORMAT = "loris-recess-detector"
VERSION = 2
"""Version 1 was the RetinaNet detector (other network, no calibrated floor): such folders must be retrained."""
BEST = "model.pt"
LAST = "last.pt"
INFO = "detector.json"


def _save_torch(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_best(model_dir: str | os.PathLike, *, settings: dict, network_state: dict, epoch: int, monitor: str,
              validation: dict, calibration: dict | None = None) -> None:
    """Write ``model.pt`` (weights + settings) atomically, then ``detector.json``.

    ``calibration`` is None while training runs (the floor is fitted on the best model at the end).
    """
    model_dir = Path(model_dir)
    info = {"format": FORMAT, "version": VERSION, "settings": settings, "epoch": epoch, "monitor": monitor,
            "validation": validation, "calibration": calibration}
    _save_torch(model_dir / BEST, {**info, "network": network_state})
    write_json(model_dir / INFO, info)


def write_info(model_dir: str | os.PathLike, info: dict) -> None:
    """Rewrite ``detector.json`` (human-readable; never read for inference)."""
    write_json(Path(model_dir) / INFO, {"format": FORMAT, "version": VERSION, **info})


def save_last(model_dir: str | os.PathLike, state: dict) -> None:
    """Write the resumable training state ``last.pt`` atomically."""
    _save_torch(Path(model_dir) / LAST, {"format": FORMAT, "version": VERSION, **state})


def _load(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ModelError(f"{path}: not a readable detector checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path}: not a recess-detector checkpoint (expected format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ModelError(
            f"{path}: detector format version {data.get('version')!r} is not supported by this code "
            f"(expected {VERSION}: the detector's network changed); retrain it with "
            f"`python -m lib train-detector --data DATA_DIR --out {path.parent}`"
        )
    return data


def load_best(model_dir: str | os.PathLike) -> dict:
    """Read ``model.pt`` of a model directory.

    Raises:
        ModelError: the directory does not exist, or the file is corrupt, foreign or of another version.
        NotTrainedError: the directory exists but holds no trained detector yet.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such detector model directory")
    path = model_dir / BEST
    if not path.is_file():
        raise NotTrainedError(
            f"{model_dir}: no trained detector here ({BEST} is missing); "
            f"train one with `python -m lib train-detector --data DIR --out {model_dir}`"
        )
    data = _load(path)
    for key in ("settings", "network"):
        if key not in data:
            raise ModelError(f"{path}: checkpoint has no {key!r} entry")
    return data


def load_last(model_dir: str | os.PathLike) -> dict | None:
    """Read the resumable state ``last.pt``, or None when there is none."""
    path = Path(model_dir) / LAST
    return _load(path) if path.is_file() else None
