"""One entry point for every command that reads ``--data DIR``: detect the layout, read, validate.

Layouts (see each module for details):

- ``flat`` (:mod:`lib.data.flat`): ``images/``, ``labels.csv`` and optionally ``masks/``;
- ``reference`` (:mod:`lib.data.reference`): the paper's ``anomaly_<fold>/sqr/...`` folders, with folds;
- ``datastore`` (:mod:`lib.data.datastore`): a MONAI Label datastore (``datastore_v2.json``
  and/or ``labels/final/``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lib.data.flat import CSV_COLUMNS, is_flat, read_flat
from lib.data.records import Record
from lib.data.reference import is_reference, load_reference
from lib.data.splits import Fold
from lib.errors import DataError

LAYOUTS = ("flat", "reference", "datastore")

LAYOUT_HELP = f"""\
  flat:      DIR/images/<name>.png|.jpg|.dcm, DIR/labels.csv with columns {','.join(CSV_COLUMNS)},
             optionally DIR/masks/<name>.png for distended images
  reference: DIR/anomaly_<fold>/sqr/{{train,valid,test}}/{{nd,distended}}/<name>.png,
             DIR/anomaly_<fold>/sqr/boxes/<name>.txt (YOLO), .../sqr/ground_truth/distended/<name>.png
  datastore: a MONAI Label datastore: DIR/datastore_v2.json or DIR/labels/final/, images in DIR"""


@dataclass
class Dataset:
    """A dataset read from disk.

    Attributes:
        records: every image once.
        folds: the precomputed cross-validation folds (reference layout), else None.
        layout: ``"flat"``, ``"reference"`` or ``"datastore"``.
        root: the folder it was read from.
    """

    records: list[Record]
    folds: list[Fold] | None
    layout: str
    root: Path

    def summary(self) -> dict:
        """Counts for people: images per class (``"unlabelled"`` for None), patients, masks, boxes, folds."""
        classes = Counter(r.label or "unlabelled" for r in self.records)
        return {
            "layout": self.layout,
            "root": str(self.root),
            "images": len(self.records),
            "classes": {k: classes.get(k, 0) for k in ("normal", "distended", "unlabelled")},
            "patients": len({r.patient_id for r in self.records}),
            "boxes": sum(r.box is not None for r in self.records),
            "masks": sum(r.mask_path is not None for r in self.records),
            "folds": None if self.folds is None else len(self.folds),
        }


def detect_layout(path: str | os.PathLike) -> str:
    """The layout of ``path``: ``"flat"``, ``"reference"`` or ``"datastore"``.

    Raises:
        DataError: no layout (or more than one) matches; the message says what each needs.
    """
    from lib.data.datastore import is_datastore

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; a dataset is one of these layouts:\n{LAYOUT_HELP}")
    found = [name for name, test in (("flat", is_flat), ("reference", is_reference), ("datastore", is_datastore)) if test(path)]
    if not found:
        raise DataError(f"{path}: not a dataset in any known layout; it must be one of:\n{LAYOUT_HELP}")
    if len(found) > 1:
        raise DataError(f"{path}: looks like several layouts at once ({', '.join(found)}); keep one per folder:\n{LAYOUT_HELP}")
    return found[0]


def load_dataset(path: str | os.PathLike, *, patient_regex: str | None = None) -> Dataset:
    """Read and validate the dataset at ``path`` in whichever layout it is.

    Args:
        path: the dataset folder.
        patient_regex: reference layout only: how patient ids are derived from
            image names (default: the part before the first ``_`` or ``-``).

    Raises:
        DataError: unknown layout, or every problem found in the data.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "flat":
        return Dataset(read_flat(path), None, layout, path)
    if layout == "reference":
        records, folds = load_reference(path, patient_regex)
        return Dataset(records, folds, layout, path)
    from lib.data.datastore import read_datastore

    return Dataset(read_datastore(path), None, layout, path)
