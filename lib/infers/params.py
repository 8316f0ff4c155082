"""Reading an infer request: the image and the box.

Request params (JSON form field ``params`` of ``POST /infer/<model>``):

* ``box``: ``[x_min, y_min, x_max, y_max]`` in pixels of the image, max exclusive;
  an inverted, empty or out-of-image box is an error (HTTP 400).
* ``roi``: synonym used by MONAI Label's generic Slicer plugin. Either four values
  ``[x0, y0, x1, y1]`` or the plugin's six ``[i0, i1, j0, j1, k0, k1]`` (IJK pairs,
  i = column, j = row); min and max may come swapped and are sorted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from lib.data.imageio import read_image
from lib.data.records import Box, validate_box
from lib.errors import DataError
from lib.infers.http_errors import BAD_REQUEST, NOT_FOUND, client_error, user_errors


def _numbers(value, field: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"params.{field}: expected a list of numbers, got {value!r}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise DataError(f"params.{field}: expected numbers, got {value!r}") from None


def request_box(request: dict, width: int, height: int) -> Box | None:
    """The box of an infer request (see the module docstring), checked against a ``width x height`` image.

    Returns:
        the box, or None when the request has neither ``box`` nor ``roi``.

    Raises:
        DataError: malformed, inverted, empty or outside the image.
    """
    if request.get("box") not in (None, "", []):
        return validate_box(request["box"], width, height, "params.box")
    roi = request.get("roi")
    if roi in (None, "", []):
        return None
    values = _numbers(roi, "roi")
    if len(values) == 4:
        x0, y0, x1, y1 = values
    elif len(values) == 6:
        x0, x1, y0, y1 = values[:4]
    else:
        raise DataError(f"params.roi: expected [x0, y0, x1, y1] or [i0, i1, j0, j1, k0, k1], got {len(values)} values")
    box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
    return validate_box([int(round(v)) for v in box], width, height, "params.roi")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def request_image(image: str, datastore_root: Path, what: str) -> np.ndarray:
    """Read the request's image (a datastore path, or an uploaded temporary file) as float ``(H, W)`` in [0, 1].

    MONAI Label resolves the image id to a path before the task runs; an empty path
    means the id is unknown. Paths outside the datastore and the temporary folder
    (where uploads land) are refused: an id that happens to be a server path must
    not read server files.

    Raises:
        HTTPException: 404 unknown image, 400 unreadable or not allowed.
    """
    if not image or not isinstance(image, str):
        raise client_error(NOT_FOUND, f"{what}: image not found in the datastore")
    path = Path(os.path.realpath(image))
    if not (_inside(path, Path(os.path.realpath(datastore_root))) or _inside(path, Path(os.path.realpath(tempfile.gettempdir())))):
        raise client_error(BAD_REQUEST, f"{what}: image must be a datastore image id or an uploaded file")
    if not path.is_file():
        raise client_error(NOT_FOUND, f"{what}: image not found in the datastore")
    with user_errors(what):
        return read_image(path)
