"""The app's own settings, parsed once from ``monailabel start_server --conf KEY VALUE`` and the environment.

=====================  =========================================  =====================
``--conf`` key         meaning                                    default
=====================  =========================================  =====================
``models_dir``         where the ``loris`` and ``recess_detection``  ``<app>/model``
                       model directories live
``max_upload_bytes``   largest accepted image or label upload,     67108864 (64 MiB)
                       bytes (datastore and infer)
``max_image_pixels``   largest accepted image, width x height      16777216 (4096 x 4096)
                       (read from the header, before decoding)
``max_frames``         most frames of an accepted DICOM cine       500
                       loop (read from the header)
``max_model_bytes``    largest accepted ``PUT /model/<name>``      1073741824 (1 GiB)
``train_preset``       defaults declared for ``/train``:           ``quick``
                       ``quick`` (CPU preset) or ``paper``
``auth_token_file``    file holding the access token (or env       none
                       ``LORIS_AUTH_TOKEN_FILE``; env
                       ``LORIS_AUTH_TOKEN`` holds the token itself)
``auth_scope``         what needs the token: ``writes``            ``writes``
                       (training, label/image writes, models,
                       logs, scoring, batch infer) or ``all``
                       (every request but the docs and login)
``cors_origins``       comma-separated browser origins allowed     none
                       to call the server (e.g.
                       ``https://viewer.example.org``)
``dicomweb_filter``    with ``--studies http://.../dicom-web``:    ``{"Modality": "US"}``
                       the QIDO-RS filter of the PACS's instances
                       (a JSON object; MONAI Label's own
                       ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``,
                       whose default lists CT, is not used)
``dicomweb_store``     with a DICOMweb ``--studies``: the local    ``<app>/dicomweb/<hash
                       folder beside the PACS holding retrieved    of the URL>``
                       images, labels and the index
=====================  =========================================  =====================

The token is never passed on the command line (``ps`` shows it to every user of the
machine): ``--conf`` takes the path of a file that holds it.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lib.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    """Largest image upload the datastore and the infer tasks accept.

    Attributes:
        max_bytes: file size in bytes.
        max_pixels: width x height in pixels (checked from the header before decoding).
        max_frames: frames of a DICOM cine loop (checked from the header before decoding).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_frames: int = 500

PRESETS = ("quick", "paper")
AUTH_SCOPES = ("writes", "all")
KEYS = ("models_dir", "max_upload_bytes", "max_image_pixels", "max_frames", "max_model_bytes", "train_preset",
        "auth_token_file", "auth_scope", "cors_origins", "dicomweb_filter", "dicomweb_store")
TOKEN_FILE_ENV = "LORIS_AUTH_TOKEN_FILE"
TOKEN_ENV = "LORIS_AUTH_TOKEN"
MIN_TOKEN_CHARS = 16
DEFAULT_MAX_MODEL_BYTES = 1024 ** 3


def _positive_int(conf: dict, key: str, default: int) -> int:
    value = conf.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DataError(f"--conf {key}: expected a positive integer, got {value!r}") from None
    if number < 1:
        raise DataError(f"--conf {key}: expected a positive integer, got {value!r}")
    return number


def read_auth_token(conf: dict, environ) -> str | None:
    """The access token: from ``--conf auth_token_file``, else ``$LORIS_AUTH_TOKEN_FILE``, else ``$LORIS_AUTH_TOKEN``.

    Returns:
        the token, or None when none is configured.

    Raises:
        DataError: the file cannot be read, or the token is shorter than :data:`MIN_TOKEN_CHARS`
            characters or holds spaces or control characters.
    """
    path = conf.get("auth_token_file") or environ.get(TOKEN_FILE_ENV)
    if path:
        path = Path(path).expanduser()
        source = f"auth token file {path}"
        try:
            token = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{source}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning(f"{source} can be read by other users; chmod 600 it")
    elif environ.get(TOKEN_ENV):
        source, token = f"${TOKEN_ENV}", environ[TOKEN_ENV].strip()
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or any(c.isspace() for c in token):
        raise DataError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} printable characters without spaces; make one "
            "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def _search_filter(conf: dict) -> dict:
    """The DICOMweb instance filter: ``--conf dicomweb_filter`` (JSON), else ultrasound.

    MONAI Label's ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` is not read: ``start_server`` exports every
    setting into the environment, so its CT default cannot be told from a user's choice.
    """
    import json

    text, source = conf.get("dicomweb_filter"), "--conf dicomweb_filter"
    if text is None:
        return {"Modality": "US"}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise DataError(f"{source}: not JSON ({exc}); e.g. '{{\"Modality\": \"US\"}}'") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float)) and
                                              not isinstance(v, bool) for k, v in value.items()):
        raise DataError(f"{source}: expected a JSON object of DICOM attribute keywords to values, "
                        f"e.g. {{\"Modality\": \"US\"}}, got {text!r}")
    return value


def _origins(value) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in str(value or "").split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise DataError(f"--conf cors_origins: {origin!r} is not an origin like https://viewer.example.org")
    return origins


@dataclass(frozen=True)
class AppConfig:
    """Typed ``--conf`` of the app (see the module docstring for keys and defaults)."""

    models_dir: Path
    limits: UploadLimits
    train_preset: str = "quick"
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    auth_token: str | None = field(default=None, repr=False)
    auth_scope: str = "writes"
    cors_origins: tuple[str, ...] = ()
    dicomweb_filter: dict = field(default_factory=lambda: {"Modality": "US"})
    dicomweb_store: Path | None = None

    @property
    def loris_dir(self) -> Path:
        """The LoRIS model directory (``lib.loris`` format)."""
        return self.models_dir / "loris"

    @property
    def detector_dir(self) -> Path:
        """The recess detector model directory (``lib.detection`` format)."""
        return self.models_dir / "recess_detection"

    @classmethod
    def from_conf(cls, conf: dict | None, app_dir: str | Path, environ=None) -> "AppConfig":
        """Parse MONAI Label's string ``conf``; unknown keys of ours are not an error (MONAI Label has its own).

        Args:
            environ: where the ``LORIS_AUTH_TOKEN*`` variables are read (default ``os.environ``).
        """
        conf = dict(conf or {})
        environ = os.environ if environ is None else environ
        models_dir = Path(conf.get("models_dir") or Path(app_dir) / "model").expanduser().resolve()
        preset = conf.get("train_preset", "quick")
        if preset not in PRESETS:
            raise DataError(f"--conf train_preset: unknown value {preset!r}; valid values are {', '.join(PRESETS)}")
        scope = conf.get("auth_scope", "writes")
        if scope not in AUTH_SCOPES:
            raise DataError(f"--conf auth_scope: unknown value {scope!r}; valid values are {', '.join(AUTH_SCOPES)}")
        limits = UploadLimits(
            max_bytes=_positive_int(conf, "max_upload_bytes", UploadLimits.max_bytes),
            max_pixels=_positive_int(conf, "max_image_pixels", UploadLimits.max_pixels),
            max_frames=_positive_int(conf, "max_frames", UploadLimits.max_frames),
        )
        return cls(models_dir=models_dir, limits=limits, train_preset=preset,
                   max_model_bytes=_positive_int(conf, "max_model_bytes", DEFAULT_MAX_MODEL_BYTES),
                   auth_token=read_auth_token(conf, environ), auth_scope=scope,
                   cors_origins=_origins(conf.get("cors_origins")), dicomweb_filter=_search_filter(conf),
                   dicomweb_store=Path(conf["dicomweb_store"]).expanduser().resolve()
                   if conf.get("dicomweb_store") else None)
