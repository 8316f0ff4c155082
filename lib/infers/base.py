"""What the app's infer tasks share: listed before training, the image read by the project's reader.

MONAI Label hides an infer task whose ``is_valid()`` is False (its model file is
missing); the app's tasks stay listed and answer 409 "not trained yet" instead.
The request image is read with :func:`lib.infers.params.request_image_file` (the
project's grayscale reader, ``(H, W)`` frames with no transposition, and the pixel
spacing of a calibrated DICOM) rather than MONAI's ``LoadImage``, and the tasks write
their own outputs, so there are no MONAI post-transforms. After ``_read``:
``data["image_file"]`` is the :class:`~lib.data.imageio.ImageFile`, ``data["frame"]``
the requested frame of a cine loop (``params.frame``; None when none was asked for)
and ``data["image"]`` that frame (the first when none was asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Sequence

from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.infers.http_errors import user_errors
from lib.infers.params import request_frame, request_image_file


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
        image = request_image_file(data.get("image"), self.datastore_root, self.task_name)
        with user_errors(self.task_name):
            frame = request_frame(data, image.frame_count)
        data["image_file"], data["frame"] = image, frame
        data["image"] = image.frames[frame or 0]
        return data
