"""Images from a PACS: the app's datastore on a DICOMweb server (``--studies http://HOST/dicom-web``).

MONAI Label's own ``DICOMWebDatastore`` lists *series* filtered by ``Modality = CT``
(``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``), converts each series to a NIfTI volume and
stores final labels as DICOM SEG back into the PACS with tools it downloads at start
(dcmqi). Knee-ultrasound frames are 2D *instances* of modality US -- often several
frames of one series, or a cine loop in one instance -- so this datastore works
differently:

* **Listing.** An image is one DICOM *instance* of the PACS (id = its SOPInstanceUID):
  a frame, or a cine loop whose frames ``params.frame`` chooses. They are found with a
  QIDO-RS instance search with the app's filter, ``{"Modality": "US"}`` unless
  ``--conf dicomweb_filter '<JSON>'`` says otherwise (MONAI Label's
  ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` is not used). The listing is cached for
  ``MONAI_LABEL_DICOMWEB_CACHE_EXPIRY`` seconds; images uploaded to the server itself
  are listed beside the PACS ones.
* **Local store beside the PACS.** The first time an image is needed (infer, a label,
  scoring, a download) its instance is retrieved (WADO-RS) and stored, as it came,
  in the local store folder (``--conf dicomweb_store DIR``), after the same checks
  as an upload to the local datastore (:mod:`lib.server.upload_checks`): rows x columns
  and frames from the QIDO answer before anything is retrieved, then byte size,
  header, decoding. Its image info records where it came from (``source``
  ``"dicomweb"``, study, series and instance UIDs, ``patient_id`` = PatientID) and
  its geometry (``pixel_spacing_mm``, ``frame_count``).
* **Labels** (corrections) are stored in that local store exactly as the local
  datastore stores them (:class:`~lib.server.datastore.HardenedDatastore`: checked, one
  canonical PNG per label, crash-safe index), never written into the PACS. They
  survive restarts; training reads the local store's labelled images.
* **Nothing is deleted from the PACS**: ``DELETE /datastore/image`` removes the local
  copy and its labels only (the image is listed again, unlabelled).

A PACS that does not answer gives HTTP 503 naming it; one that answers with an error,
502; never a 500. Requests to the PACS time out (:data:`TIMEOUT_S`) and are tried
:data:`ATTEMPTS` times; a failed listing is not retried before the cache expires, so
``/info`` and the datastore's answers stay fast while the PACS is down.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from lib.server.datastore import HardenedDatastore, IMAGE_PATTERNS
from lib.infers.http_errors import BAD_REQUEST, CONFLICT, PAYLOAD_TOO_LARGE, client_error
from lib.server.upload_checks import UploadLimits, check_name

logger = logging.getLogger(__name__)

DEFAULT_FILTER = {"Modality": "US"}
"""The app's QIDO-RS filter: ultrasound instances (MONAI Label's own default lists CT series only)."""

BAD_GATEWAY = 502
SERVICE_UNAVAILABLE = 503

TIMEOUT_S = (10.0, 120.0)
"""Seconds to connect to the PACS, and to wait for each part of its answer."""

ATTEMPTS = 2
"""Tries of each PACS request (a refused connection or a busy answer: 429, 503, 504); 0.2 s between them."""

PACS_INFO_KEYS = ("source", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate",
                  "SeriesDescription", "retrieved")
"""Image info keys that come from the PACS; clients cannot set them."""

_QIDO_FIELDS = ["PatientID", "StudyDate", "SeriesDescription", "Rows", "Columns", "NumberOfFrames"]
_UID, _STUDY, _SERIES = "00080018", "0020000D", "0020000E"


def default_store(app_dir: str | os.PathLike, url: str) -> Path:
    """Where the local store of the PACS at ``url`` lives when ``--conf dicomweb_store`` is not given."""
    return Path(app_dir) / "dicomweb" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def _with_timeout(session):
    """``session`` whose requests time out after :data:`TIMEOUT_S` (requests has no default timeout)."""
    from requests.adapters import HTTPAdapter

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request, **kwargs):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = TIMEOUT_S
            return super().send(request, **kwargs)

    for prefix in ("http://", "https://"):
        session.mount(prefix, TimeoutAdapter())
    return session


def make_client(url: str):
    """MONAI Label's DICOMweb client for ``url``, with its settings (credentials, QIDO/WADO/STOW prefixes),
    :data:`TIMEOUT_S` and :data:`ATTEMPTS`."""
    import requests
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX

    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        from dicomweb_client.session_utils import create_session_from_user_pass

        session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME,
                                                settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    client = DICOMwebClientX(url=url, session=_with_timeout(session or requests.Session()),
                             qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                             wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                             stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    client.set_http_retry_params(retry=True, max_attempts=ATTEMPTS, wait_exponential_multiplier=100)
    return client


def _value(record: dict, tag: str):
    values = (record.get(tag) or {}).get("Value") or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic")
    return value


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class PacsDatastore(HardenedDatastore):
    """The hardened local store beside a DICOMweb server (see the module docstring).

    Args:
        client: a ``dicomweb_client.DICOMwebClient`` of the PACS.
        store_path: the local store folder (images retrieved from the PACS, labels, index).
        search_filter: the QIDO-RS instance search filter.
        limits: the upload limits every retrieved image is checked against.
        cache_seconds: how long a PACS listing is reused.
    """

    def __init__(self, client, store_path: str | os.PathLike, search_filter: Dict[str, Any], *,
                 limits: UploadLimits = UploadLimits(), cache_seconds: float = 60.0, read_only: bool = False,
                 auto_reload: bool = True):
        self._client = client
        self._filter = dict(search_filter)
        self._cache_seconds = float(cache_seconds)
        self._listing: Dict[str, dict] = {}
        self._listed_at = -math.inf
        self._failure: Optional[tuple[float, Exception]] = None  # (when, the HTTP error) of a listing that failed
        self._listing_lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        Path(store_path).mkdir(parents=True, exist_ok=True)
        super().__init__(str(store_path), limits=limits, auto_reload=auto_reload, read_only=read_only,
                         extensions=IMAGE_PATTERNS)

    @property
    def url(self) -> str:
        return str(self._client.base_url)

    @property
    def search_filter(self) -> Dict[str, Any]:
        return dict(self._filter)

    def name(self) -> str:
        return f"DICOMweb {self.url}"

    # ------------------------------------------------------------------ the PACS listing

    def _pacs_error(self, exc: Exception):
        import requests

        response = getattr(exc, "response", None)
        if isinstance(exc, requests.HTTPError) and response is not None:
            return client_error(BAD_GATEWAY, f"the PACS at {self.url} answered {response.status_code} "
                                             f"{response.reason or ''}".rstrip())
        return client_error(SERVICE_UNAVAILABLE, f"the PACS at {self.url} does not answer ({type(exc).__name__})")

    def pacs_images(self, refresh: bool = False) -> Dict[str, dict]:
        """``{image id: entry}`` of the PACS's instances matching the filter (cached; see the module docstring).

        An entry holds ``study``, ``series`` (UIDs), ``rows``, ``columns``, ``frames`` and ``info`` (what
        :meth:`get_image_info` shows before the image is retrieved).

        Raises:
            HTTPException: 503 / 502 when the PACS cannot be listed and nothing was listed before.
        """
        import requests

        with self._listing_lock:
            now = time.monotonic()
            if not refresh and now - self._listed_at < self._cache_seconds:
                return self._listing
            if not refresh and self._failure is not None and now - self._failure[0] < max(self._cache_seconds, 5.0):
                raise self._failure[1]
            try:
                found = self._client.search_for_instances(search_filters=self._filter, fields=_QIDO_FIELDS,
                                                          get_remaining=True)
            except (requests.RequestException, OSError, ValueError) as exc:
                error = self._pacs_error(exc)
                if self._listed_at == -math.inf:
                    self._failure = (now, error)
                    raise error from None
                logger.warning(f"PACS {self.url}: listing failed ({exc}); using the previous listing")
                self._listed_at = now
                return self._listing
            self._failure = None
            listing = {}
            for record in found:
                uid = _value(record, _UID)
                try:
                    check_name(uid, "image id")
                except Exception:
                    logger.warning(f"PACS {self.url}: instance UID {uid!r} cannot be an image id; left out")
                    continue
                info = {"source": "dicomweb", "StudyInstanceUID": _value(record, _STUDY),
                        "SeriesInstanceUID": _value(record, _SERIES), "SOPInstanceUID": uid,
                        "patient_id": str(_value(record, "00100020") or uid),
                        "StudyDate": _value(record, "00080020"), "SeriesDescription": _value(record, "0008103E")}
                listing[uid] = {"study": info["StudyInstanceUID"], "series": info["SeriesInstanceUID"],
                                "rows": _int(_value(record, "00280010")), "columns": _int(_value(record, "00280011")),
                                "frames": _int(_value(record, "00280008")) or 1,
                                "info": {k: v for k, v in info.items() if v is not None}}
            self._listing, self._listed_at = listing, time.monotonic()
            logger.info(f"PACS {self.url}: {len(listing)} instances match {self._filter}")
            return listing

    def _listed(self) -> Dict[str, dict]:
        """The listing for reads that must not fail (``/info``, strategies): empty when the PACS is down."""
        try:
            return self.pacs_images()
        except Exception as exc:  # an HTTPException from pacs_images: already explained in its detail
            logger.warning(f"PACS {self.url}: {getattr(exc, 'detail', exc)}")
            return {}

    # ------------------------------------------------------------------ retrieval into the local store

    def _retrieve(self, image_id: str, entry: dict) -> str:
        """Retrieve one instance (WADO-RS), check it as an upload and add it to the local store; its path."""
        import requests

        limits = self.limits
        rows, columns, frames = entry.get("rows"), entry.get("columns"), entry.get("frames") or 1
        what = f"image {image_id!r} (PACS)"
        if rows and columns and rows * columns > limits.max_pixels:
            raise client_error(PAYLOAD_TOO_LARGE, f"{what}: {columns}x{rows} pixels is over the limit of "
                                                  f"{limits.max_pixels} pixels (--conf max_image_pixels)")
        if frames > limits.max_frames:
            raise client_error(PAYLOAD_TOO_LARGE, f"{what}: a cine loop of {frames} frames is over the limit of "
                                                  f"{limits.max_frames} frames (--conf max_frames)")
        if not entry.get("study") or not entry.get("series"):
            raise client_error(BAD_GATEWAY, f"{what}: the PACS listed it without study and series UIDs")
        with self._fetch_lock:
            local = super().get_image_uri(image_id)
            if local and os.path.isfile(local):
                return local
            try:
                dataset = self._client.retrieve_instance(entry["study"], entry["series"], image_id)
            except (requests.RequestException, OSError, ValueError) as exc:
                raise self._pacs_error(exc) from None
            staged = self.uploads_dir / f"pacs-{uuid.uuid4().hex}.dcm"
            try:
                dataset.save_as(str(staged), write_like_original=False)
                # the hardened add (checks, atomic commit) with the PACS's UIDs, which clients cannot set
                HardenedDatastore.add_image(self, image_id, str(staged), dict(entry["info"]))
            finally:
                staged.unlink(missing_ok=True)
        logger.info(f"PACS {self.url}: retrieved {image_id} into the local store")
        return super().get_image_uri(image_id)

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        """An image uploaded to this server: kept in the local store only (never sent to the PACS).

        Raises:
            HTTPException: as :meth:`HardenedDatastore.add_image`; 409 for the id of a PACS image.
        """
        if isinstance(image_id, str) and image_id in self._listed():
            raise client_error(CONFLICT, f"image {image_id!r} already exists in the PACS")
        info = {k: v for k, v in (image_info or {}).items() if k not in PACS_INFO_KEYS}
        return super().add_image(image_id, image_filename, info)

    # ------------------------------------------------------------------ reads: the PACS and the local store

    def has_image(self, image_id) -> bool:
        if super().has_image(image_id):
            return True
        return isinstance(image_id, str) and image_id in self._listed()

    def get_image_uri(self, image_id: str) -> str:
        """The local path of the image, retrieved from the PACS first when needed ("" for an unknown id)."""
        local = super().get_image_uri(image_id)
        if local and os.path.isfile(local):
            return local
        entry = self.pacs_images().get(image_id) if isinstance(image_id, str) else None
        if entry is None:
            return ""
        return self._retrieve(image_id, entry)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        if super().has_image(image_id):
            return super().get_image_info(image_id)
        entry = self._listed().get(image_id)
        if entry is None:
            return {}
        return {**entry["info"], "frame_count": entry["frames"], "retrieved": False}

    def list_images(self) -> List[str]:
        return sorted(set(super().list_images()) | set(self._listed()))

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [image_id for image_id in self.list_images() if image_id not in labelled]

    def json(self):
        out = super().json()
        objects = out.setdefault("objects", {})
        for image_id, entry in self._listed().items():
            if image_id not in objects:
                objects[image_id] = {"image": {"ext": ".dcm", "info": {**entry["info"], "retrieved": False}},
                                     "labels": {}}
        return out

    def status(self) -> Dict[str, Any]:
        out = super().status()
        out["pacs"] = {"url": self.url, "filter": self.search_filter, "listed": len(self._listed())}
        return out

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Store a correction in the local store (the image is retrieved from the PACS first when needed)."""
        if isinstance(image_id, str) and not super().has_image(image_id):
            check_name(image_id, "image id")
            self.get_image_uri(image_id)
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        """Merge a client's info into a local image's (a PACS image is retrieved first); PACS keys are refused."""
        pacs = sorted(set(info or {}) & set(PACS_INFO_KEYS)) if isinstance(info, dict) else []
        if pacs:
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: {', '.join(pacs)} comes from the PACS; "
                                            "a client cannot set it")
        if isinstance(image_id, str) and not super().has_image(image_id):
            check_name(image_id, "image id")
            self.get_image_uri(image_id)
        return super().update_image_info(image_id, info)


__all__ = ["BAD_GATEWAY", "DEFAULT_FILTER", "PACS_INFO_KEYS", "PacsDatastore", "SERVICE_UNAVAILABLE",
           "default_store", "make_client"]
