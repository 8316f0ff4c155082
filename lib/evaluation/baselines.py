"""No-learning sanity baselines, evaluated on the same folds and boxes as LoRIS.

- ``box-intensity``: how dark the box is. Score = mean darkness ``1 - intensity``
  inside the box; anomaly map = darkness inside the box, 0 outside. A distended
  recess is a thick dark area, so this is what a trivial detector would use. If
  it beats LoRIS, the data is too easy or something is wrong.
- ``box-shape``: the box's height / width ratio; the image is never looked at.
  It measures how much the annotator's box alone gives the class away
  (a clinician boxes a distended recess with a taller box). No anomaly map.

The learned comparisons (``riad``, ``autoencoder``) are modes of the method
core (``LorisSettings.mode``), trained with the same network and budget.
"""

from __future__ import annotations

import numpy as np

from lib.data.records import Box
from lib.data.summary import box_darkness_score
from lib.data.summary import box_shape_score as summary_box_shape_score

BASELINES = ("box-intensity", "box-shape")
NETWORK_METHODS = ("loris", "riad", "autoencoder")
METHODS = NETWORK_METHODS + BASELINES


def box_intensity_map(image: np.ndarray, box: Box) -> np.ndarray:
    """Darkness ``1 - image`` inside the box, 0 outside; ``(H, W)`` float32 in [0, 1].

    Args:
        image: ``(H, W)`` float in [0, 1].
        box: ``(x_min, y_min, x_max, y_max)`` in the image's pixels, max exclusive.
    """
    x0, y0, x1, y1 = box
    out = np.zeros(image.shape, dtype=np.float32)
    out[y0:y1, x0:x1] = 1.0 - np.asarray(image[y0:y1, x0:x1], dtype=np.float32)
    return out


def box_intensity_score(image: np.ndarray, box: Box) -> float:
    """Mean darkness ``1 - intensity`` inside the box, in [0, 1] (higher = darker = more anomalous).

    The same score as the dataset summary's ``box_intensity_auroc``.
    """
    return box_darkness_score(image, box)


def box_shape_score(box: Box) -> float:
    """The box's height / width ratio (dimensionless; higher = taller box), as in the dataset summary."""
    return float(summary_box_shape_score(box))
