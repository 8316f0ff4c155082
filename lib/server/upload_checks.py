"""What a client sends, checked before anything is written or decoded: ids, image and mask files, label params.

* **Ids and tags** are names, never paths (:func:`check_name`).
* **Image and mask files** are checked from their header first: byte size, then
  width x height (and a DICOM cine loop's number of frames) read without decoding the
  pixels (PNG ``IHDR``, PIL's lazy open, SimpleITK's image information), so a
  decompression bomb is refused (:class:`OverLimit`, HTTP 413) before it costs memory
  (:func:`header_size`, :func:`check_upload`, :func:`read_label_upload`).
* **Label params** are typed strictly (:func:`validate_label_info`): a known class, a box of
  four whole finite numbers inside the image, text patient ids; a ``normal`` class with
  a non-empty mask is refused.

Errors are :class:`~lib.errors.DataError` (or HTTP 400 from :func:`check_name`) whose
message names the field and the problem.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np

from lib.configs.app_config import UploadLimits
from lib.data.dicom import frame_size, header_size as itk_header_size
from lib.data.imageio import IMAGE_EXTENSIONS
from lib.data.records import LABELS
from lib.errors import DataError
from lib.infers.http_errors import BAD_REQUEST, client_error
from lib.infers.params import request_frame, strict_box

LABEL_EXTENSIONS = (".png", ".nrrd", ".nii.gz", ".nii")
"""Label uploads accepted by ``PUT /datastore/label``; all are stored as PNG."""

_ID_PATTERN = re.compile(r"^[^\x00-\x1f/\\]+$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OverLimit(DataError):
    """An upload larger than :class:`UploadLimits` allow (HTTP 413)."""


def check_name(value, what: str) -> str:
    """Return ``value`` if it is a safe image id or label tag, else raise an HTTP 400.

    Safe: a non-empty string of at most 200 characters without ``/``, ``\\``,
    control characters or ``..``, not starting with a dot.
    """
    if not isinstance(value, str) or not value:
        raise client_error(BAD_REQUEST, f"{what} is missing")
    if len(value) > 200 or not _ID_PATTERN.match(value) or ".." in value or value.startswith("."):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise client_error(
            BAD_REQUEST,
            f"{what} {shown!r} is not allowed: an id is a name, not a path (at most 200 characters, no '/', '\\', "
            "'..', control characters or leading '.')",
        )
    return value


def image_extension(filename: str) -> str:
    """The image extension of ``filename`` (case-insensitive, as written), else an HTTP 400."""
    lower = filename.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return filename[len(filename) - len(ext):]
    raise client_error(
        BAD_REQUEST, f"image file {Path(filename).name!r}: unsupported type; valid types are {', '.join(IMAGE_EXTENSIONS)}"
    )


def header_frames(path: str | os.PathLike, what: str) -> tuple[int, int, int]:
    """``(width, height, frames)`` of an image file from its header: ``frames`` > 1 only for a DICOM cine loop.

    Raises:
        DataError: as :func:`header_size`; a DICOM that is neither a frame nor a loop of frames.
    """
    if str(path).lower().endswith(".dcm"):
        return frame_size(path, what)
    return (*header_size(path, what), 1)


def header_size(path: str | os.PathLike, what: str) -> tuple[int, int]:
    """``(width, height)`` of an image or mask file (of each frame of a DICOM cine loop), read from its header
    without decoding the pixels.

    PNG: the ``IHDR`` chunk; JPEG and other PIL formats: PIL's lazy open; DICOM, NRRD,
    NIfTI: SimpleITK's image information (an NRRD or NIfTI volume must have one slice).

    Raises:
        DataError: not readable, not 2D; :class:`OverLimit` beyond PIL's own bomb limit.
    """
    path = str(path)
    lower = path.lower()
    if lower.endswith(".dcm"):
        return header_frames(path, what)[:2]
    if lower.endswith((".nrrd", ".nii", ".nii.gz")):
        size = itk_header_size(path, what)
        if len(size) < 2 or any(s != 1 for s in size[2:]):
            raise DataError(f"{what}: expected one 2D frame, got size {list(size)}")
        return size[0], size[1]
    with open(path, "rb") as fp:
        head = fp.read(24)
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                return img.size
        except Image.DecompressionBombError as exc:
            raise OverLimit(f"{what}: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise DataError(f"{what}: not a readable image") from None


def check_upload(path: str | os.PathLike, limits: UploadLimits, what: str) -> tuple[int, int]:
    """Check an uploaded image against ``limits`` from its size and header, before any decoding.

    Returns:
        ``(width, height)`` (of each frame of a cine loop).

    Raises:
        OverLimit: more bytes, pixels or frames than allowed; DataError: unreadable header, empty image.
    """
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise OverLimit(f"{what}: {size} bytes is over the limit of {limits.max_bytes} bytes (--conf max_upload_bytes)")
    width, height, frames = header_frames(path, what)
    if frames > limits.max_frames:
        raise OverLimit(f"{what}: a cine loop of {frames} frames is over the limit of {limits.max_frames} frames "
                        "(--conf max_frames)")
    if width < 1 or height < 1:
        raise DataError(f"{what}: the image is empty ({width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise OverLimit(f"{what}: {width}x{height} pixels is over the limit of {limits.max_pixels} pixels "
                        "(--conf max_image_pixels)")
    return width, height


def read_label_upload(path: str, width: int, height: int) -> np.ndarray:
    """Read an uploaded label as a ``bool`` ``(H, W)`` mask (any nonzero pixel is foreground).

    The size is checked from the file header before the pixels are decoded.

    Raises:
        DataError: unsupported type, not decodable, not 2D, or not ``height x width``.
    """
    name = Path(path).name.lower()
    if not name.endswith(LABEL_EXTENSIONS):
        raise DataError(f"label file: unsupported type; valid types are {', '.join(LABEL_EXTENSIONS)}")
    w, h = header_size(path, "label file")
    if (w, h) != (width, height):
        raise DataError(f"label file: mask is {w}x{h} (width x height) but the image is {width}x{height}")
    if name.endswith(".png"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                array = np.asarray(img)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"label file: not a readable PNG ({exc})") from None
        if array.ndim == 3:
            array = array[..., : min(3, array.shape[-1])].max(axis=-1)
    else:
        import SimpleITK as sitk

        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as exc:
            raise DataError(f"label file: not a readable NRRD/NIfTI volume ({str(exc).strip().splitlines()[-1]})") from None
        array = np.squeeze(array)
    if array.ndim != 2:
        raise DataError(f"label file: expected a 2D mask, got shape {tuple(array.shape)}")
    if array.shape != (height, width):
        raise DataError(
            f"label file: mask is {array.shape[1]}x{array.shape[0]} (width x height) but the image is {width}x{height}"
        )
    return array != 0


_DERIVED_KEYS = ("ts", "name", "label_source", "mask_sha1")
"""Label info keys the datastore sets itself; a client's values for them are dropped."""


def validate_label_info(info, width: int, height: int, *, final: bool, foreground: int | None,
                        frame_count: int = 1) -> Dict[str, Any]:
    """Check label params and return the info to store.

    Args:
        info: the request's params (a JSON object).
        width, height: the image size in pixels.
        final: the label is the ``final`` tag (the class is then required or derived).
        foreground: how many mask pixels are set (None when no mask comes with the info).
        frame_count: the image's frames; a ``final`` label of a cine loop (more than one) must name its
            ``frame`` (0 = the first), the frame the mask and box are of.

    Raises:
        DataError: not an object, unknown class, ``normal`` with a non-empty mask, bad box,
            non-text patient id, a missing or out-of-range frame.
    """
    if info is None:
        info = {}
    if not isinstance(info, dict):
        raise DataError(f"params: expected a JSON object, got {type(info).__name__}")
    out = {k: v for k, v in info.items() if k not in _DERIVED_KEYS}
    label = out.get("label")
    if label is not None:
        if not isinstance(label, str) or label not in LABELS:
            raise DataError(f"params.label: unknown label {label!r}; valid labels are {', '.join(LABELS)}")
        if label == "normal" and foreground:
            raise DataError(
                f"params.label: 'normal' contradicts the mask, which marks {int(foreground)} pixels as distended; "
                "send an empty mask for a normal image, or label it 'distended'"
            )
    elif final and foreground is not None:
        out["label"] = "distended" if foreground else "normal"
        out["label_source"] = "mask"
    if out.get("box") is not None:
        out["box"] = list(strict_box(out["box"], width, height, "params.box"))
    if out.get("patient_id") is not None:
        if not isinstance(out["patient_id"], (str, int)) or isinstance(out["patient_id"], bool):
            raise DataError(f"params.patient_id: expected text, got {out['patient_id']!r}")
        out["patient_id"] = str(out["patient_id"])
    if out.get("frame") is not None:
        out["frame"] = request_frame(out, frame_count)
    else:
        out.pop("frame", None)
        if final and foreground is not None and frame_count > 1:
            raise DataError(f"params.frame: the image is a cine loop of {frame_count} frames; name the frame the "
                            f"label is of (0 .. {frame_count - 1})")
    return out


__all__ = ["LABEL_EXTENSIONS", "OverLimit", "UploadLimits", "check_name", "check_upload", "header_frames",
           "header_size", "image_extension", "read_label_upload", "validate_label_info"]
