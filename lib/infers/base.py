"""What the app's infer tasks share: listed before training, the image read by the project's reader.

MONAI Label hides an infer task whose ``is_valid()`` is False (its model file is
missing); the app's tasks stay listed and answer 409 "not trained yet" instead.
The request image is read with :func:`lib.infers.params.request_image` (the
project's grayscale reader, ``(H, W)`` with no transposition) rather than MONAI's
``LoadImage``, and the tasks write their own outputs, so there are no MONAI
post-transforms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Sequence

from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.infers.params import request_image


class DatastoreImageInfer(BasicInferTask):
    """Base class: set ``self.datastore_root`` and ``self.task_name`` (named in error messages)."""

    task_name = "infer"
    datastore_root: Path

    def is_valid(self) -> bool:
        return True  # listed even before training: infer then answers "not trained yet"

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [self._read]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def _read(self, data: Dict[str, Any]) -> Dict[str, Any]:
        data["image"] = request_image(data.get("image"), self.datastore_root, self.task_name)
        return data
