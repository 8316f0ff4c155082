"""The detector's model folder: :class:`~lib.training.model_folder.ModelKind` ``loris-recess-detector``, version 3.

The layout is every model's (:mod:`lib.training.model_folder`): ``model.pt`` (written
once training has ended and the confidence floor is calibrated), ``model.json`` (the
same without weights, for people) and ``checkpoint_last.pt`` (for ``--resume``).
``model.pt`` holds, besides ``settings`` and ``state_dict``: ``epoch`` (the kept epoch,
counted from 1), ``monitor`` and ``validation`` (the validation metrics of that epoch),
``calibration`` (the confidence floor and what it was fitted on,
:mod:`lib.detection.calibrate`) and ``training`` (the training summary).

Only ``model.pt`` is read for inference: weights and the settings that built them
travel in one file, so they can never come from two different runs. Folders of
earlier versions are refused with the commands that retrain them: version 1 (the
RetinaNet detector) and version 2 (this network in the detector's own layout,
``detector.json`` and ``last.pt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lib.detection.settings import DetectorSettings
from lib.training.model_folder import CHECKPOINT_FILE, INFO_FILE, MODEL_FILE, ModelKind

__all__ = ["CHECKPOINT_FILE", "INFO_FILE", "KIND", "MODEL_FILE", "DetectorBundle", "load_model", "save_model"]

KIND = ModelKind(
    format="loris-recess-detector",
    version=3,
    what="recess detector",
    retrain="python -m lib train-detector --data DIR --out MODEL_DIR, or POST /train/recess_detection on the server",
    old_versions=(
        (1, "version 1 was the RetinaNet detector (another network, no calibrated confidence floor)"),
        (2, "version 2 kept the detector in a folder layout of its own (detector.json, last.pt)"),
    ),
)


@dataclass
class DetectorBundle:
    """A loaded detector folder.

    Attributes:
        settings: the settings the network was built and trained with.
        state_dict: the network's weights.
        info: the rest of ``model.pt``: ``epoch``, ``monitor``, ``validation``, ``calibration``, ``training``.
        path: the folder.
    """

    settings: DetectorSettings
    state_dict: dict
    info: dict = field(default_factory=dict)
    path: Path | None = None


def save_model(model_dir: str | os.PathLike, settings: DetectorSettings, state_dict: dict, *, epoch: int,
               monitor: str, validation: dict, calibration: dict, training: dict) -> Path:
    """Write ``model.pt`` atomically (then ``model.json``) into ``model_dir``; returns the ``model.pt`` path."""
    return KIND.save(model_dir, settings.to_dict(), state_dict, epoch=epoch, monitor=monitor, validation=validation,
                     calibration=calibration, training=training)


def load_model(model_dir: str | os.PathLike) -> DetectorBundle:
    """Read ``model_dir/model.pt``.

    Raises:
        ModelError: the folder is missing, the file unreadable, foreign, of another version or of the older layout
            (the message names the folder and the commands that retrain it).
        NotTrainedError: the folder exists but holds no detector yet.
    """
    settings, data = KIND.load_settings(model_dir, DetectorSettings)
    info = {k: v for k, v in data.items() if k not in ("format", "format_version", "settings", "state_dict")}
    return DetectorBundle(settings=settings, state_dict=data["state_dict"], info=info, path=Path(model_dir))
