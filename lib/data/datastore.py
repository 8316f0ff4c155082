"""Reading and writing a MONAI Label datastore (``LocalDatastore`` of monailabel 0.8.5).

What :func:`write_datastore` makes, so that ``monailabel start_server --studies
DATASTORE`` sees every image and its label::

    DATASTORE/<image>.png                 8-bit grayscale PNG (every source converted, see below)
    DATASTORE/labels/final/<image>.png    uint8 0/1, same H x W as the image (1 = distended region)
    DATASTORE/labels/original/            (empty; LocalDatastore expects it)
    DATASTORE/datastore_v2.json           LocalDatastore's index, written with its own pydantic model

Conversion: every image is decoded with :func:`lib.data.imageio.read_image`
(PNG, JPEG, DICOM; colour -> gray with the ITU-R 601 luma weights) and written
as an 8-bit grayscale PNG, so an 8-bit grayscale PNG keeps its pixels exactly
and DICOM/JPEG/RGB sources become what the server and LoRIS read identically.
Masks are written as they are (any nonzero = 1), never transposed.

Index entries (``datastore_v2.json``, ``objects[<image>]``):

- image info: ``{"name", "ts", "patient_id"}`` (plus ``"box"`` for an unlabelled image that has one);
- final label info: ``{"name", "ts", "label": "normal"|"distended", "box": [x0, y0, x1, y1],
  "patient_id", "has_mask"}`` (and ``"frame"`` for a label of a DICOM cine loop: the frame,
  0 = the first, that the mask and box are of; the record reads that frame). A normal image's
  final label is an all-zero mask (class and box confirmed). A distended image without a pixel mask also gets an
  all-zero label, with ``"has_mask": false`` so that it reads back without a mask.

Unlabelled images (label None) get no final label. Reading returns
:class:`~lib.data.records.Record` s: the class, box and patient id come from the
final label's info (the box and patient id also from the image info), a
missing patient id falls back to the image id. Like LocalDatastore, images
lying in the folder without an index entry are read as unlabelled, and index
entries whose file is gone are skipped.

Writes are atomic: the new datastore is built in a temporary folder beside
the target and renamed into place, so a failure leaves the target untouched.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from lib.data.atomic import atomic_dir
from lib.data.dicom import frame_size
from lib.data.flat import Problems, check_image_name
from lib.data.imageio import IMAGE_EXTENSIONS, image_size, read_image, read_mask, write_png
from lib.data.records import Record, validate_box, validate_label
from lib.errors import DataError

DATASTORE_CONFIG = "datastore_v2.json"
"""LocalDatastore's index file name (its ``datastore_config`` default)."""
LABELS_DIR = "labels"
FINAL = "final"
ORIGINAL = "original"
MODES = ("create", "merge", "overwrite")


IMAGE_PATTERNS = [f"*{ext}" for ext in IMAGE_EXTENSIONS]
"""Unindexed files of the datastore root that :func:`read_datastore` picks up: the images LoRIS reads."""


def default_extensions() -> list[str]:
    """The file patterns a stock server watches (``MONAI_LABEL_DATASTORE_FILE_EXT``; ``*.png`` is among them)."""
    from monailabel.config import settings

    return list(settings.MONAI_LABEL_DATASTORE_FILE_EXT)


def _to_id(file: str, extensions: list[str]) -> tuple[str, str]:
    """``(id, ext)`` of a file name exactly as ``LocalDatastore._to_id`` computes it."""
    from monailabel.utils.others.generic import file_ext

    ext = file_ext(file)
    for e in (e.replace("*", "") for e in extensions):
        if file.endswith(e):
            ext = e
    return file.replace(ext, ""), ext


def is_datastore(root: str | os.PathLike) -> bool:
    """True if ``root`` holds a LocalDatastore index (``datastore_v2.json``) or a ``labels/final`` folder."""
    root = Path(root)
    return (root / DATASTORE_CONFIG).is_file() or (root / LABELS_DIR / FINAL).is_dir()


def _load_model(root: Path):
    from monailabel.datastore.local import LocalDatastoreModel

    config = root / DATASTORE_CONFIG
    if not config.is_file():
        return LocalDatastoreModel(name="new-dataset", description="New Dataset", images_dir=".", labels_dir=LABELS_DIR)
    try:
        return LocalDatastoreModel.model_validate_json(config.read_text(encoding="utf-8"))
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{config}: not a valid MONAI Label datastore index ({first})") from None


def read_datastore(root: str | os.PathLike, extensions: list[str] | None = None) -> list[Record]:
    """Read a MONAI Label datastore as records (sorted by image id), without modifying it.

    Args:
        root: the datastore folder (what ``--studies`` points to).
        extensions: file patterns of unindexed images to pick up, as the server
            does; default :data:`IMAGE_PATTERNS` (PNG, JPEG, DICOM).

    Raises:
        DataError: listing every problem: an unknown class, a box that leaves its
            image, a distended mask of another size, an image LoRIS cannot read (2D only).
    """
    from monailabel.datastore.local import DataModel, ImageLabelModel

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: datastore folder not found")
    model = _load_model(root)
    extensions = IMAGE_PATTERNS if extensions is None else extensions
    images_dir = root / (model.images_dir or ".")
    final_dir = root / (model.labels_dir or LABELS_DIR) / FINAL

    objects = dict(model.objects)
    # Reconcile like LocalDatastore: drop entries whose image is gone, add unindexed files.
    objects = {k: v for k, v in objects.items() if (images_dir / f"{k}{v.image.ext}").is_file()}
    files = sorted(p.name for p in images_dir.iterdir() if p.is_file()) if images_dir.is_dir() else []
    for name in files:
        if any(fnmatch.fnmatch(name, e) for e in extensions):
            image_id, ext = _to_id(name, extensions)
            objects.setdefault(image_id, ImageLabelModel(image=DataModel(ext=ext, info={"name": name})))
    if final_dir.is_dir():
        for name in sorted(p.name for p in final_dir.iterdir() if p.is_file()):
            if any(fnmatch.fnmatch(name, e) for e in extensions):
                image_id, ext = _to_id(name, extensions)
                obj = objects.get(image_id)
                if obj is not None and not obj.labels.get(FINAL):
                    obj.labels[FINAL] = DataModel(ext=ext, info={"name": name})

    problems = Problems(f"{root}: MONAI Label datastore")
    records = []
    for image_id in sorted(objects):
        obj = objects[image_id]
        image_path = images_dir / f"{image_id}{obj.image.ext}"
        where = f"{root / DATASTORE_CONFIG} (image {image_id!r})"
        if image_path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.add(f"{image_path}: LoRIS reads 2D {', '.join(IMAGE_EXTENSIONS)} images only")
            continue
        final = obj.labels.get(FINAL)
        label_path = final_dir / f"{image_id}{final.ext}" if final else None
        if label_path is not None and not label_path.is_file():
            final, label_path = None, None
        info = dict(final.info) if final else {}
        image_info = dict(obj.image.info)
        label = info.get("label")
        if label is not None and problems.catch(validate_label, label, f"{where}: final label info") is None:
            continue
        patient_id = str(info.get("patient_id") or image_info.get("patient_id") or image_id)
        raw_box = info.get("box", image_info.get("box"))
        box = None
        if raw_box is not None:
            size = problems.catch(image_size, image_path)
            if size is None:
                continue
            box = problems.catch(validate_box, raw_box, size[0], size[1], where)
            if box is None:
                continue
        frame = info.get("frame")
        if label is not None and image_path.suffix.lower() == ".dcm":
            frames = problems.catch(lambda p: frame_size(p)[2], image_path)
            if frames is None:
                continue
            if frames > 1 and (isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < frames):
                problems.add(f"{where}: final label info: the image is a cine loop of {frames} frames but the "
                             f"label names frame {frame!r}; a label of a loop names its frame (0 .. {frames - 1})")
                continue
        frame = frame if isinstance(frame, int) and not isinstance(frame, bool) else None
        mask_path = None
        if label == "distended" and label_path is not None and info.get("has_mask", True):
            mask = problems.catch(read_mask, label_path)
            size = problems.catch(image_size, image_path)
            if mask is None or size is None:
                continue
            if mask.shape != (size[1], size[0]):
                problems.add(f"{label_path}: label is {mask.shape[1]}x{mask.shape[0]} but its image is {size[0]}x{size[1]}")
                continue
            mask_path = label_path
        records.append(Record(image_id, image_path, patient_id, label, box, mask_path, frame))
    problems.raise_if_any()
    return records


def _target_state(target: Path) -> str:
    if not target.exists():
        return "missing"
    if not target.is_dir():
        return "file"
    if not any(p for p in target.iterdir() if p.name != ".lock"):
        return "empty"
    return "datastore" if is_datastore(target) else "other"


def write_datastore(
    records: Iterable[Record],
    target: str | os.PathLike,
    *,
    mode: str = "create",
    description: str | None = None,
) -> list[Record]:
    """Write records into a MONAI Label datastore at ``target`` atomically; return it read back.

    Args:
        records: the images to import (normally from :func:`lib.data.dataset.load_dataset`).
        target: the datastore folder.
        mode: ``"create"``: ``target`` must be missing or empty. ``"merge"``: add
            to an existing datastore (an image id already there is an error).
            ``"overwrite"``: replace an existing datastore whole. A non-empty
            folder that is not a datastore is never written into.
        description: the datastore description stored in its index.

    Raises:
        DataError: bad mode or target, image ids the server would mangle, id
            conflicts, unreadable images or masks of the wrong size; nothing is
            written then.
    """
    from monailabel.datastore.local import DataModel, ImageLabelModel

    if mode not in MODES:
        raise DataError(f"unknown datastore write mode {mode!r}; valid modes are {', '.join(MODES)}")
    target = Path(target)
    records = list(records)
    state = _target_state(target)
    if state == "file":
        raise DataError(f"{target}: exists and is a file, not a datastore folder")
    if state == "other":
        raise DataError(f"{target}: folder is not empty and is not a MONAI Label datastore (no {DATASTORE_CONFIG}); refusing to write into it")
    if state == "datastore" and mode == "create":
        raise DataError(
            f"{target}: a datastore already exists there; use --merge to add these images to it "
            "or --overwrite to replace it"
        )

    # ids must survive both the stock server's file patterns and the app's
    extensions = list(dict.fromkeys(default_extensions() + IMAGE_PATTERNS))
    problems = Problems(f"{target}: datastore import")
    existing = _load_model(target) if state == "datastore" and mode == "merge" else None
    taken = set(existing.objects) if existing is not None else set()
    if existing is not None:
        images_dir = target / (existing.images_dir or ".")
        for p in images_dir.iterdir():
            if p.is_file() and any(p.name.endswith(e.replace("*", "")) for e in extensions):
                taken.add(_to_id(p.name, extensions)[0])
    seen: set[str] = set()
    for r in records:
        where = f"{r.image_path} (image {r.image!r})"
        if problems.catch(check_image_name, r.image, where) is None:
            continue
        as_read = {_to_id(f"{r.image}.png", e)[0] for e in (default_extensions(), IMAGE_PATTERNS)}
        if as_read != {r.image}:
            wrong = sorted(as_read - {r.image})
            problems.add(f"{where}: MONAI Label would read the name {r.image!r} as {wrong[0]!r}; rename the image")
        if r.image in seen:
            problems.add(f"{where}: duplicate image name")
        seen.add(r.image)
        if r.image in taken:
            problems.add(f"{where}: image {r.image!r} is already in the datastore {target}")
        if r.label is not None:
            problems.catch(validate_label, r.label, where)
    problems.raise_if_any()

    now = int(time.time())
    with atomic_dir(target) as tmp:
        if existing is not None:
            shutil.copytree(target, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))
            model = existing
        else:
            model = _load_model(tmp)
            model.name = target.name
            model.description = description or "Imported with python -m lib import"
        images_dir = tmp / (model.images_dir or ".")
        labels_dir = tmp / (model.labels_dir or LABELS_DIR)
        for sub in (FINAL, ORIGINAL):
            (labels_dir / sub).mkdir(parents=True, exist_ok=True)
        for r in records:
            image = problems.catch(read_image, r.image_path)
            if image is None:
                continue
            height, width = image.shape
            box = None
            if r.box is not None:
                box = problems.catch(validate_box, r.box, width, height, f"{r.image_path} (image {r.image!r})")
                if box is None:
                    continue
            name = f"{r.image}.png"
            image_info = {"ts": now, "name": name, "patient_id": r.patient_id}
            if r.label is None and box is not None:
                image_info["box"] = list(box)
            obj = ImageLabelModel(image=DataModel(ext=".png", info=image_info))  # (pydantic copies the dicts)
            if r.label is not None:
                label = np.zeros((height, width), dtype=np.uint8)
                if r.mask_path is not None:
                    mask = problems.catch(read_mask, r.mask_path)
                    if mask is None:
                        continue
                    if mask.shape != (height, width):
                        problems.add(
                            f"{r.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{r.image_path.name} is {width}x{height}"
                        )
                        continue
                    if r.label == "normal" and mask.any():
                        problems.add(f"{r.mask_path}: {int(mask.sum())} anomaly pixels but image {r.image!r} is labelled normal")
                        continue
                    label = mask.astype(np.uint8)
                write_png(labels_dir / FINAL / name, label)
                label_info = {"ts": now, "name": name, "label": r.label}
                if box is not None:
                    label_info["box"] = list(box)
                label_info["patient_id"] = r.patient_id
                label_info["has_mask"] = r.label == "normal" or r.mask_path is not None
                obj.labels[FINAL] = DataModel(ext=".png", info=label_info)
            write_png(images_dir / name, image)
            model.objects[r.image] = obj
        problems.raise_if_any()
        (tmp / DATASTORE_CONFIG).write_text(
            json.dumps(model.model_dump(exclude={"base_path"}), indent=2, default=str), encoding="utf-8"
        )
    return read_datastore(target)


def open_local_datastore(root: str | os.PathLike, extensions: list[str] | None = None):
    """monailabel's own ``LocalDatastore`` on ``root`` with the server's default file patterns (read-only use)."""
    from monailabel.datastore.local import LocalDatastore

    return LocalDatastore(
        str(root),
        extensions=default_extensions() if extensions is None else extensions,
        auto_reload=False,
        read_only=True,
    )
