"""The flat dataset layout: what a user prepares by hand and every command accepts.

::

    DIR/images/<name>.png | .jpg | .jpeg | .dcm   8-bit grayscale or RGB (converted to gray), DICOM one frame
    DIR/masks/<name>.png                          only for distended images: nonzero pixels = distended recess
    DIR/labels.csv                                columns exactly image,patient_id,label,x_min,y_min,x_max,y_max

``image`` is the file name without its extension (``a.png`` is also accepted
and read as ``a``); ``label`` is ``normal`` or ``distended`` (case-insensitive);
the box is in pixels of that image, x to the right, y down, ``x_max`` and
``y_max`` exclusive (numpy slicing ``image[y_min:y_max, x_min:x_max]``).

Every row needs a label and a box. An image file without a row is read as an
*unlabelled* image (label and box None, its own name as patient id): that is
how new images are brought in for annotation. A normal image has no mask (an
all-zero mask file is tolerated and ignored); a distended image may lack one
(then it has no pixel ground truth).

:func:`read_flat` checks everything and raises one
:class:`~lib.errors.DataError` listing every problem found (file, line, field),
so that a hand-made table can be fixed in one pass. :func:`write_flat` writes
the layout atomically (all files appear at once, or none) and validates the
result with :func:`read_flat` before it appears.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from lib.data.atomic import atomic_dir
from lib.data.imageio import IMAGE_EXTENSIONS, image_name, read_image, read_mask, write_png
from lib.data.records import Box, Record, validate_box, validate_label
from lib.errors import DataError

CSV_COLUMNS = ("image", "patient_id", "label", "x_min", "y_min", "x_max", "y_max")
BOX_COLUMNS = CSV_COLUMNS[3:]
LABELS_CSV = "labels.csv"
IMAGES_DIR = "images"
MASKS_DIR = "masks"

MAX_LISTED = 50
"""How many problems one error message lists before summarising the rest."""


class Problems:
    """Collects problem messages (each naming its file and field) and raises them as one DataError.

    Shared by the dataset readers: a user who prepared 400 images by hand wants
    the whole list of what is wrong, not one problem per run.
    """

    def __init__(self, what: str):
        self.what = what
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def catch(self, func, *args, **kwargs):
        """Call ``func``; on :class:`DataError` record its message and return None."""
        try:
            return func(*args, **kwargs)
        except DataError as exc:
            self.add(str(exc))
            return None

    def __bool__(self) -> bool:
        return bool(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def raise_if_any(self) -> None:
        """Raise one :class:`DataError` listing the problems (at most :data:`MAX_LISTED`)."""
        if not self.messages:
            return
        n = len(self.messages)
        lines = [f"{self.what}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  - {m}" for m in self.messages[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        raise DataError("\n".join(lines))


def check_image_name(name: str, where: str) -> str:
    """Return ``name`` if it can be a file name and an id in every layout, else raise DataError."""
    if not name:
        raise DataError(f"{where}: image name is empty")
    if name != name.strip():
        raise DataError(f"{where}: image name {name!r} starts or ends with white space")
    if "/" in name or "\\" in name or name.startswith(".") or any(ord(c) < 32 for c in name):
        raise DataError(f"{where}: image name {name!r} cannot be a file name (no '/', '\\', control characters or leading '.')")
    return name


def is_flat(root: str | os.PathLike) -> bool:
    """True if ``root`` has the two things the flat layout needs: ``images/`` and ``labels.csv``."""
    root = Path(root)
    return (root / IMAGES_DIR).is_dir() and (root / LABELS_CSV).is_file()


def _image_files(images_dir: Path, problems: Problems) -> tuple[dict[str, Path], set[str]]:
    by_name: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            problems.add(f"{path}: sub-folders of images/ are not read; put every image directly in images/")
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.add(f"{path}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
            continue
        by_name.setdefault(image_name(path), []).append(path)
    files, duplicates = {}, set()
    for name, paths in by_name.items():
        if len(paths) > 1:
            duplicates.add(name)
            problems.add(
                f"{images_dir}: duplicate image name {name!r}: {', '.join(p.name for p in paths)}; "
                "names (without extension) must be unique"
            )
            continue
        files[name] = paths[0]
    return files, duplicates


def _mask_files(masks_dir: Path, problems: Problems) -> dict[str, Path]:
    masks: dict[str, Path] = {}
    if not masks_dir.is_dir():
        return masks
    for path in sorted(masks_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.suffix.lower() != ".png":
            problems.add(f"{path}: masks must be PNG files masks/<image>.png")
            continue
        masks[path.name[: -len(".png")]] = path
    return masks


def _read_rows(csv_path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs; raises DataError on a wrong header (nothing else can be read then)."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DataError(f"{csv_path}: empty file; the first line must be {','.join(CSV_COLUMNS)}")
    missing = [c for c in CSV_COLUMNS if c not in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if missing or unknown or duplicated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        if duplicated:
            parts.append(f"repeated column(s) {', '.join(duplicated)}")
        raise DataError(f"{csv_path}: header: {'; '.join(parts)}; the columns must be exactly {','.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{csv_path}:{reader.line_num}: malformed CSV ({exc})") from None
    return rows


def _parse_box_fields(row: dict, where: str):
    values = [(row.get(c) or "").strip() for c in BOX_COLUMNS]
    if not any(values):
        raise DataError(f"{where}: missing box (x_min, y_min, x_max, y_max are empty)")
    empty = [c for c, v in zip(BOX_COLUMNS, values) if not v]
    if empty:
        raise DataError(f"{where}: missing box field(s) {', '.join(empty)}")
    numbers = []
    for c, v in zip(BOX_COLUMNS, values):
        try:
            numbers.append(float(v))
        except ValueError:
            raise DataError(f"{where}: {c} = {v!r} is not a number") from None
    return numbers


def read_flat(root: str | os.PathLike) -> list[Record]:
    """Read and validate a flat dataset; return its records (rows in CSV order, then unlabelled images).

    Every image is decoded once (to find unreadable files), masks are checked
    against their image's size and class.

    Raises:
        DataError: listing every problem found (missing folder or table, bad
            header, missing or duplicate names, bad labels or boxes, unreadable
            images, mask size mismatch, a non-empty mask on a normal image...).
    """
    root = Path(root)
    images_dir, masks_dir, csv_path = root / IMAGES_DIR, root / MASKS_DIR, root / LABELS_CSV
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if not images_dir.is_dir():
        raise DataError(f"{root}: no images/ folder (the flat layout needs images/, labels.csv and optionally masks/)")
    if not csv_path.is_file():
        raise DataError(f"{root}: no labels.csv (columns {','.join(CSV_COLUMNS)})")

    problems = Problems(f"{root}: flat dataset")
    files, duplicate_files = _image_files(images_dir, problems)
    masks = _mask_files(masks_dir, problems)
    rows = _read_rows(csv_path)

    sizes: dict[str, tuple[int, int] | None] = {}

    def size_of(name: str) -> tuple[int, int] | None:
        if name not in sizes:
            image = problems.catch(read_image, files[name])
            sizes[name] = None if image is None else (image.shape[1], image.shape[0])
        return sizes[name]

    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if None in row:  # more fields than columns
            problems.add(f"{csv_path}:{line}: {len(CSV_COLUMNS) + len(row[None])} fields, expected {len(CSV_COLUMNS)}")
            continue
        name = (row.get("image") or "").strip()
        if not name:
            problems.add(f"{csv_path}:{line}: image is empty")
            continue
        if name.lower().endswith(IMAGE_EXTENSIONS):
            name = image_name(name)
        where = f"{csv_path}:{line} (image {name!r})"
        if problems.catch(check_image_name, name, where) is None:
            continue
        if name in seen:
            problems.add(f"{where}: duplicate image {name!r} (already on line {seen[name]})")
            continue
        seen[name] = line
        patient_id = (row.get("patient_id") or "").strip()
        if not patient_id:
            problems.add(f"{where}: patient_id is empty")
        raw_label = (row.get("label") or "").strip()
        label = None
        if not raw_label:
            problems.add(f"{where}: missing label (normal or distended)")
        else:
            label = problems.catch(validate_label, raw_label.lower(), where)
        numbers = problems.catch(_parse_box_fields, row, where)
        if name not in files:
            if name not in duplicate_files:  # those were reported with the file listing
                problems.add(f"{where}: image file not found: {images_dir}/{name} with one of {', '.join(IMAGE_EXTENSIONS)}")
            continue
        size = size_of(name)
        if size is None:
            continue
        box = None if numbers is None else problems.catch(validate_box, numbers, size[0], size[1], where)
        mask_path = masks.get(name)
        if mask_path is not None:
            mask = problems.catch(read_mask, mask_path)
            if mask is None:
                mask_path = None
            elif mask.shape != (size[1], size[0]):
                problems.add(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {files[name].name} is {size[0]}x{size[1]}"
                )
            elif label == "normal":
                if mask.any():
                    problems.add(
                        f"{mask_path}: {int(mask.sum())} anomaly pixels but {csv_path.name} line {line} labels "
                        f"{name!r} normal (a normal image has no mask)"
                    )
                mask_path = None  # an all-zero mask of a normal image is the empty anomaly mask
            elif label == "distended" and not mask.any():
                problems.add(f"{mask_path}: mask of distended image {name!r} is empty; draw the region or remove the file")
        if patient_id and label and box:
            records.append(Record(name, files[name], patient_id, label, box, mask_path))

    for name in sorted(set(masks) - set(files) - duplicate_files):
        if name not in seen:
            problems.add(f"{masks[name]}: mask without an image {images_dir}/{name}.*")
    for name in sorted(set(files) - set(seen)):
        where = f"{files[name]}"
        if problems.catch(check_image_name, name, where) is None:
            continue
        if size_of(name) is None:
            continue
        if name in masks:
            problems.add(f"{masks[name]}: mask for image {name!r} which has no row in {csv_path.name} (no label)")
            continue
        records.append(Record(name, files[name], name))
    problems.raise_if_any()
    return records


@dataclass(frozen=True)
class FlatItem:
    """One image to write with :func:`write_flat`.

    Attributes:
        image: the image name (file name without extension).
        patient_id: the patient.
        label: ``"normal"``, ``"distended"``, or None for an unlabelled image (no CSV row, so
            its patient id is not stored: it reads back as the image name).
        box: ``(x_min, y_min, x_max, y_max)`` pixels, max exclusive; None only when unlabelled.
        pixels: a 2D ``(H, W)`` array (float in ``[0, 1]`` or ``uint8``), written as an
            8-bit grayscale PNG; or the path of an image file, copied as is (its extension kept).
        mask: a 2D ``(H, W)`` array (nonzero = distended region) or a mask file path; None when
            there is none. A normal image's all-zero mask is not written.
    """

    image: str
    patient_id: str
    label: str | None
    box: Box | None
    pixels: np.ndarray | str | os.PathLike
    mask: np.ndarray | str | os.PathLike | None = None

    @classmethod
    def from_record(cls, record: Record) -> "FlatItem":
        """The item that writes a record's image and mask files as they are."""
        return cls(record.image, record.patient_id, record.label, record.box, record.image_path, record.mask_path)


def _format_box(box) -> list[str]:
    return [str(int(v)) for v in box]


def write_flat(root: str | os.PathLike, items: Iterable[FlatItem | Record], *, overwrite: bool = False) -> list[Record]:
    """Write a flat dataset atomically and return its records (read back and validated).

    The folder is built beside ``root`` and renamed into place only after
    :func:`read_flat` accepted it, so a reader never sees a half-written dataset
    and a bad item leaves nothing behind.

    Args:
        root: the dataset folder to create.
        items: :class:`FlatItem` or :class:`~lib.data.records.Record` (its files are copied).
        overwrite: replace an existing flat dataset at ``root``. Without it an
            existing non-empty ``root`` is an error; a non-empty folder that is not
            a flat dataset is never replaced.

    Raises:
        DataError: ``root`` exists, an item is invalid (the message lists every problem).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if not overwrite:
            raise DataError(f"{root}: already exists and is not empty; choose a new folder or overwrite it")
        if not is_flat(root):
            raise DataError(f"{root}: exists and is not a flat dataset (no images/ and labels.csv); refusing to replace it")
    items = [FlatItem.from_record(i) if isinstance(i, Record) else i for i in items]
    problems = Problems(f"{root}: writing flat dataset")
    seen: set[str] = set()
    for item in items:
        if problems.catch(check_image_name, item.image, f"item {item.image!r}") is None:
            continue
        if item.image in seen:
            problems.add(f"item {item.image!r}: duplicate image name")
        seen.add(item.image)
        if item.label is None and item.box is not None:
            problems.add(f"item {item.image!r}: a box without a label cannot be stored in the flat layout")
        if not isinstance(item.pixels, np.ndarray) and Path(item.pixels).suffix.lower() not in IMAGE_EXTENSIONS:
            problems.add(f"{item.pixels}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
    problems.raise_if_any()

    with atomic_dir(root) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        (tmp / MASKS_DIR).mkdir()
        rows = []
        for item in items:
            if isinstance(item.pixels, np.ndarray):
                if item.pixels.ndim != 2:
                    raise DataError(f"item {item.image!r}: pixels must be a 2D (H, W) array, got shape {item.pixels.shape}")
                write_png(tmp / IMAGES_DIR / f"{item.image}.png", item.pixels)
            else:
                src = Path(item.pixels)
                if not src.is_file():
                    raise DataError(f"{src}: image file not found (item {item.image!r})")
                shutil.copyfile(src, tmp / IMAGES_DIR / f"{item.image}{src.suffix.lower()}")
            if item.mask is not None:
                mask = item.mask if isinstance(item.mask, np.ndarray) else read_mask(item.mask)
                mask = np.asarray(mask) != 0
                if item.label != "normal" or mask.any():  # a normal image's empty mask is no mask
                    write_png(tmp / MASKS_DIR / f"{item.image}.png", mask)
            if item.label is not None:
                box = item.box if item.box is not None else ("",) * 4
                rows.append([item.image, item.patient_id, item.label, *(_format_box(box) if item.box else box)])
        with open(tmp / LABELS_CSV, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
        try:
            records = read_flat(tmp)
        except DataError as exc:
            raise DataError(str(exc).replace(str(tmp), str(root))) from None
        records = [
            Record(
                r.image,
                root / r.image_path.relative_to(tmp),
                r.patient_id,
                r.label,
                r.box,
                None if r.mask_path is None else root / r.mask_path.relative_to(tmp),
            )
            for r in records
        ]
    return records

