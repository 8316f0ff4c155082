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
  atomically (temporary file, ``fsync``, rename). Readers reload the index whenever
  its inode, size or mtime changed, so scores written by the scoring subprocess are
  seen by the server at once. The stock store modifies a possibly stale in-memory
  copy and rewrites the file in place, which loses concurrent label submissions.
* **A file and its index entry change as one unit.** A new mask (or image) is first
  written beside its final name as a hidden, ``fsync``-ed ``.<name>.pending-<nonce>``
  file; the index entry, which records the mask's SHA-1 (``mask_sha1``), is then
  committed; only then is the pending file renamed into place. A removed file is
  first renamed to a hidden ``.<name>.removing-<nonce>``, the index committed, then
  the file deleted. After a crash at any point, :meth:`HardenedDatastore.recover`
  (run, under the lock, whenever a store is opened) finishes or undoes each staged
  change by what the index says, and deletes leftover temporary files: every label
  is then the old one or the new one, whole.
* **Labels never contradict their class.** A ``normal`` label with a non-empty mask
  is refused (400); a final label without a class takes it from its mask.
* **Uploads are checked from the header first** (:mod:`lib.server.upload_checks`): byte size,
  then width x height (and a DICOM cine loop's frames) read from the file header, and
  only then decoded, so a decompression bomb is refused (413) before it costs memory.
* **DICOM ultrasound keeps its geometry.** A DICOM image is stored as uploaded; its
  image info records what the server read from it (:data:`FILE_INFO_KEYS`:
  ``pixel_spacing_mm`` ``[x, y]`` or null, ``spacing_source``, ``frame_count``), which a
  client may read but not set. A final label of a cine loop names its ``frame``
  (0 = the first): the frame its mask and box are of, the frame training reads.

Label info of a final label (the contract of the whole project)::

    {"label": "normal" | "distended", "box": [x_min, y_min, x_max, y_max] | absent,
     "patient_id": "...", "ts": <unix time>, "name": "<image>.png",
     "mask_sha1": "<SHA-1 of the stored PNG>", ...}

When a final label arrives without ``label`` (MONAI Label's generic Slicer plugin
sends none) the class is taken from the mask: ``distended`` if any pixel is set,
else ``normal``, and ``"label_source": "mask"`` records that it was derived.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.data.datastore import IMAGE_PATTERNS
from lib.data.imageio import IMAGE_EXTENSIONS, read_image_file, read_mask
from lib.errors import DataError
from lib.infers.http_errors import BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND, PAYLOAD_TOO_LARGE, client_error
from lib.infers.params import strict_box
from lib.server.upload_checks import (LABEL_EXTENSIONS, OverLimit, UploadLimits, check_name, check_upload,
                                      header_frames, header_size, image_extension, read_label_upload,
                                      validate_label_info)

logger = logging.getLogger(__name__)


UPLOADS_DIR = ".uploads"
"""Hidden folder of the datastore where the server keeps request uploads while it checks them."""

FILE_INFO_KEYS = ("pixel_spacing_mm", "spacing_source", "frame_count")
"""Image info keys the datastore reads from the image file itself; clients cannot set them."""


def file_info(image) -> Dict[str, Any]:
    """The :data:`FILE_INFO_KEYS` of an :class:`~lib.data.imageio.ImageFile`."""
    spacing = image.pixel_spacing_mm
    return {"pixel_spacing_mm": [float(v) for v in spacing] if spacing else None,
            "spacing_source": image.spacing_source, "frame_count": image.frame_count}


_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>pending|removing)-[0-9a-f]{32}$")


def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _fsync_dir(folder: str | os.PathLike) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staged_path(final: str | os.PathLike, kind: str) -> Path:
    final = Path(final)
    return final.with_name(f".{final.name}.{kind}-{uuid.uuid4().hex}")


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())


def _copy_durably(source: str, path: Path) -> None:
    with open(source, "rb") as src, open(path, "xb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())


def _sha1(path: str | os.PathLike) -> str | None:
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


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
    return client_error(PAYLOAD_TOO_LARGE if isinstance(exc, OverLimit) else status, str(exc))


class HardenedDatastore(LocalDatastore):
    """:class:`LocalDatastore` with checked ids and uploads and a locked, atomic index (see the module doc)."""

    def __init__(self, datastore_path: str, *, limits: UploadLimits = UploadLimits(), auto_reload: bool = True,
                 read_only: bool = False, extensions=tuple(IMAGE_PATTERNS)):
        os.makedirs(datastore_path, exist_ok=True)
        self._lock = _DatastoreLock(os.path.join(datastore_path, ".lock"))
        self._config_sig = None
        self.limits = limits
        self._read_only = read_only
        self._root = Path(datastore_path)
        if not read_only:
            self.recover()
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
            target = Path(self._datastore_config_path)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                _write_durably(tmp, text.encode("utf-8"))
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)  # the commit point of every change
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(target.parent)
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
        # staged and temporary files start with a dot: never index them
        return {k: v for k, v in super()._list_files(path, patterns).items() if not k.startswith(".")}

    # ------------------------------------------------------------------ crash recovery

    def recover(self) -> dict:
        """Finish or undo the staged changes a crash left behind and delete leftover temporary files.

        Runs under the datastore lock, so it never meets a change in progress. A pending
        mask is installed when the index records its SHA-1 (the change was committed),
        else deleted; a pending image is installed when the index lists it and its file is
        missing; a file being removed is put back when the index still lists it, else
        deleted. Hidden ``*.tmp*`` files of interrupted atomic writes are deleted.

        Returns:
            counts: ``{"installed": n, "restored": n, "deleted": n}``.
        """
        counts = {"installed": 0, "restored": 0, "deleted": 0}
        with self._lock:
            index = self._read_index()
            folders = [(self._root, None)]
            labels_root = self._root / (index.labels_dir if index else "labels")
            if labels_root.is_dir():
                folders += [(p, p.name) for p in labels_root.iterdir() if p.is_dir()]
            for folder, tag in folders:
                for entry in os.scandir(folder):
                    if not entry.name.startswith(".") or not entry.is_file():
                        continue
                    staged = _STAGED.match(entry.name)
                    if staged is None:
                        if ".tmp" in entry.name:
                            os.unlink(entry.path)
                            counts["deleted"] += 1
                        continue
                    outcome = self._recover_one(Path(entry.path), folder / staged["name"], staged["kind"], tag, index)
                    counts[outcome] += 1
        if any(counts.values()):
            logger.warning(f"datastore recovery after an interrupted write: {counts}")
        return counts

    def _read_index(self) -> Optional[LocalDatastoreModel]:
        try:
            with open(os.path.join(self._root, "datastore_v2.json")) as fp:
                return LocalDatastoreModel.model_validate_json(fp.read())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _recover_one(staged: Path, final: Path, kind: str, tag: Optional[str], index) -> str:
        entry = None
        if index is not None:
            for image_id, obj in index.objects.items():
                model = obj.image if tag is None else obj.labels.get(tag)
                if model is not None and image_id + model.ext == final.name:
                    entry = model
                    break
        if kind == "pending":
            if tag is None:
                wanted = entry is not None and not final.exists()
            else:
                digest = entry.info.get("mask_sha1") if entry is not None else None
                wanted = digest is not None and digest == _sha1(staged) and digest != _sha1(final)
            if wanted:
                os.replace(staged, final)
                return "installed"
        elif entry is not None and not final.exists():  # a removal that was not committed
            os.replace(staged, final)
            return "restored"
        staged.unlink(missing_ok=True)
        return "deleted"

    @property
    def uploads_dir(self) -> Path:
        """Where the server keeps request uploads while it checks them (created on demand)."""
        folder = self._root / UPLOADS_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def clear_uploads(self) -> int:
        """Delete every file left in :attr:`uploads_dir` (the server calls this once, at start); returns the count."""
        count = 0
        folder = self._root / UPLOADS_DIR
        if folder.is_dir():
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                count += 1
        return count

    # ------------------------------------------------------------------ reads (see changes of other processes)

    def get_image_uri(self, image_id: str) -> str:
        self._load()
        return super().get_image_uri(image_id)

    def has_image(self, image_id) -> bool:
        """True when ``image_id`` is an image of the index (any string; no file access)."""
        self._load()
        return isinstance(image_id, str) and image_id in self._datastore.objects

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        """The image's info; unlike the stock store, without its absolute server ``path``."""
        self._load()
        info = super().get_image_info(image_id)
        info.pop("path", None)
        return info

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
        """Final-labelled pairs; ``full_path=False`` gives paths relative to the datastore folder."""
        self._load()
        pairs = super().datalist(True)
        if full_path:
            return pairs
        root = os.path.realpath(self._datastore_path)
        return [{k: os.path.relpath(v, root) for k, v in pair.items()} for pair in pairs]

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
        ext = image_extension(os.path.basename(image_filename))
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)]
        check_name(image_id, "image id")
        try:
            width, height = check_upload(image_filename, self.limits, f"image {image_id!r}")
            try:
                decoded = read_image_file(image_filename)
            except DataError as exc:
                raise DataError(f"image {image_id!r}: {str(exc).replace(str(image_filename), 'file')}") from None
            info = validate_label_info(image_info, width, height, final=False, foreground=None,
                                       frame_count=decoded.frame_count)
        except DataError as exc:
            if isinstance(exc, OverLimit) or str(exc).startswith(f"image {image_id!r}"):
                raise _user_error(exc) from None
            raise _user_error(DataError(f"image {image_id!r}: {exc}")) from None
        for key in ("label", "box", "frame"):
            info.pop(key, None)  # image info carries no class/box; those belong to the label
        info.update(file_info(decoded))

        with self._lock:
            dest = Path(self._image_path(image_id, ext))
            pending = _staged_path(dest, "pending")
            try:
                with self._transaction() as store:
                    if image_id in store.objects or dest.exists():
                        raise client_error(CONFLICT, f"image {image_id!r} already exists; remove it first to replace it")
                    _copy_durably(image_filename, pending)
                    os.chmod(pending, 0o644)
                    info.update({"ts": int(time.time()), "name": self._filename(image_id, ext)})
                    store.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            except BaseException:
                pending.unlink(missing_ok=True)
                raise
            os.replace(pending, dest)
        logger.info(f"Added image {image_id} ({width}x{height})")
        return image_id

    def _image_size(self, image_id: str) -> tuple[int, int]:
        return self._image_frames(image_id)[:2]

    def _image_frames(self, image_id: str) -> tuple[int, int, int]:
        """``(width, height, frames)`` of a stored image, from its header."""
        uri = self.get_image_uri(image_id) if isinstance(image_id, str) else ""
        if not uri or not os.path.isfile(uri):
            raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
        try:
            return header_frames(uri, f"image {image_id!r}")
        except DataError as exc:
            raise _user_error(exc) from None

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        """Validate a label upload and store it as ``labels/<tag>/<image_id>.png`` (0/1) with its info, as one unit.

        Raises:
            HTTPException: 400 bad id/tag, mask or params (or a ``normal`` class with a non-empty
                mask); 404 unknown image; 413 a file over the byte limit.
        """
        check_name(image_id, "image id")
        label_tag = label_tag or DefaultLabelTag.FINAL.value
        check_name(label_tag, "label tag")
        width, height, frames = self._image_frames(image_id)
        try:
            size = os.path.getsize(label_filename)
            if size > self.limits.max_bytes:
                raise OverLimit(f"label file: {size} bytes is over the limit of {self.limits.max_bytes} bytes")
            mask = read_label_upload(label_filename, width, height)
            info = validate_label_info(label_info, width, height, final=label_tag == DefaultLabelTag.FINAL.value,
                                       foreground=int(mask.sum()), frame_count=frames)
        except DataError as exc:
            raise _user_error(DataError(f"label for image {image_id!r}: {exc}")) from None

        data = _png_bytes(mask)
        info["mask_sha1"] = hashlib.sha1(data).hexdigest()
        with self._lock:
            label_dir = Path(self._datastore.label_path(label_tag))
            label_dir.mkdir(parents=True, exist_ok=True)
            name = self._filename(image_id, ".png")
            final = label_dir / name
            pending = _staged_path(final, "pending")
            try:
                with self._transaction() as store:
                    obj = store.objects.get(image_id)
                    if obj is None:
                        raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
                    _write_durably(pending, data)
                    os.chmod(pending, 0o644)
                    previous = obj.labels.get(label_tag)
                    info.update({"ts": int(time.time()), "name": name})
                    obj.labels[label_tag] = DataModel(info=info, ext=".png")
                    if info.get("patient_id") and not obj.image.info.get("patient_id"):
                        obj.image.info["patient_id"] = info["patient_id"]
            except BaseException:
                pending.unlink(missing_ok=True)
                raise
            os.replace(pending, final)  # committed above; recover() finishes this step after a crash
            _fsync_dir(label_dir)
            if previous is not None and previous.ext != ".png":
                (label_dir / self._filename(image_id, previous.ext)).unlink(missing_ok=True)
        logger.info(f"Saved label {label_tag} for {image_id}: {info}")
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        check_name(image_id, "image id")
        if not isinstance(info, dict):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: expected a JSON object")
        if "patient_id" in info and (not isinstance(info["patient_id"], (str, int)) or isinstance(info["patient_id"], bool)):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: patient_id must be text")
        info = {k: v for k, v in info.items() if k not in ("name", "path")}
        fixed = sorted(set(info) & set(FILE_INFO_KEYS))
        if fixed:
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: {', '.join(fixed)} is read from the image "
                                            "file by the server; a client cannot set it")
        if info.get("loris") not in (None, {}):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: 'loris' holds the scores that "
                                            "loris_scoring writes; a client may only clear it ({})")
        strategy = info.get("strategy")
        if strategy is not None and not (isinstance(strategy, dict) and all(isinstance(v, dict) for v in strategy.values())):
            raise client_error(BAD_REQUEST, f"image info for {image_id!r}: 'strategy' must be an object of objects")
        if info.get("box") is not None:  # the recess box of an unlabelled image (scoring uses it)
            width, height = self._image_size(image_id)
            try:
                info["box"] = list(strict_box(info["box"], width, height, "info.box"))
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
        """Merge ``info`` into a stored label's info; a class that contradicts the stored mask is refused."""
        check_name(label_id, "image id")
        check_name(label_tag, "label tag")
        width, height, frames = self._image_frames(label_id)
        label_uri = self.get_label_uri(label_id, label_tag)
        if not label_uri:
            raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
        try:
            foreground = None
            if isinstance(info, dict) and info.get("label") == "normal":
                foreground = int(read_mask(label_uri).sum())
            info = validate_label_info(info, width, height, final=False, foreground=foreground, frame_count=frames)
        except DataError as exc:
            raise _user_error(DataError(f"label info for image {label_id!r}: {str(exc).replace(label_uri, 'label')}")) from None
        info.pop("label_source", None)
        with self._transaction() as store:
            label = store.label(label_id, label_tag)
            if label is None:
                raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
            if "label" in info:
                label.info.pop("label_source", None)  # the class is now the client's, not derived
            label.info.update(info)

    def _remove_files(self, files: List[Path], change) -> None:
        """Stage ``files`` for removal, commit the index change ``change(store)``, then delete them."""
        with self._lock:
            staged = []
            try:
                with self._transaction() as store:
                    change(store)
                    for path in files:
                        if path.exists():
                            hidden = _staged_path(path, "removing")
                            os.replace(path, hidden)
                            staged.append((hidden, path))
            except BaseException:
                for hidden, path in staged:
                    os.replace(hidden, path)
                raise
            for hidden, _ in staged:
                hidden.unlink(missing_ok=True)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_id, "image id")
        check_name(label_tag, "label tag")
        self._load()
        label = self._datastore.label(label_id, label_tag)
        if label is None:
            raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
        path = Path(self._datastore.label_path(label_tag), self._filename(label_id, label.ext))

        def change(store):
            obj = store.objects.get(label_id)
            if obj is None or label_tag not in obj.labels:
                raise client_error(NOT_FOUND, f"no {label_tag!r} label for image {label_id!r}")
            del obj.labels[label_tag]

        self._remove_files([path], change)

    def remove_image(self, image_id: str) -> None:
        check_name(image_id, "image id")
        self._load()
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
        files = [Path(self._datastore.label_path(tag), self._filename(image_id, label.ext))
                 for tag, label in obj.labels.items()]
        files.append(Path(self._image_path(image_id, obj.image.ext)))

        def change(store):
            if image_id not in store.objects:
                raise client_error(NOT_FOUND, f"image {image_id!r} not found in the datastore")
            del store.objects[image_id]

        self._remove_files(files, change)

    def get_dataset_archive(self, limit_cases: Optional[int]) -> str:
        """A ZIP of the final-labelled images, their labels and the index, written into :attr:`uploads_dir`.

        The caller deletes it after sending (the server clears that folder at start).

        Raises:
            HTTPException: 404 when no image has a final label.
        """
        import zipfile

        pairs = self.datalist()
        if not pairs:
            raise client_error(NOT_FOUND, "no image has a final label yet: nothing to archive")
        if limit_cases is not None and limit_cases >= 1:
            pairs = pairs[:limit_cases]
        path = self.uploads_dir / f"dataset-{uuid.uuid4().hex}.zip"
        try:
            with zipfile.ZipFile(path, mode="x") as archive:
                for pair in pairs:
                    for key, file in pair.items():
                        archive.write(file, arcname=os.path.join(key, os.path.basename(file)))
                archive.writestr("metadata.json", self._datastore.model_dump_json(exclude={"base_path"}))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return str(path)

    def set_name(self, name: str):
        with self._transaction() as store:
            store.name = name

    def set_description(self, description: str):
        with self._transaction() as store:
            store.description = description


__all__ = ["FILE_INFO_KEYS", "HardenedDatastore", "LABEL_EXTENSIONS", "OverLimit", "UploadLimits",
           "UPLOADS_DIR", "check_name", "check_upload", "file_info", "header_size", "read_label_upload",
           "validate_label_info"]
