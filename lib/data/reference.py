"""The paper's reference layout, with its precomputed patient folds.

::

    ROOT/anomaly_<fold>/sqr/{train,valid,test}/{nd,distended}/<image>.png
    ROOT/anomaly_<fold>/sqr/boxes/<image>.txt                  YOLO: "class cx cy w h", fractions of W and H
    ROOT/anomaly_<fold>/sqr/ground_truth/distended/<image>.png  nonzero = distended recess

``nd`` holds the normal (non-distended) images. ``ROOT`` may also be one
``anomaly_<fold>`` folder (one fold) or its ``sqr`` folder. The same image
appears in every fold (in train, valid or test); its class and box must agree
between folds, and its files are taken from the lowest fold. ``valid`` may be
missing (then empty). Box files of images not in the fold are ignored.

YOLO boxes become pixel boxes by rounding outward (floor the minimum, ceil
the maximum) after snapping values within :data:`SNAP_PX` of a whole pixel,
so that a pixel box written with a few decimals comes back exactly and a
fractional one is always covered.

Patient ids: the layout has none, so one is derived from the image name: by
default the part before the first ``_`` or ``-`` (``p012_3.png`` -> ``p012``;
a name without either is its own patient), or the first group of a regular
expression given as ``patient_regex``. The folds are precomputed by patient,
so the derived id is informative only (summaries, later re-splits).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from lib.data.flat import Problems, check_image_name
from lib.data.imageio import IMAGE_EXTENSIONS, image_name, image_size, read_image, read_mask
from lib.data.records import Box, Record, validate_box
from lib.data.splits import Fold
from lib.errors import DataError

SPLITS = ("train", "valid", "test")
CLASS_DIRS = {"nd": "normal", "distended": "distended"}
DEFAULT_PATIENT_REGEX = r"^([^_-]+)[_-]"
SNAP_PX = 0.05
"""YOLO values within this many pixels of a whole pixel are taken as that pixel (decimal rounding noise)."""
_FOLD_DIR = re.compile(r"^anomaly_(.+)$")


def patient_id_of(name: str, patient_regex: str | None = None) -> str:
    """The patient id derived from an image name (see the module docstring)."""
    pattern = re.compile(patient_regex or DEFAULT_PATIENT_REGEX)
    match = pattern.search(name)
    if not match:
        return name
    value = match.group(1) if pattern.groups else match.group(0)
    return value or name


def fold_dirs(root: str | os.PathLike) -> list[Path]:
    """The ``anomaly_<fold>`` folders (each with a ``sqr/`` folder) that ``root`` is, holds, or is the ``sqr`` of."""
    root = Path(root)
    if root.name == "sqr" and _FOLD_DIR.match(root.parent.name):
        return [root.parent]
    if _FOLD_DIR.match(root.name) and (root / "sqr").is_dir():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _FOLD_DIR.match(p.name) and (p / "sqr").is_dir())


def is_reference(root: str | os.PathLike) -> bool:
    """True if ``root`` has at least one ``anomaly_<fold>/sqr`` folder."""
    return bool(fold_dirs(root))


def _fold_indices(dirs: list[Path]) -> list[int]:
    suffixes = [_FOLD_DIR.match(d.name).group(1) for d in dirs]
    if all(s.isdigit() for s in suffixes) and len({int(s) for s in suffixes}) == len(suffixes):
        return [int(s) for s in suffixes]
    return list(range(len(dirs)))


def yolo_to_box(values, width: int, height: int, where: str) -> Box:
    """A YOLO ``cx cy w h`` box (fractions of the image size) -> integer pixel box, rounded outward.

    Raises:
        DataError: values outside ``[0, 1]`` (beyond rounding), or a zero-area box.
    """
    cx, cy, w, h = (float(v) for v in values)
    tol = 1e-3
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: box has zero or negative size (w={w}, h={h})")
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    if min(x0, y0) < -tol or max(x1, y1) > 1 + tol:
        raise DataError(
            f"{where}: YOLO box cx={cx} cy={cy} w={w} h={h} leaves the image (values must be fractions of the image size)"
        )

    def low(v: float) -> int:
        r = round(v)
        return int(r) if abs(v - r) <= SNAP_PX else math.floor(v)

    def high(v: float) -> int:
        r = round(v)
        return int(r) if abs(v - r) <= SNAP_PX else math.ceil(v)

    box = (
        max(low(x0 * width), 0),
        max(low(y0 * height), 0),
        min(high(x1 * width), width),
        min(high(y1 * height), height),
    )
    return validate_box(box, width, height, where)


def box_to_yolo(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """Integer pixel box -> YOLO ``(cx, cy, w, h)`` as fractions of the image size (inverse of :func:`yolo_to_box`)."""
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)


def read_yolo_file(path: Path, width: int, height: int) -> Box:
    """The one recess box of a YOLO box file, in pixels.

    Raises:
        DataError: missing or empty file, malformed line, several different boxes, bad box.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing box file")
    boxes = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}:{n}"
        if len(parts) != 5:
            raise DataError(f"{where}: expected 'class cx cy w h' (5 numbers), got {len(parts)} fields")
        try:
            values = [float(p) for p in parts[1:]]
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r}") from None
        boxes.append(yolo_to_box(values, width, height, where))
    if not boxes:
        raise DataError(f"{path}: empty box file (missing box)")
    if len(set(boxes)) > 1:
        raise DataError(f"{path}: {len(set(boxes))} different boxes; the recess needs exactly one")
    return boxes[0]


def load_reference(root: str | os.PathLike, patient_regex: str | None = None) -> tuple[list[Record], list[Fold]]:
    """Read and validate the reference layout: every image once, and the precomputed folds.

    Args:
        root: the folder holding ``anomaly_<fold>`` folders (or one of them, or its ``sqr``).
        patient_regex: how to derive patient ids from image names (see module docstring).

    Returns:
        ``(records, folds)``: records in order of first appearance; each fold's
        train/valid/test lists hold the same :class:`Record` objects.

    Raises:
        DataError: listing every problem (missing box files, bad boxes, unreadable
            images, mask size mismatch, masks of normal images, an image in two
            splits of one fold, class or box disagreeing between folds...).
    """
    root = Path(root)
    if patient_regex:
        try:
            re.compile(patient_regex)
        except re.error as exc:
            raise DataError(f"patient regex {patient_regex!r} is not a valid regular expression ({exc})") from None
    dirs = fold_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no anomaly_<fold>/sqr folders (the reference layout)")
    problems = Problems(f"{root}: reference dataset")
    records: dict[str, Record] = {}
    origin: dict[str, Path] = {}  # name -> box file that gave the canonical record
    sizes: dict[str, tuple[int, int] | None] = {}
    folds = []
    for index, fold_dir in zip(_fold_indices(dirs), dirs):
        sqr = fold_dir / "sqr"
        boxes_dir, masks_dir = sqr / "boxes", sqr / "ground_truth" / "distended"
        for split in ("train", "test"):
            if not (sqr / split).is_dir():
                problems.add(f"{sqr}: missing {split}/ folder (with nd/ and distended/)")
        seen: dict[str, Path] = {}
        fold = Fold(index=index)
        for split in SPLITS:
            for class_dir, label in CLASS_DIRS.items():
                folder = sqr / split / class_dir
                if not folder.is_dir():
                    continue
                for path in sorted(folder.iterdir()):
                    if path.name.startswith(".") or path.is_dir():
                        continue
                    if path.suffix.lower() not in IMAGE_EXTENSIONS:
                        problems.add(f"{path}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
                        continue
                    name = image_name(path)
                    if problems.catch(check_image_name, name, str(path)) is None:
                        continue
                    if name in seen:
                        problems.add(f"{path}: image {name!r} is also {seen[name]}; an image belongs to one split and class per fold")
                        continue
                    seen[name] = path
                    record = _record(name, path, label, boxes_dir, masks_dir, records, origin, sizes, problems, patient_regex)
                    if record is not None:
                        getattr(fold, split).append(record)
        if masks_dir.is_dir():
            for mask in sorted(masks_dir.iterdir()):
                if mask.name.startswith(".") or mask.is_dir():
                    continue
                name = image_name(mask)
                if name not in seen:
                    problems.add(f"{mask}: mask without an image in {fold_dir.name}")
                elif seen[name].parent.name != "distended":
                    problems.add(f"{mask}: mask of {seen[name]}, which is a normal (nd) image")
        folds.append(fold)
    problems.raise_if_any()
    return list(records.values()), folds


def _record(name, path, label, boxes_dir, masks_dir, records, origin, sizes, problems, patient_regex) -> Record | None:
    """The record of one image file of one fold; the first fold's copy is decoded and becomes canonical."""
    if name not in sizes:
        image = problems.catch(read_image, path)
        sizes[name] = None if image is None else (image.shape[1], image.shape[0])
    if sizes[name] is None:
        return None
    width, height = sizes[name]
    if name in records:
        other = problems.catch(image_size, path)
        if other is not None and other != (width, height):
            problems.add(f"{path}: {other[0]}x{other[1]} but the same image in another fold is {width}x{height}")
            return None
    box_file = boxes_dir / f"{name}.txt"
    box = problems.catch(read_yolo_file, box_file, width, height)
    if box is None:
        return None
    if name in records:
        first = records[name]
        if first.label != label:
            problems.add(f"{path}: {label} here but {first.label} in {first.image_path}")
        elif first.box != box:
            problems.add(f"{box_file}: box {list(box)} but {origin[name]} gives {list(first.box)}")
        return first
    mask_path = None
    if label == "distended":
        candidate = masks_dir / f"{name}.png"
        if candidate.is_file():
            mask = problems.catch(read_mask, candidate)
            if mask is None:
                return None
            if mask.shape != (height, width):
                problems.add(f"{candidate}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {path.name} is {width}x{height}")
                return None
            if not mask.any():
                problems.add(f"{candidate}: mask of distended image {name!r} is empty")
                return None
            mask_path = candidate
    record = Record(name, path, patient_id_of(name, patient_regex), label, box, mask_path)
    records[name] = record
    origin[name] = box_file
    return record
