"""The app's own settings, parsed once from ``monailabel start_server --conf KEY VALUE``.

=====================  =========================================  =====================
``--conf`` key         meaning                                    default
=====================  =========================================  =====================
``models_dir``         where the ``loris`` and ``recess_detection``  ``<app>/model``
                       model directories live
``max_upload_bytes``   largest accepted image upload, bytes        67108864 (64 MiB)
``max_image_pixels``   largest accepted image, width x height      16777216 (4096 x 4096)
``train_preset``       defaults declared for ``/train``:           ``quick``
                       ``quick`` (CPU preset) or ``paper``
=====================  =========================================  =====================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.datastore import UploadLimits
from lib.errors import DataError

PRESETS = ("quick", "paper")
KEYS = ("models_dir", "max_upload_bytes", "max_image_pixels", "train_preset")


def _positive_int(conf: dict, key: str, default: int) -> int:
    value = conf.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DataError(f"--conf {key}: expected a positive integer, got {value!r}") from None
    if number < 1:
        raise DataError(f"--conf {key}: expected a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class AppConfig:
    """Typed ``--conf`` of the app (see the module docstring for keys and defaults)."""

    models_dir: Path
    limits: UploadLimits
    train_preset: str = "quick"

    @property
    def loris_dir(self) -> Path:
        """The LoRIS model directory (``lib.loris`` format)."""
        return self.models_dir / "loris"

    @property
    def detector_dir(self) -> Path:
        """The recess detector model directory (``lib.detection`` format)."""
        return self.models_dir / "recess_detection"

    @classmethod
    def from_conf(cls, conf: dict | None, app_dir: str | Path) -> "AppConfig":
        """Parse MONAI Label's string ``conf``; unknown keys of ours are not an error (MONAI Label has its own)."""
        conf = dict(conf or {})
        models_dir = Path(conf.get("models_dir") or Path(app_dir) / "model").expanduser().resolve()
        preset = conf.get("train_preset", "quick")
        if preset not in PRESETS:
            raise DataError(f"--conf train_preset: unknown value {preset!r}; valid values are {', '.join(PRESETS)}")
        limits = UploadLimits(
            max_bytes=_positive_int(conf, "max_upload_bytes", UploadLimits.max_bytes),
            max_pixels=_positive_int(conf, "max_image_pixels", UploadLimits.max_pixels),
        )
        return cls(models_dir=models_dir, limits=limits, train_preset=preset)
