"""The base of every model's settings: one dataclass per model, one way to build, check, copy and save it.

A model's settings (:class:`lib.loris.settings.LorisSettings`,
:class:`lib.detection.settings.DetectorSettings`) is a dataclass deriving from
:class:`ModelSettings`. It defines its fields with the paper's (or the model's
full) defaults, :meth:`ModelSettings.validate`, and :data:`ModelSettings.QUICK`,
the overrides of its CPU preset. Every field shared by the training loop has the
same name in both: ``max_epochs``, ``patience``, ``batch_size``,
``learning_rate``, ``valid_fraction``, ``seed``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, TypeVar

from lib.errors import DataError

S = TypeVar("S", bound="ModelSettings")


class ModelSettings:
    """Methods shared by the models' settings dataclasses (see the module docstring)."""

    QUICK: ClassVar[dict] = {}
    """Field overrides of the CPU preset (:meth:`quick`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    def validate(self: S) -> S:
        """Check every field; raise :class:`DataError` naming the field and what is valid."""
        raise NotImplementedError

    @classmethod
    def quick(cls: type[S], **overrides) -> S:
        """The CPU preset: the defaults with :data:`QUICK`, then ``overrides``."""
        return cls(**{**cls.QUICK, **overrides})

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls: type[S], data: dict, where: str = "settings") -> S:
        """Build from a dict (``to_dict`` output or user input); unknown keys are an error listing the known ones."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"{where}: unknown setting(s) {', '.join(unknown)}; known settings are {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DataError(f"{where}: {exc}") from None

    def replace(self: S, **changes) -> S:
        """A validated copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
