"""The one model-folder format of every model the project trains (LoRIS, the recess detector).

Layout of ``MODEL_DIR``::

    model.pt            the model, one file written atomically (temporary file, then rename):
                        {"format": <kind>, "format_version": <n>, "settings": {...},
                         "state_dict": {...}, ...what the model adds (calibration, training summary)}
    model.json          the same without the weights, for people and tools (never read back)
    checkpoint_last.pt  the last training epoch, for ``--resume``: {"format", "format_version",
                        "settings", "epoch", "network", "optimizer", "best_state", "history", ...}

``model.pt`` is written only once training has ended (and the model is calibrated), so a
model in the folder keeps serving while a new one trains. Files are loaded with
``torch.load(weights_only=True)``: they hold only tensors and plain JSON types.

A :class:`ModelKind` names a model's format and version and the commands that retrain it;
a folder of another version, or of the layout before this one (``detector.json``,
``last.pt``, a ``version`` key), is refused with a message that names the folder and
those commands. Saving a model into a folder of the older layout removes its old files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.data.atomic import atomic_path, write_json
from lib.errors import DataError, ModelError, NotTrainedError

MODEL_FILE = "model.pt"
INFO_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint_last.pt"
OLD_LAYOUT_FILES = ("detector.json", "last.pt")
"""Files of the layout before this one: a folder holding them was written by an older version."""


def _torch_save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _torch_load(path: Path, what: str) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a {what} (expected a dict, got {type(data).__name__})")
    return data


@dataclass(frozen=True)
class ModelKind:
    """One model's folder format.

    Attributes:
        format: the ``format`` string written in every file (``"loris-model"``).
        version: the ``format_version`` this code writes and reads.
        what: the model's name in messages (``"LoRIS model"``).
        retrain: how to train one, named in messages (``"python -m lib train --data DIR --out MODEL_DIR, or POST
            /train/loris"``); ``MODEL_DIR`` is replaced by the folder in question.
        old_versions: ``{version: why it is refused}`` for earlier versions, added to their message (the
            ``format_version``, or for a folder of the older layout its ``version``).
    """

    format: str
    version: int
    what: str
    retrain: str
    old_versions: tuple[tuple[int, str], ...] = ()

    def retrain_in(self, model_dir: str | os.PathLike) -> str:
        """:attr:`retrain` for the folder ``model_dir``."""
        return self.retrain.replace("MODEL_DIR", str(model_dir))

    # --- the model ---------------------------------------------------------------------------------------------
    def save(self, model_dir: str | os.PathLike, settings: dict, state_dict: dict, **meta) -> Path:
        """Write ``model.pt`` atomically, then ``model.json``; returns the ``model.pt`` path.

        Files of the older layout in ``model_dir`` (:data:`OLD_LAYOUT_FILES`) are removed first: the folder then
        holds this model only.
        """
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in OLD_LAYOUT_FILES:
            (model_dir / name).unlink(missing_ok=True)
        info = {"format": self.format, "format_version": self.version, "settings": settings, **meta}
        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        _torch_save_atomic({**info, "state_dict": state}, model_dir / MODEL_FILE)
        write_json(model_dir / INFO_FILE, info)
        return model_dir / MODEL_FILE

    def load(self, model_dir: str | os.PathLike) -> dict:
        """``model.pt`` of ``model_dir`` as a dict (``settings``, ``state_dict`` and what the model added).

        Raises:
            ModelError: the folder is missing, the file unreadable, foreign, of another version or of the older
                layout (the message lists every problem and names :attr:`retrain`).
            NotTrainedError: the folder exists but holds no model yet.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"{model_dir}: {self.what} directory not found")
        path = model_dir / MODEL_FILE
        old_layout = [name for name in OLD_LAYOUT_FILES if (model_dir / name).is_file()]
        retrain = self.retrain_in(model_dir)
        if not path.is_file():
            if (model_dir / CHECKPOINT_FILE).is_file():
                raise NotTrainedError(f"{model_dir}: no trained {self.what} ({MODEL_FILE} missing) (training has "
                                      f"started: a checkpoint exists); train one first: {retrain}")
            raise NotTrainedError(f"{model_dir}: no trained {self.what} ({MODEL_FILE} missing); "
                                  f"train one first: {retrain}")
        data = _torch_load(path, self.what)
        problems = []
        if data.get("format") != self.format:
            problems.append(f"format is {data.get('format')!r}, expected {self.format!r}")
        version = data.get("format_version", data.get("version"))
        if old_layout or "format_version" not in data:
            problems.append("it was written by an older version of this project (" +
                            (", ".join(old_layout) if old_layout else "a 'version' key") + ")")
            if data.get("format") == self.format:
                problems += [why for old, why in self.old_versions if old == version]
        elif version != self.version:
            problems.append(f"format_version is {version!r}, this code reads version {self.version}")
            problems += [why for old, why in self.old_versions if old == version]
        for key in ("settings", "state_dict"):
            if not problems and not isinstance(data.get(key), dict):
                problems.append(f"{key!r} is missing")
        if problems:
            raise ModelError(f"{path}: incompatible {self.what}: " + "; ".join(problems) + f"; retrain it: {retrain}")
        return data

    def load_settings(self, model_dir: str | os.PathLike, settings_type: type) -> tuple:
        """``(settings, data)``: :meth:`load`'s dict and its ``settings`` built as ``settings_type``
        (a :class:`~lib.training.settings.ModelSettings`).

        Raises:
            ModelError: what :meth:`load` raises, or settings this code does not know (named, with the retrain
                commands).
            NotTrainedError: the folder exists but holds no model yet.
        """
        data = self.load(model_dir)
        try:
            settings = settings_type.from_dict(data["settings"], where="settings")
        except DataError as exc:
            raise ModelError(f"{Path(model_dir) / MODEL_FILE}: incompatible {self.what}: {exc}; retrain it: "
                             f"{self.retrain_in(model_dir)}") from None
        return settings, data

    # --- the training checkpoint -------------------------------------------------------------------------------
    def save_checkpoint(self, model_dir: str | os.PathLike, state: dict) -> None:
        """Write the resumable training state atomically (``checkpoint_last.pt``)."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        _torch_save_atomic({"format": self.format, "format_version": self.version, **state},
                           model_dir / CHECKPOINT_FILE)

    def load_checkpoint(self, model_dir: str | os.PathLike) -> dict | None:
        """The state :meth:`save_checkpoint` wrote, or None when there is none.

        Raises:
            ModelError: the checkpoint is unreadable, foreign or of another version.
        """
        path = Path(model_dir) / CHECKPOINT_FILE
        if not path.is_file():
            return None
        data = _torch_load(path, f"{self.what} training checkpoint")
        if data.get("format") != self.format or data.get("format_version") != self.version:
            raise ModelError(f"{path}: training checkpoint of another model or version; train without --resume "
                             "(or delete the checkpoint)")
        return data


def load_weights(network: torch.nn.Module, state_dict: dict, model_dir: str | os.PathLike,
                 what: str = "weights") -> torch.nn.Module:
    """Load a saved ``state_dict`` into the ``network`` its settings built; weights that do not fit (another
    shape, missing or extra layers) raise :class:`ModelError` naming ``model_dir``. Returns ``network``."""
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ModelError(f"{model_dir}: {what} do not match the saved network settings ({exc})") from None
    return network


def read_info(model_dir: str | os.PathLike) -> dict | None:
    """``model.json`` as a dict (for display), or None when absent or unreadable."""
    try:
        return json.loads((Path(model_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
