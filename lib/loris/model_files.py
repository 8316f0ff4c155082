"""The LoRIS model folder: :class:`~lib.training.model_folder.ModelKind` ``loris-model``, version 2.

``model.pt`` holds, besides ``settings`` and ``state_dict``: ``normalization`` (how the
network saw the images), ``calibration`` (``{metric: {...}}``, :mod:`lib.loris.calibration`)
and ``training`` (the training summary). Version 1 folders (an MSGMS median-filtered once at
full size, and a pixel threshold that segmented the whole box) are refused with the command
that retrains them. See :mod:`lib.training.model_folder` for the layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lib.loris.preprocess import NORMALIZATION
from lib.loris.settings import LorisSettings
from lib.training.model_folder import CHECKPOINT_FILE, INFO_FILE, MODEL_FILE, ModelKind, read_info

__all__ = ["CHECKPOINT_FILE", "INFO_FILE", "KIND", "MODEL_FILE", "ModelBundle", "load_model", "read_info", "save_model"]

KIND = ModelKind(
    format="loris-model",
    version=2,
    what="LoRIS model",
    retrain="python -m lib train --data DIR --out MODEL_DIR, or POST /train/loris on the server",
    old_versions=((1, "version 1 models used an MSGMS that median-filtered once at full size and a pixel "
                      "threshold that segmented the whole box"),),
)


@dataclass
class ModelBundle:
    """A loaded model folder."""

    settings: LorisSettings
    state_dict: dict
    calibration: dict | None = None
    training: dict = field(default_factory=dict)
    normalization: dict = field(default_factory=lambda: dict(NORMALIZATION))
    path: Path | None = None


def save_model(model_dir: str | os.PathLike, settings: LorisSettings, state_dict: dict,
               calibration: dict | None = None, training: dict | None = None) -> Path:
    """Write ``model.pt`` atomically (then ``model.json``) into ``model_dir``; returns the ``model.pt`` path."""
    return KIND.save(model_dir, settings.to_dict(), state_dict, normalization=dict(NORMALIZATION),
                     calibration=calibration, training=training or {})


def load_model(model_dir: str | os.PathLike) -> ModelBundle:
    """Read ``model_dir/model.pt``.

    Raises:
        ModelError: the folder is missing, the file unreadable, or not this version's (every problem listed,
            with the command that retrains it).
        NotTrainedError: the folder exists but holds no model yet.
    """
    settings, data = KIND.load_settings(model_dir, LorisSettings)
    calibration = data.get("calibration")
    return ModelBundle(
        settings=settings,
        state_dict=data["state_dict"],
        calibration=calibration if isinstance(calibration, dict) else None,
        training=data.get("training") or {},
        normalization=data.get("normalization") or dict(NORMALIZATION),
        path=Path(model_dir),
    )
