"""The app's hardened MONAI Label local datastore.

MONAI Label 0.8.5's :class:`~monailabel.datastore.local.LocalDatastore` is the
storage format (images in the datastore root, labels in ``labels/<tag>/``, the
index in ``datastore_v2.json``), and this class keeps it. What it adds:

* **Ids and tags are checked.** The stock store joins the request's image id and
  label tag into file paths, so ``PUT /datastore/?image=../../x`` writes outside the
  datastore. Ids and tags with path separators, ``..``, a leading dot or control
  characters are refused (HTTP 400) before anything is written.
* **Uploads are validated** before anything is written: an image must be a
  decodable PNG/JPEG/DICOM frame within the configured byte and pixel limits
  (413 when larger); a label must be a mask of exactly the image's ``H x W``; its
  params must carry a known class (``normal`` | ``distended``) and a box inside the
  image, not inverted, not empty. Errors are 4xx with a message naming the field.
* **Labels are stored in one canonical form:** ``labels/<tag>/<image>.png``, ``uint8``
  0/1, same ``H x W`` as the image, read and written with :mod:`lib.data.imageio`
  (PIL; no MONAI reader transposition), so that a label lines up with its image pixel
  for pixel. PNG, NRRD and NIfTI uploads are accepted (single-slice volumes are
  squeezed: ITK arrays are ``[z][y][x]``, the same row/column order as PIL).
* **The index is never lost or half-written.** Every change is a read-modify-write
  of ``datastore_v2.json`` under one lock (an in-process re-entrant lock plus
  ``flock`` on the stock ``.lock`` file, shared with the train and scoring
  subprocesses MONAI Label spawns), the file is re-read inside the lock, and written
  atomically (temporary file + rename). Readers reload the index whenever its
  inode, size or mtime changed, so scores written by the scoring subprocess are
  seen by the server at once. The stock store modifies a possibly stale in-memory
  copy and rewrites the file in place, which loses concurrent label submissions.

Label info of a final label (the contract of the whole project)::

    {"label": "normal" | "distended", "box": [x_min, y_min, x_max, y_max] | absent,
     "patient_id": "...", "ts": <unix time>, "name": "<image>.png", ...}

When a final label arrives without ``label`` (MONAI Label's generic Slicer plugin
sends none) the class is taken from the mask: ``distended`` if any pixel is set,
else ``normal``, and ``"label_source": "mask"`` records that it was derived.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.data.atomic import atomic_path, write_text
from lib.data.imageio import IMAGE_EXTENSIONS, image_size, read_image, write_png
from lib.data.records import validate_box, validate_label
from lib.errors import DataError
from lib.infers.http_errors import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, PAYLOAD_TOO_LARGE, client_error

logger = logging.getLogger(__name__)

IMAGE_PATTERNS = tuple(f"*{ext}" for ext in IMAGE_EXTENSIONS)
"""Files of the datastore root that are images (PNG, JPEG, DICOM frames)."""

LABEL_EXTENSIONS = (".png", ".nrrd", ".nii.gz", ".nii")
"""Label uploads accepted by ``PUT /datastore/label``; all are stored as PNG."""

_ID_PATTERN = re.compile(r"^[^\x00-\x1f/\\]+$")


@dataclass(frozen=True)
class UploadLimits:
    """Largest image upload the datastore accepts.

    Attributes:
        max_bytes: file size in bytes.
        max_pixels: width x height in pixels (checked from the header before decoding).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 4096 * 4096


def check_name(value, what: str) -> str:
    """Return ``value`` if it is a safe image id or label tag, else raise an HTTP 400.

    Safe: a non-empty string of at most 200 characters without ``/``, ``\\``,
    control characters or ``..``, not starting with a dot.
    """
    if not isinstance(value, str) or not value:
        raise client_error(BAD_REQUEST, f"{what} is missing")
    if len(value) > 200 or not _ID_PATTERN.match(value) or ".." in value or value.startswith("."):
        raise client_error(
            BAD_REQUEST,
            f"{what} {value!r} is not allowed: use at most 200 characters, no '/', '\\', '..', "
            "control characters or leading '.'",
        )
    return value


def _image_extension(filename: str) -> str:
    lower = filename.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return filename[len(filename) - len(ext):]
    raise client_error(
        BAD_REQUEST, f"image file {Path(filename).name!r}: unsupported type; valid types are {', '.join(IMAGE_EXTENSIONS)}"
    )


def read_label_upload(path: str, width: int, height: int) -> np.ndarray:
    """Read an uploaded label as a ``bool`` ``(H, W)`` mask (any nonzero pixel is foreground).

    Raises:
        DataError: unsupported type, not decodable, not 2D, or not ``height x width``.
    """
    name = Path(path).name.lower()
    if name.endswith(".png"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                array = np.asarray(img)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"label file: not a readable PNG ({exc})") from None
        if array.ndim == 3:
            array = array[..., : min(3, array.shape[-1])].max(axis=-1)
    elif name.endswith((".nrrd", ".nii.gz", ".nii")):
        import SimpleITK as sitk

        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as exc:
            raise DataError(f"label file: not a readable NRRD/NIfTI volume ({str(exc).strip().splitlines()[-1]})") from None
        array = np.squeeze(array)
    else:
        raise DataError(f"label file: unsupported type; valid types are {', '.join(LABEL_EXTENSIONS)}")
    if array.ndim != 2:
        raise DataError(f"label file: expected a 2D mask, got shape {tuple(array.shape)}")
    if array.shape != (height, width):
        raise DataError(
            f"label file: mask is {array.shape[1]}x{array.shape[0]} (width x height) but the image is {width}x{height}"
        )
    return array != 0


def validate_label_info(info, width: int, height: int, *, final: bool, foreground: bool | None) -> Dict[str, Any]:
    """Check label params and return the info to store.

    Args:
        info: the request's params (a JSON object).
        width, height: the image size in pixels.
        final: the label is the ``final`` tag (the class is then required or derived).
        foreground: whether the mask has any foreground pixel (None when no mask comes with the info).

    Raises:
        DataError: not an object, unknown class, bad box, non-text patient id.
    """
    if info is None:
        info = {}
    if not isinstance(info, dict):
        raise DataError(f"params: expected a JSON object, got {type(info).__name__}")
    out = {k: v for k, v in info.items() if k not in ("ts", "name")}
    if out.get("label") is not None:
        validate_label(out["label"], "params.label")
    elif final and foreground is not None:
        out["label"] = "distended" if foreground else "normal"
        out["label_source"] = "mask"
    if out.get("box") is not None:
        out["box"] = list(validate_box(out["box"], width, height, "params.box"))
    if out.get("patient_id") is not None:
        if not isinstance(out["patient_id"], (str, int)) or isinstance(out["patient_id"], bool):
            raise DataError(f"params.patient_id: expected text, got {out['patient_id']!r}")
        out["patient_id"] = str(out["patient_id"])
    return out


class _DatastoreLock:
    """Re-entrant in this process (threads) and exclusive across processes (``flock`` on a file)."""

    def __init__(self, path: str):
        self._path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: Optional[int] = None

    def __enter__(self):
        self._rlock.acquire()
        try:
            if self._depth == 0:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._rlock.release()
            raise
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self._rlock.release()
        return False


def _user_error(exc: DataError, status: int = BAD_REQUEST):
    return client_error(status, str(exc))


class HardenedDatastore(LocalDatastore):
    """:class:`LocalDatastore` with checked ids and uploads and a locked, atomic index (see the module doc)."""

    def __init__(self, datastore_path: str, *, limits: UploadLimits = UploadLimits(), auto_reload: bool = True,
                 read_only: bool = False, extensions=IMAGE_PATTERNS):
        os.makedirs(datastore_path, exist_ok=True)
        self._lock = _DatastoreLock(os.path.join(datastore_path, ".lock"))
        self._config_sig = None
        self.limits = limits
        self._read_only = read_only
        super().__init__(datastore_path, extensions=list(extensions), auto_reload=auto_reload, read_only=read_only)

    # ------------------------------------------------------------------ the index file

    def _signature(self):
        try:
            st = os.stat(self._datastore_config_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, force: bool = False, throw_exception: bool = False) -> None:
        if not force and self._config_sig is not None and self._signature() == self._config_sig:
            return  # unchanged since read: the index is only ever replaced whole (rename), so no lock is needed
        with self._lock:
            sig = self._signature()
            if sig is None or (sig == self._config_sig and not force):
                return
            try:
                with open(self._datastore_config_path) as fp:
                    model = LocalDatastoreModel.model_validate_json(fp.read())
            except ValueError as exc:
                logger.error(f"datastore index {self._datastore_config_path} is unreadable: {exc}")
                if throw_exception:
                    raise
                return
            model.base_path = self._datastore_path
            self._datastore = model
            self._config_sig = sig

    def _init_from_datastore_file(self, throw_exception=False):
        self._load(throw_exception=throw_exception)

    def _update_datastore_file(self, lock=True):
        with self._lock:
            text = self._datastore.model_dump_json(exclude={"base_path"}, indent=2)
            write_text(self._datastore_config_path, text)
            self._config_sig = self._signature()

    @contextmanager
    def _transaction(self):
        """Lock, re-read the index, let the caller change ``self._datastore``, write it atomically.

        On an exception nothing is written and the in-memory index is re-read.
        """
        if self._read_only:
            raise client_error(FORBIDDEN, "the datastore is read-only (MONAI_LABEL_DATASTORE_READ_ONLY)")
        with self._lock:
            self._load(force=True)
            try:
                yield self._datastore
            except BaseException:
                self._load(force=True)
                raise
            self._update_datastore_file()

    def _reconcile_datastore(self):
        with self._lock:
            super()._reconcile_datastore()

    def _list_files(self, path, patterns):
        # temporary files of atomic writes start with a dot: never index them
        return {k: v for k, v in super()._list_files(path, patterns).items() if not k.startswith(".")}

    # ------------------------------------------------------------------ reads (see changes of other processes)

    def get_image_uri(self, image_id: str) -> str:
        self._load()
        return super().get_image_uri(image_id)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        self._load()
        return super().get_image_info(image_id)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        self._load()
        return super().get_label_uri(label_id, label_tag)

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        self._load()
        return dict(super().get_label_info(label_id, label_tag))

    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        self._load()
        return super().get_labels_by_image_id(image_id)

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        self._load()
        return super().get_labeled_images(label_tag, labels)

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        self._load()
        return super().get_unlabeled_images(label_tag, labels)

    def list_images(self) -> List[str]:
        self._load()
        return super().list_images()

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        self._load()
        return super().datalist(full_path)

    def status(self) -> Dict[str, Any]:
        self._load()
        return super().status()

    def json(self):
        self._load()
        return super().json()

    # ------------------------------------------------------------------ writes (checked, locked, atomic)

    def _image_path(self, image_id: str, ext: str) -> str:
        return os.path.join(self._datastore.image_path(), self._filename(image_id, ext))

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        """Copy a validated image into the datastore root as ``<image_id><ext>``.

        Raises:
            HTTPException: 400 bad id, type, not decodable or bad info; 409 the id exists;
                413 larger than :attr:`limits`.
        """
        ext = _image_extension(os.path.basename(image_filename))
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)]
        check_name(image_id, "image id")
        size = os.path.getsize(image_filename)
        if size > self.limits.max_bytes:
            raise client_error(
                PAYLOAD_TOO_LARGE, f"image {image_id!r}: {size} bytes is over the limit of {self.limits.max_bytes} bytes"
            )
        try:
            width, height = image_size(image_filename)
            if width * height > self.limits.max_pixels:
                raise client_error(
                    PAYLOAD_TOO_LARGE,
                    f"image {image_id!r}: {width}x{height} pixels is over the limit of {self.limits.max_pixels} pixels",
                )
            read_image(image_filename)
            info = validate_label_info(image_info, width, height, final=False, foreground=None)
        except DataError as exc:
            raise _user_error(DataError(f"image {image_id!r}: {exc}")) from None
        for key in ("label", "box"):
            info.pop(key, None)  # image info carries no class/box; those belong to the label

        dest = None
        try:
            with self._transaction() as store:
                if image_id in store.objects or os.path.exists(self._image_path(image_id, ext)):
                    raise client_error(CONFLICT, f"image {image_id!r} already exists; remove it first to replace it")
                with atomic_path(self._image_path(image_id, ext)) as tmp:
                    shutil.copyfile(image_filename, tmp)
                dest = self._image_path(image_id, ext)
                info.update({"ts": int(time.time()), "name": self._filename(image_id, ext)})
                store.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
        except BaseException:
            if dest is not None:  # the index was not written: take the copied file back out
                Path(dest).unlink(missing_ok=True)
            raise
        logger.info(f"Added image {image_id} ({width}x{height})")
        return image_id

    def _image_size(self, image_id: str) -> tuple[int, int]:
        uri = self.get_image_uri(image_id)
        if not uri or not os.path.isfile(uri):
            raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
        try:
            return image_size(uri)
        except DataError as exc:
            raise _user_error(exc) from None

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Validate a label upload and store it as ``labels/<tag>/<image_id>.png`` (0/1) with its info.

        Raises:
            HTTPException: 400 bad id/tag, mask or params; 404 unknown image.
        """
        check_name(image_id, "image id")
        label_tag = label_tag or DefaultLabelTag.FINAL.value
        check_name(label_tag, "label tag")
        width, height = self._image_size(image_id)
        try:
            mask = read_label_upload(label_filename, width, height)
            info = validate_label_info(
                label_info, width, height, final=label_tag == DefaultLabelTag.FINAL.value, foreground=bool(mask.any())
            )
        except DataError as exc:
            raise _user_error(DataError(f"label for image {image_id!r}: {exc}")) from None

        with self._transaction() as store:
            obj = store.objects.get(image_id)
            if obj is None:
                raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
            label_dir = self._datastore.label_path(label_tag)
            name = self._filename(image_id, ".png")
            write_png(os.path.join(label_dir, name), mask.astype(np.uint8))
            previous = obj.labels.get(label_tag)
            if previous is not None and previous.ext != ".png":
                Path(label_dir, self._filename(image_id, previous.ext)).unlink(missing_ok=True)
            info.update({"ts": int(time.time()), "name": name})
            obj.labels[label_tag] = DataModel(info=info, ext=".png")
            if info.get("patient_id") and not obj.image.info.get("patient_id"):
                obj.image.info["patient_id"] = info["patient_id"]
        logger.info(f"Saved label {label_tag} for {image_id}: {info}")
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        check_name(image_id, "image id")
        if not isinstance(info, dict):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: expected a JSON object")
        if "patient_id" in info and not isinstance(info["patient_id"], (str, int)):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: patient_id must be text")
        if info.get("box") is not None:  # the recess box of an unlabelled image (scoring uses it)
            width, height = self._image_size(image_id)
            try:
                info = {**info, "box": list(validate_box(info["box"], width, height, "info.box"))}
            except DataError as exc:
                raise _user_error(DataError(f"image info for {image_id!r}: {exc}")) from None
        with self._transaction() as store:
            obj = store.objects.get(image_id)
            if obj is None:
                raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
            obj.image.info.update(info)

    def update_image_infos(self, infos: Dict[str, Dict[str, Any]]) -> int:
        """Merge many image infos in one locked write (used by the scoring method); unknown ids are skipped.

        Returns:
            how many images were updated.
        """
        count = 0
        with self._transaction() as store:
            for image_id, info in infos.items():
                obj = store.objects.get(image_id)
                if obj is not None:
                    obj.image.info.update(info)
                    count += 1
        return count

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        check_name(label_id, "image id")
        check_name(label_tag, "label tag")
        width, height = self._image_size(label_id)
        try:
            info = validate_label_info(info, width, height, final=False, foreground=None)
        except DataError as exc:
            raise _user_error(DataError(f"label info for image {label_id!r}: {exc}")) from None
        with self._transaction() as store:
            label = store.label(label_id, label_tag)
            if label is None:
                raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
            label.info.update(info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_id, "image id")
        check_name(label_tag, "label tag")
        with self._transaction() as store:
            obj = store.objects.get(label_id)
            label = obj.labels.get(label_tag) if obj else None
            if label is None:
                raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
            Path(store.label_path(label_tag), self._filename(label_id, label.ext)).unlink(missing_ok=True)
            del obj.labels[label_tag]

    def remove_image(self, image_id: str) -> None:
        check_name(image_id, "image id")
        with self._transaction() as store:
            obj = store.objects.get(image_id)
            if obj is None:
                raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
            for tag, label in obj.labels.items():
                Path(store.label_path(tag), self._filename(image_id, label.ext)).unlink(missing_ok=True)
            Path(self._image_path(image_id, obj.image.ext)).unlink(missing_ok=True)
            del store.objects[image_id]

    def set_name(self, name: str):
        with self._transaction() as store:
            store.name = name

    def set_description(self, description: str):
        with self._transaction() as store:
            store.description = description


__all__ = ["HardenedDatastore", "UploadLimits", "check_name", "read_label_upload", "validate_label_info"]
