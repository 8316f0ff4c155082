"""The one in-memory description of a dataset item, whatever layout it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.errors import DataError

LABELS = ("normal", "distended")

Box = tuple[int, int, int, int]
"""``(x_min, y_min, x_max, y_max)`` in pixels of the image, x right, y down, max exclusive."""


@dataclass(frozen=True)
class Record:
    """One image of a dataset.

    Attributes:
        image: the image name (file name without extension), unique in the dataset.
        image_path: where the image file is.
        patient_id: identifier used to keep all images of one patient in one split.
        label: ``"normal"`` or ``"distended"``, or None when the image is unlabelled.
        box: the recess box, or None when nobody boxed it yet.
        mask_path: binary mask of the distended region, None for normal images
            (an empty anomaly mask) and for distended images without a mask.
        frame: the frame of a DICOM cine loop this record is (0 = the first); None for a single-frame image.
    """

    image: str
    image_path: Path
    patient_id: str
    label: str | None = None
    box: Box | None = None
    mask_path: Path | None = None
    frame: int | None = None

    @property
    def is_normal(self) -> bool:
        return self.label == "normal"


def validate_box(box, width: int, height: int, where: str) -> Box:
    """Check a box against an image of ``width`` x ``height`` pixels and return it as ints.

    Args:
        box: four numbers ``x_min, y_min, x_max, y_max`` (max exclusive).
        width, height: image size in pixels.
        where: what to name in the error message (file and row, request field...).

    Raises:
        DataError: the box is not four integers, is inverted or empty, or leaves the image.
    """
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise DataError(f"{where}: box must be four numbers x_min, y_min, x_max, y_max, got {box!r}") from None
    if len(values) != 4:
        raise DataError(f"{where}: box must have 4 values x_min, y_min, x_max, y_max, got {len(values)}")
    if any(v != int(v) for v in values):
        raise DataError(f"{where}: box coordinates must be whole pixels, got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"{where}: box {[x0, y0, x1, y1]} is empty or inverted (need x_min < x_max and y_min < y_max)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise DataError(f"{where}: box {[x0, y0, x1, y1]} leaves the {width}x{height} image")
    return (x0, y0, x1, y1)


def validate_label(label, where: str) -> str:
    """Return ``label`` if it is one of :data:`LABELS`, else raise a :class:`DataError`."""
    if label not in LABELS:
        raise DataError(f"{where}: unknown label {label!r}; valid labels are {', '.join(LABELS)}")
    return label
