"""Tiny knee-ultrasound-like fixture for the LoRIS tests: 64 x 64 PNGs with a recess box.

A normal image shows a thin dark horizontal line in the box (a collapsed
recess) on a lighter speckled background; a distended one shows a thick dark
ellipse there (its mask is the ellipse). Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.data.imageio import write_png
from lib.data.records import Record


def make_image(rng: np.random.Generator, distended: bool, size: int = 64):
    """One synthetic frame ``(H, W)`` in ``[0, 1]``, its box and its anomaly mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 0.55 + 0.1 * np.sin(xx / 7.0 + rng.uniform(0, 6)) + 0.05 * (yy / size)
    image = base + rng.normal(0, 0.04, (size, size))
    bw, bh = int(rng.integers(26, 34)), int(rng.integers(14, 18))
    x0, y0 = int(rng.integers(8, size - bw - 8)), int(rng.integers(18, size - bh - 12))
    cx, cy = x0 + bw / 2, y0 + bh / 2
    mask = np.zeros((size, size), dtype=bool)
    if distended:
        mask = ((xx - cx) / (bw * 0.4)) ** 2 + ((yy - cy) / (bh * 0.38)) ** 2 <= 1.0
        image[mask] = 0.12 + rng.normal(0, 0.02, mask.sum())
    else:
        line = (np.abs(yy - cy) <= 0.6) & (np.abs(xx - cx) <= bw * 0.4)
        image[line] = 0.15
    return np.clip(image, 0, 1).astype(np.float32), (x0, y0, x0 + bw, y0 + bh), mask


def make_records(folder: Path, n_normal: int, n_distended: int, seed: int = 0, patients: int = 6,
                 prefix: str = "img") -> list[Record]:
    """Write images (and masks of distended ones) under ``folder`` and return their records."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_normal + n_distended):
        distended = i >= n_normal
        image, box, mask = make_image(rng, distended)
        name = f"{prefix}{i:03d}"
        write_png(folder / "images" / f"{name}.png", image)
        mask_path = None
        if distended:
            mask_path = folder / "masks" / f"{name}.png"
            write_png(mask_path, mask)
        records.append(Record(image=name, image_path=folder / "images" / f"{name}.png", patient_id=f"{prefix}p{i % patients}",
                              label="distended" if distended else "normal", box=box, mask_path=mask_path))
    return records
