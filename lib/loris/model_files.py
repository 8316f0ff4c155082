"""The model directory: everything needed to use a trained LoRIS model, and the training checkpoint.

Layout of ``MODEL_DIR``::

    model.pt            the model, one file written atomically (temporary file, then rename):
                        {"format": "loris-model", "format_version": 2, "settings": {...},
                         "normalization": {...}, "calibration": {metric: {...}} | None,
                         "training": {...}, "state_dict": {...}}
    model.json          the same without the weights, for people and tools (written after model.pt;
                        never read back by the loader)
    checkpoint_last.pt  the last training epoch (network, optimizer, history, split), for ``--resume``

``model.pt`` is loaded with ``torch.load(weights_only=True)``: it holds only
tensors and plain JSON types. :func:`load_model` raises
:class:`~lib.errors.NotTrainedError` when the directory has no model yet and
:class:`~lib.errors.ModelError` (listing every problem) when it is missing,
unreadable or from an incompatible format version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib.data.atomic import atomic_path, write_json
from lib.errors import DataError, ModelError, NotTrainedError
from lib.loris.preprocess import NORMALIZATION
from lib.loris.settings import LorisSettings

FORMAT = "loris-model"
FORMAT_VERSION = 2
"""2: the reference network, anomaly maps and loss median-filtered at every scale, and a pixel threshold
capped on normal boxes. Version 1 folders were trained and calibrated with the earlier definitions: they are
refused with the command that retrains them (:data:`RETRAIN`)."""
RETRAIN = "retrain it: python -m lib train --data DIR --out MODEL_DIR, or POST /train/loris on the server"
MODEL_FILE = "model.pt"
INFO_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint_last.pt"


@dataclass
class ModelBundle:
    """A loaded model directory."""

    settings: LorisSettings
    state_dict: dict
    calibration: dict | None = None
    training: dict = field(default_factory=dict)
    normalization: dict = field(default_factory=lambda: dict(NORMALIZATION))
    path: Path | None = None


def _torch_save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(model_dir: str | os.PathLike, settings: LorisSettings, state_dict: dict,
               calibration: dict | None = None, training: dict | None = None) -> Path:
    """Write ``model.pt`` atomically (then ``model.json``) into ``model_dir``; returns the ``model.pt`` path."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings.to_dict(),
        "normalization": dict(NORMALIZATION),
        "calibration": calibration,
        "training": training or {},
    }
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    _torch_save_atomic({**meta, "state_dict": state}, model_dir / MODEL_FILE)
    write_json(model_dir / INFO_FILE, meta)
    return model_dir / MODEL_FILE


def load_model(model_dir: str | os.PathLike) -> ModelBundle:
    """Read ``model_dir/model.pt``.

    Raises:
        ModelError: the directory is missing, the file unreadable, or its format is not this version's
            (the message lists every problem found).
        NotTrainedError: the directory exists but holds no model yet.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model directory not found")
    path = model_dir / MODEL_FILE
    if not path.is_file():
        extra = " (training has started: a checkpoint exists)" if (model_dir / CHECKPOINT_FILE).is_file() else ""
        raise NotTrainedError(f"{model_dir}: no trained LoRIS model ({MODEL_FILE} missing){extra}; train one first")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"{path}: not a readable LoRIS model ({type(exc).__name__}: {exc})") from None
    problems = []
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a LoRIS model (expected a dict, got {type(data).__name__})")
    if data.get("format") != FORMAT:
        problems.append(f"format is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version is {data.get('format_version')!r}, this code reads version {FORMAT_VERSION}")
        if data.get("format_version") == 1:
            problems.append("version 1 models used an MSGMS that median-filtered once at full size and a pixel "
                            "threshold that segmented the whole box")
    for key in ("settings", "state_dict"):
        if not isinstance(data.get(key), dict):
            problems.append(f"{key!r} is missing")
    settings = None
    if not problems:
        try:
            settings = LorisSettings.from_dict(data["settings"], where="settings")
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise ModelError(f"{path}: incompatible LoRIS model: " + "; ".join(problems) + f"; {RETRAIN}")
    calibration = data.get("calibration")
    return ModelBundle(
        settings=settings,
        state_dict=data["state_dict"],
        calibration=calibration if isinstance(calibration, dict) else None,
        training=data.get("training") or {},
        normalization=data.get("normalization") or dict(NORMALIZATION),
        path=model_dir,
    )


def read_info(model_dir: str | os.PathLike) -> dict | None:
    """``model.json`` as a dict (for display), or None when absent or unreadable."""
    try:
        return json.loads((Path(model_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def save_checkpoint(model_dir: str | os.PathLike, state: dict) -> None:
    """Write the resumable training state atomically (``checkpoint_last.pt``)."""
    _torch_save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, Path(model_dir) / CHECKPOINT_FILE)


def load_checkpoint(model_dir: str | os.PathLike) -> dict | None:
    """The training state saved by :func:`save_checkpoint`, or None when there is none.

    Raises:
        ModelError: the checkpoint is unreadable or from another format version.
    """
    path = Path(model_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: unreadable training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: training checkpoint from an incompatible version; train without --resume "
                         "(or delete the checkpoint)")
    return data
