"""Builders of small real datasets on disk (flat and reference layouts) for the format tests, numpy + PIL only."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from lib.data.flat import CSV_COLUMNS
from lib.data.reference import box_to_yolo

W, H = 40, 24  # not square, so that a transposition cannot go unnoticed


def gray(seed: int, width: int = W, height: int = H) -> np.ndarray:
    """A deterministic 8-bit grayscale test image ``(H, W)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)


def asymmetric_mask(width: int = W, height: int = H) -> np.ndarray:
    """An L-shaped ``(H, W)`` bool mask near the top-left corner: no flip or transpose maps it onto itself."""
    mask = np.zeros((height, width), dtype=bool)
    mask[2:12, 3:6] = True  # vertical bar
    mask[9:12, 3:15] = True  # foot pointing right
    return mask


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_csv(path: Path, rows: list[list], header=CSV_COLUMNS) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


FLAT_ROWS = [
    ["p1_a", "p1", "normal", 5, 4, 30, 16],
    ["p1_b", "p1", "distended", 2, 1, 20, 14],
    ["p2_a", "p2", "normal", 0, 0, W, H],
    ["p2_b", "p2", "normal", 10, 5, 11, 6],
]


def make_flat(root: Path, rows: list[list] | None = None) -> Path:
    """A valid flat dataset (:data:`FLAT_ROWS`): 3 normal images, 1 distended with an L-shaped mask, 2 patients."""
    rows = [list(r) for r in FLAT_ROWS] if rows is None else rows
    for i, row in enumerate(rows):
        save_png(root / "images" / f"{row[0]}.png", gray(i))
    save_png(root / "masks" / "p1_b.png", asymmetric_mask().astype(np.uint8) * 255)
    write_csv(root / "labels.csv", rows)
    return root


def make_reference(root: Path, boxes_decimals: int = 6) -> Path:
    """Two-fold reference layout: patient p1 (one normal, one distended with mask) and p2 (two normal).

    Fold 0 trains on p1 and tests on p2; fold 1 the other way round; p2_b is in valid of fold 0.
    """
    images = {"p1_a": ("nd", gray(10)), "p1_b": ("distended", gray(11)), "p2_a": ("nd", gray(12)), "p2_b": ("nd", gray(13))}
    boxes = {"p1_a": (5, 4, 30, 16), "p1_b": (2, 1, 20, 14), "p2_a": (0, 0, W, H), "p2_b": (7, 3, 19, 22)}
    splits = [
        {"p1_a": "train", "p1_b": "train", "p2_a": "test", "p2_b": "valid"},
        {"p1_a": "test", "p1_b": "test", "p2_a": "train", "p2_b": "train"},
    ]
    for fold, split_of in enumerate(splits):
        sqr = root / f"anomaly_{fold}" / "sqr"
        for name, (class_dir, pixels) in images.items():
            save_png(sqr / split_of[name] / class_dir / f"{name}.png", pixels)
            cx, cy, w, h = box_to_yolo(boxes[name], W, H)
            (sqr / "boxes").mkdir(parents=True, exist_ok=True)
            (sqr / "boxes" / f"{name}.txt").write_text(
                f"0 {cx:.{boxes_decimals}f} {cy:.{boxes_decimals}f} {w:.{boxes_decimals}f} {h:.{boxes_decimals}f}\n"
            )
        save_png(sqr / "ground_truth" / "distended" / "p1_b.png", asymmetric_mask().astype(np.uint8) * 255)
    return root


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary folders an atomic write would leave behind in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))
