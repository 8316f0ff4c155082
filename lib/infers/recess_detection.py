"""The ``recess_detection`` infer task: a thin MONAI Label wrapper over :class:`RecessDetector`.

``POST /infer/recess_detection?image=<id>`` (no params needed) answers with

* the label file: the box as a binary PNG mask (``uint8`` 0/1, the image's ``H x W``;
  all zero when nothing is found), so generic clients can show it;
* JSON params: ``found`` (bool), ``box`` ``[x_min, y_min, x_max, y_max]`` in pixels of
  the image, max exclusive, or None; ``confidence`` in [0, 1] or None; ``image_size``
  ``[W, H]``; ``frame`` and ``frame_count``; ``model_version``.

A DICOM cine loop is boxed on the frame ``params.frame`` names (0 = the first), frame 0
when none is named.

Listed in ``/info`` before training; infer then answers 409 "not trained yet".
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.utils.others.generic import name_to_device

from lib.data.imageio import write_png
from lib.infers.base import DatastoreImageInfer
from lib.infers.http_errors import user_errors
from lib.infers.model_cache import ModelCache


def load_detector(model_dir: Path, device: str):
    """The recess detector of ``model_dir`` (what the infer tasks serve; also checks uploaded models)."""
    from lib.detection.infer import RecessDetector

    return RecessDetector.load(model_dir, device=device)


def detector_cache(model_dir: Path) -> ModelCache:
    """The shared loaded :class:`RecessDetector` of ``model_dir`` (both infer tasks and scoring use it)."""
    return ModelCache.for_dir(model_dir, load_detector, "recess_detection")


class RecessDetectionInfer(DatastoreImageInfer):
    """Propose the recess box of one image."""

    task_name = "recess_detection"

    def __init__(self, model_dir: Path, datastore_root: Path,
                 description: str = "Recess detector: the box around the suprapatellar recess"):
        super().__init__(
            path=str(Path(model_dir) / "model.pt"),
            network=None,
            type=InferType.SEGMENTATION,  # so generic clients show the box mask as a label
            labels={"recess": 1},
            dimension=2,
            description=description,
        )
        self.model_dir = Path(model_dir)
        self.datastore_root = Path(datastore_root)
        self._detector = detector_cache(self.model_dir)

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cuda"):
        image = data["image"]
        with user_errors("recess_detection"):
            found = self._detector.get(name_to_device(device)).detect(image)
        mask = np.zeros(image.shape, dtype=np.uint8)
        if found is not None:
            x0, y0, x1, y1 = found.box
            mask[y0:y1, x0:x1] = 1
        data["mask"] = mask
        data["result"] = {
            "found": found is not None,
            "box": [int(v) for v in found.box] if found is not None else None,
            "confidence": float(found.confidence) if found is not None else None,
            "image_size": [int(image.shape[1]), int(image.shape[0])],
            "frame": int(data.get("frame") or 0),
            "frame_count": data["image_file"].frame_count,
            "model_version": self._detector.version(),
        }
        return data

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        write_png(path, data["mask"])
        return path, dict(data["result"])
