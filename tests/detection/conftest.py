"""Tiny generated knee-ultrasound-like images for the detector tests: a dark ellipse (the recess) on speckle."""

from __future__ import annotations

import numpy as np
import pytest

from lib.data.imageio import write_png
from lib.data.records import Record


def ellipse_image(rng: np.random.Generator, width: int, height: int, distended: bool = False):
    """A ``(height, width)`` image in [0, 1] with a dark ellipse, and the ellipse's box (max exclusive)."""
    image = np.clip(0.55 + 0.12 * rng.standard_normal((height, width)), 0, 1)
    a = rng.uniform(0.22, 0.32) * width  # half width
    b = (rng.uniform(0.16, 0.22) if distended else rng.uniform(0.05, 0.08)) * height  # half height
    cx = rng.uniform(a + 2, width - a - 2)
    cy = rng.uniform(b + 2, height - b - 2)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx + 0.5 - cx) / a) ** 2 + ((yy + 0.5 - cy) / b) ** 2 <= 1.0
    image[inside] = 0.08 + 0.04 * rng.random(int(inside.sum()))
    ys, xs = np.nonzero(inside)
    return image.astype(np.float32), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def make_records(folder, n_patients: int, per_patient: int, seed: int = 0, n_distended: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for p in range(n_patients):
        for k in range(per_patient):
            distended = p < n_distended and k == 0
            width, height = int(rng.integers(72, 96)), int(rng.integers(56, 72))
            image, box = ellipse_image(rng, width, height, distended)
            path = folder / f"p{p:02d}_{k}.png"
            write_png(path, image)
            records.append(Record(image=path.stem, image_path=path, patient_id=f"p{p:02d}",
                                  label="distended" if distended else "normal", box=box))
    return records


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory):
    """8 patients x 3 images (one distended image for patient 0), sizes 72-95 x 56-71 px."""
    return make_records(tmp_path_factory.mktemp("det_images"), n_patients=8, per_patient=3, n_distended=1)
