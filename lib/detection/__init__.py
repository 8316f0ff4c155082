"""The recess box detector (a one-box centre-heatmap network on MONAI blocks), trained on normal images only.

Public API (heavy modules are imported on first use, so ``import lib.detection`` is cheap):

- :class:`~lib.detection.settings.DetectorSettings`: every default, ``quick()`` CPU preset.
- :func:`~lib.detection.train.train_detector`: train and write a model directory.
- :class:`~lib.detection.infer.RecessDetector` (``load``, ``detect``, ``detect_batch``) and
  :class:`~lib.detection.infer.Detection` (``box``, ``confidence``).
- :func:`~lib.detection.metrics.detection_metrics`: precision, mAP@50/75 (MONAI COCO metric), mean IoU.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DetectorSettings": "lib.detection.settings",
    "train_detector": "lib.detection.train",
    "RecessDetector": "lib.detection.infer",
    "Detection": "lib.detection.infer",
    "detection_metrics": "lib.detection.metrics",
    "box_metrics": "lib.detection.metrics",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lib.detection' has no attribute {name!r}")
