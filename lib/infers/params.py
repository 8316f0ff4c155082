"""Reading a request strictly: the JSON params, the box, the image.

Request params (JSON form field ``params`` of ``POST /infer/<model>``, or of a
datastore upload) are parsed by :func:`parse_params`: a JSON object, at most
:data:`MAX_DEPTH` levels deep, with finite numbers only (``NaN``, ``Infinity`` and
overflowing literals such as ``1e400`` are refused). Anything else is a
:class:`DataError` naming the field (HTTP 400 at the server).

Box params of an infer request:

* ``box``: ``[x_min, y_min, x_max, y_max]`` in pixels of the image, max exclusive:
  four JSON numbers (booleans and strings are not numbers), whole, finite; an
  inverted, empty or out-of-image box is an error.
* ``roi``: synonym used by MONAI Label's generic Slicer plugin. Either four values
  ``[x0, y0, x1, y1]`` or the plugin's six ``[i0, i1, j0, j1, k0, k1]`` (IJK pairs,
  i = column, j = row); min and max may come swapped and are sorted; fractions are
  rounded to the nearest pixel.

Frame param (:func:`request_frame`): ``frame``, a whole number ``0 .. F - 1`` choosing a
frame of a DICOM cine loop of ``F`` frames (0 = the first); absent or null: none chosen.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


from lib.data.imageio import ImageFile, read_image_file
from lib.data.records import Box, validate_box
from lib.errors import DataError
from lib.infers.http_errors import BAD_REQUEST, NOT_FOUND, client_error

MAX_DEPTH = 32
"""Deepest nesting of objects and lists accepted in request params."""


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _refuse_constant(name: str):
    raise DataError(f"{name} is not allowed (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DataError(f"{text} is not allowed (numbers must be finite)")
    return value


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in items)
    return deepest


def parse_params(text, field: str = "params") -> dict:
    """Parse a request's JSON form field into a dict (empty or missing: ``{}``).

    Raises:
        DataError: not JSON, not an object, nested deeper than :data:`MAX_DEPTH`, or holding
            ``NaN`` / ``Infinity`` / a number that overflows.
    """
    if text is None:
        return {}
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{field}: not UTF-8 text") from None
    if not isinstance(text, str):
        raise DataError(f"{field}: expected a JSON object as text, got {_kind(text)}")
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except DataError as exc:
        raise DataError(f"{field}: {exc}") from None
    except RecursionError:
        raise DataError(f"{field}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # json.JSONDecodeError, or an integer literal too long to convert
        raise DataError(f"{field}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise DataError(f"{field}: expected a JSON object {{...}}, got {_kind(value)}")
    if _depth(value) > MAX_DEPTH:
        raise DataError(f"{field}: nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def strict_numbers(value, field: str) -> list[float]:
    """A JSON list of finite numbers (not booleans, not strings) as floats.

    Raises:
        DataError: not a list, or an item that is not a finite number (the message names the field).
    """
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{field}: expected a list of numbers, got {_kind(value)} {_short(value)}")
    numbers = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{field}[{i}]: expected a number, got {_kind(v)} {_short(v)}")
        try:
            number = float(v)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise DataError(f"{field}[{i}]: expected a finite number, got {_short(v)}")
        numbers.append(number)
    return numbers


def strict_box(value, width: int, height: int, field: str) -> Box:
    """A box ``[x_min, y_min, x_max, y_max]`` of four whole finite numbers inside a ``width x height`` image.

    Raises:
        DataError: not four numbers (``"1234"`` and ``[true, ...]`` are not), fractional,
            inverted, empty or outside the image.
    """
    numbers = strict_numbers(value, field)
    if len(numbers) != 4:
        raise DataError(f"{field}: box must have 4 values x_min, y_min, x_max, y_max, got {len(numbers)}")
    return validate_box(numbers, width, height, field)


def request_box(request: dict, width: int, height: int) -> Box | None:
    """The box of an infer request (see the module docstring), checked against a ``width x height`` image.

    Returns:
        the box, or None when the request has neither ``box`` nor ``roi``.

    Raises:
        DataError: malformed, inverted, empty or outside the image.
    """
    if request.get("box") not in (None, "", []):
        return strict_box(request["box"], width, height, "params.box")
    roi = request.get("roi")
    if roi in (None, "", []):
        return None
    values = strict_numbers(roi, "params.roi")
    if len(values) == 4:
        x0, y0, x1, y1 = values
    elif len(values) == 6:
        x0, x1, y0, y1 = values[:4]
    else:
        raise DataError(f"params.roi: expected [x0, y0, x1, y1] or [i0, i1, j0, j1, k0, k1], got {len(values)} values")
    box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
    return validate_box([int(round(v)) for v in box], width, height, "params.roi")


def request_frame(request: dict, frame_count: int) -> int | None:
    """The ``frame`` param of a request for an image of ``frame_count`` frames, or None when absent.

    Raises:
        DataError: not a whole number (booleans and strings are not), or not a frame of the image.
    """
    value = request.get("frame")
    if value is None or value == "":
        return None
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not whole or value != int(value):
        raise DataError(f"params.frame: expected a whole number (0 = the first frame), got {_short(value)}")
    frame = int(value)
    if not 0 <= frame < frame_count:
        raise DataError(f"params.frame: frame {frame} does not exist; the image has {frame_count} frame(s), "
                        f"numbered 0 .. {frame_count - 1}")
    return frame


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def request_image_file(image, datastore_root: Path, what: str) -> ImageFile:
    """Read the request's image file: its frames as float ``(F, H, W)`` in [0, 1] and its calibration.

    The app resolves the request's image id (or its uploaded file, which the server
    keeps in the datastore's hidden ``.uploads`` folder) to a path before the task
    runs; an empty path means the id is unknown. Any path outside the datastore
    folder is refused with the same answer whether it exists or not.

    Raises:
        HTTPException: 404 unknown image, 400 unreadable or not allowed.
    """
    if not image or not isinstance(image, str):
        raise client_error(NOT_FOUND, f"{what}: image not found in the datastore")
    path = Path(os.path.realpath(image))
    if not _inside(path, Path(os.path.realpath(datastore_root))):
        raise client_error(BAD_REQUEST, f"{what}: image must be a datastore image id or an uploaded file")
    if not path.is_file():
        raise client_error(NOT_FOUND, f"{what}: image not found in the datastore")
    try:
        return read_image_file(path)
    except DataError as exc:  # the message names the server path: name the image instead
        raise client_error(BAD_REQUEST, f"{what}: {str(exc).replace(str(path), 'image')}") from None
