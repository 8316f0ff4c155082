"""Typed results parsed from the LoRIS MONAI Label app's JSON answers.

The app's REST contract (see ``slicer_module/README.md``):

- ``/infer/loris`` and ``/infer/loris_anomaly_map`` params: ``score``,
  ``distended``, ``threshold``, ``pixel_threshold``, ``metric``, ``box``,
  ``box_source`` ("request" | "detector"), ``detector_confidence``,
  ``image_size``, ``model_version`` and, when the server sends them,
  ``display_range``, ``pixel_spacing_mm`` ``[x, y]`` (null: not calibrated),
  ``measurements`` (``area_mm2``, ``max_thickness_mm``, ...), ``frame``,
  ``frame_count`` and ``frame_scores`` (a cine loop); ``loris_anomaly_map`` adds
  ``mask_png_base64`` (the segmentation) to its NRRD map file: one request per
  "Run LoRIS".
- ``/infer/recess_detection`` params: ``box`` (or null), ``confidence``, ``found``.
- ``GET /train/``: MONAI Label's task record ``{"id", "status", "request",
  "start_ts", "end_ts", "details": [log lines]}``.

Parsing is strict where the module depends on a value (a missing ``score``
is an error naming the field) and lenient for optional extras.
"""

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import List, Optional

__all__ = [
    "ResultError",
    "LorisResult",
    "Detection",
    "TrainStatus",
    "parse_box",
    "parse_loris_result",
    "map_display_range",
    "LorisAnswer",
    "parse_loris_answer",
    "parse_detection",
    "parse_train_status",
    "format_measurements",
    "format_spacing",
    "format_result",
]

LABELS = ("normal", "distended")
BOX_SOURCES = ("request", "detector")


class ResultError(ValueError):
    """A server answer lacks a field or has a value of the wrong type."""


def _require(params, key, where):
    if not isinstance(params, dict):
        raise ResultError(f"{where}: expected a JSON object, got {type(params).__name__}")
    if key not in params:
        raise ResultError(f"{where}: field '{key}' is missing (got fields {sorted(params)})")
    return params[key]


def _number(value, key, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultError(f"{where}: field '{key}' must be a number, got {value!r}")
    return float(value)


def _optional_number(value, key, where):
    return None if value is None else _number(value, key, where)


def parse_box(value, where="box"):
    """``[x_min, y_min, x_max, y_max]`` integer pixels, max exclusive; ResultError otherwise."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ResultError(f"{where}: expected [x_min, y_min, x_max, y_max], got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
            raise ResultError(f"{where}: box coordinates must be integers, got {value!r}")
        out.append(int(v))
    if out[2] <= out[0] or out[3] <= out[1]:
        raise ResultError(f"{where}: box {out} is empty or inverted")
    return out


@dataclass
class LorisResult:
    """Answer of ``/infer/loris`` for one image.

    score: pooled anomaly score in the box (the method's units; higher = more anomalous).
    distended: the decision, ``score >= threshold``.
    threshold: image-level decision threshold calibrated on validation data.
    pixel_threshold: anomaly-map value above which a pixel belongs to the segmentation.
    box: the box the score was computed in, pixels ``[x_min, y_min, x_max, y_max]``.
    box_source: "request" (the user's box) or "detector" (``recess_detection`` ran first).
    image_size: ``[width, height]`` of the image in pixels, as the server read it.
    model_version: the version of the LoRIS model that answered.
    display_range: ``[low, high]`` anomaly-map values for the colour window, the same for every
        image of one model and metric (``low`` = the calibrated pixel threshold); None from a
        server that does not send it (see :func:`map_display_range`).
    pixel_spacing_mm: ``[x, y]`` millimetres per pixel from the image's DICOM calibration, or None.
    measurements: the segmentation's size as the server measured it (``unit``, ``area_mm2``,
        ``max_thickness_mm``, ``area_pixels``, ``max_thickness_pixels``), or None.
    frame, frame_count: the frame of a cine loop the result is of (0 = the first), and how many
        frames the image has (1 for a single frame).
    frame_scores: every frame's score when the whole loop was scored, else None.
    """

    score: float
    distended: bool
    threshold: float
    box: List[int]
    box_source: str
    pixel_threshold: Optional[float] = None
    metric: Optional[str] = None
    detector_confidence: Optional[float] = None
    image_size: Optional[List[int]] = None
    model_version: Optional[str] = None
    display_range: Optional[List[float]] = None
    pixel_spacing_mm: Optional[List[float]] = None
    measurements: Optional[dict] = None
    frame: int = 0
    frame_count: int = 1
    frame_scores: Optional[List[Optional[float]]] = None
    extra: dict = field(default_factory=dict)

    @property
    def label(self):
        """The decision as a class name: "distended" or "normal"."""
        return "distended" if self.distended else "normal"


@dataclass
class Detection:
    """Answer of ``/infer/recess_detection``: the box (None when no recess was found)."""

    found: bool
    box: Optional[List[int]] = None
    confidence: Optional[float] = None


@dataclass
class TrainStatus:
    """One MONAI Label training task as ``GET /train/`` reports it.

    status: "SUBMITTED", "RUNNING", "DONE", "ERROR" or "STOPPED".
    epoch, max_epochs: parsed from the latest log line mentioning an epoch, when any.
    """

    status: str
    model: Optional[str] = None
    task_id: Optional[str] = None
    start_ts: Optional[str] = None
    end_ts: Optional[str] = None
    details: List[str] = field(default_factory=list)
    epoch: Optional[int] = None
    max_epochs: Optional[int] = None

    @property
    def running(self):
        return self.status in ("SUBMITTED", "RUNNING")

    @property
    def last_line(self):
        return self.details[-1] if self.details else ""

    def progress(self):
        """``(done, total)`` epochs for a progress bar, or None when the log names no epoch count yet."""
        if self.max_epochs is None or self.max_epochs <= 0:
            return None
        if self.status == "DONE":
            return self.max_epochs, self.max_epochs
        if self.epoch is None:
            return 0, self.max_epochs
        return min(max(self.epoch, 0), self.max_epochs), self.max_epochs

    def summary(self):
        """One line for the panel, e.g. ``loris: RUNNING, epoch 3/10``."""
        text = f"{self.model or 'training'}: {self.status}"
        if self.epoch is not None:
            text += f", epoch {self.epoch}" + (f"/{self.max_epochs}" if self.max_epochs else "")
        return text


def parse_loris_result(params):
    """The params JSON of ``/infer/loris`` -> :class:`LorisResult`; ResultError names a bad field."""
    where = "loris result"
    score = _number(_require(params, "score", where), "score", where)
    distended = _require(params, "distended", where)
    if not isinstance(distended, bool):
        raise ResultError(f"{where}: field 'distended' must be true or false, got {distended!r}")
    threshold = _number(_require(params, "threshold", where), "threshold", where)
    box = parse_box(_require(params, "box", where), f"{where}: box")
    box_source = params.get("box_source", "request")
    if box_source not in BOX_SOURCES:
        raise ResultError(f"{where}: field 'box_source' must be one of {BOX_SOURCES}, got {box_source!r}")
    known = {"score", "distended", "threshold", "box", "box_source", "pixel_threshold", "metric", "detector_confidence",
             "image_size", "model_version", "display_range", "pixel_spacing_mm", "measurements", "frame", "frame_count",
             "frame_scores"}
    metric = params.get("metric")
    image_size = params.get("image_size")
    if image_size is not None and (
        not isinstance(image_size, (list, tuple)) or len(image_size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in image_size)
    ):
        raise ResultError(f"{where}: field 'image_size' must be [width, height] in pixels, got {image_size!r}")
    display_range = params.get("display_range")
    if display_range is not None:
        if not isinstance(display_range, (list, tuple)) or len(display_range) != 2:
            raise ResultError(f"{where}: field 'display_range' must be [low, high], got {display_range!r}")
        display_range = [_number(v, "display_range", where) for v in display_range]
        if not display_range[0] < display_range[1]:
            raise ResultError(f"{where}: field 'display_range' must have low < high, got {display_range!r}")
    model_version = params.get("model_version")
    spacing = params.get("pixel_spacing_mm")
    if spacing is not None:
        if not isinstance(spacing, (list, tuple)) or len(spacing) != 2:
            raise ResultError(f"{where}: field 'pixel_spacing_mm' must be [x, y] in mm, got {spacing!r}")
        spacing = [_number(v, "pixel_spacing_mm", where) for v in spacing]
        if not all(v > 0 for v in spacing):
            raise ResultError(f"{where}: field 'pixel_spacing_mm' must be positive, got {spacing!r}")
    measurements = params.get("measurements")
    if measurements is not None and not isinstance(measurements, dict):
        raise ResultError(f"{where}: field 'measurements' must be an object, got {measurements!r}")
    frame, frame_count = params.get("frame", 0), params.get("frame_count", 1)
    for key, value, low in (("frame", frame, 0), ("frame_count", frame_count, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ResultError(f"{where}: field '{key}' must be a whole number >= {low}, got {value!r}")
    if frame >= frame_count:
        raise ResultError(f"{where}: frame {frame} of an image of {frame_count} frame(s)")
    frame_scores = params.get("frame_scores")
    if frame_scores is not None:
        if not isinstance(frame_scores, (list, tuple)) or len(frame_scores) != frame_count:
            raise ResultError(f"{where}: field 'frame_scores' must list one score per frame, got {frame_scores!r}")
        frame_scores = [_optional_number(v, "frame_scores", where) for v in frame_scores]
    return LorisResult(
        score=score,
        distended=distended,
        threshold=threshold,
        box=box,
        box_source=box_source,
        pixel_threshold=_optional_number(params.get("pixel_threshold"), "pixel_threshold", where),
        metric=None if metric is None else str(metric),
        detector_confidence=_optional_number(params.get("detector_confidence"), "detector_confidence", where),
        image_size=None if image_size is None else [int(v) for v in image_size],
        model_version=None if model_version is None else str(model_version),
        display_range=display_range,
        pixel_spacing_mm=spacing,
        measurements=dict(measurements) if measurements is not None else None,
        frame=frame,
        frame_count=frame_count,
        frame_scores=None if frame_scores is None else list(frame_scores),
        extra={k: v for k, v in params.items() if k not in known},
    )


def map_display_range(result):
    """``(low, high)``: the anomaly-map values the map's colours run between.

    The server's ``display_range`` (fixed per model and metric, so a colour means the same
    value on every image); from a server that does not send it, ``[pixel_threshold,
    2 * pixel_threshold]``. Values below ``low`` are not coloured, values above ``high`` get
    the top colour.
    """
    if result.display_range is not None:
        return float(result.display_range[0]), float(result.display_range[1])
    if result.pixel_threshold is None:
        raise ResultError("loris result: neither 'display_range' nor 'pixel_threshold' was sent; cannot colour the map")
    low = float(result.pixel_threshold)
    return low, (2.0 * low if low > 0 else low + 1.0)


@dataclass
class LorisAnswer:
    """One "Run LoRIS": the answer of ``POST /infer/loris_anomaly_map``.

    result: score, decision, box, ... (:class:`LorisResult`).
    anomaly_map: the float32 anomaly map as the server sent it (NRRD file bytes, the image's grid).
    mask_png: the segmentation as a 0/1 PNG (file bytes, the image's grid), from ``mask_png_base64``.
    params: the answer's JSON params without the base64 segmentation.
    """

    result: LorisResult
    anomaly_map: bytes
    mask_png: bytes
    params: dict


def parse_loris_answer(params, map_file):
    """The params and file of a ``loris_anomaly_map`` answer -> :class:`LorisAnswer`; ResultError names what is missing."""
    where = "loris_anomaly_map answer"
    if not map_file:
        raise ResultError(f"{where}: no anomaly map file")
    encoded = _require(params, "mask_png_base64", where)
    if not isinstance(encoded, str):
        raise ResultError(f"{where}: field 'mask_png_base64' must be a base64 string")
    try:
        mask_png = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ResultError(f"{where}: field 'mask_png_base64' is not base64 ({exc})") from None
    if not mask_png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ResultError(f"{where}: field 'mask_png_base64' does not hold a PNG")
    rest = {k: v for k, v in params.items() if k != "mask_png_base64"}
    return LorisAnswer(result=parse_loris_result(rest), anomaly_map=bytes(map_file), mask_png=mask_png, params=rest)


def parse_detection(params):
    """The params JSON of ``/infer/recess_detection`` -> :class:`Detection`."""
    where = "recess_detection result"
    box = params.get("box") if isinstance(params, dict) else _require(params, "box", where)
    found = params.get("found", box is not None)
    if not isinstance(found, bool):
        raise ResultError(f"{where}: field 'found' must be true or false, got {found!r}")
    if box is None:
        if found:
            raise ResultError(f"{where}: 'found' is true but 'box' is null")
        return Detection(found=False)
    return Detection(
        found=True,
        box=parse_box(box, f"{where}: box"),
        confidence=_optional_number(params.get("confidence"), "confidence", where),
    )


# The app's trainers log one line per epoch, a dict: "loris: {'epoch': 3, 'max_epochs': 50, ...}";
# other trainers write "Epoch 3/50".
_EPOCH_KEY = re.compile(r"""['"]epoch['"]\s*:\s*(\d+)""")
_MAX_EPOCHS_KEY = re.compile(r"""['"]max_epochs['"]\s*:\s*(\d+)""")
_EPOCH_TEXT = re.compile(r"\bepoch\s*(\d+)\s*(?:/|of)\s*(\d+)", re.IGNORECASE)


def _epoch_of(line):
    """``(epoch, max_epochs or None)`` from one log line, or None when it names no epoch."""
    match = _EPOCH_KEY.search(line)
    if match:
        total = _MAX_EPOCHS_KEY.search(line)
        return int(match.group(1)), int(total.group(1)) if total else None
    match = _EPOCH_TEXT.search(line)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None


def parse_train_status(task):
    """MONAI Label's training task record (``GET /train/``) -> :class:`TrainStatus`.

    The epoch comes from the latest log line that names one; the number of epochs from that
    line, else from the request's ``max_epochs``.
    """
    where = "train status"
    status = _require(task, "status", where)
    if not isinstance(status, str):
        raise ResultError(f"{where}: field 'status' must be a string, got {status!r}")
    request = task.get("request") or {}
    if not isinstance(request, dict):
        request = {}
    details = [str(line) for line in (task.get("details") or [])]
    epoch = max_epochs = None
    for line in reversed(details):
        found = _epoch_of(line)
        if found:
            epoch, max_epochs = found
            break
    if max_epochs is None and isinstance(request.get("max_epochs"), int) and not isinstance(request["max_epochs"], bool):
        max_epochs = request["max_epochs"]
    return TrainStatus(
        status=status,
        model=request.get("model"),
        task_id=task.get("id"),
        start_ts=task.get("start_ts"),
        end_ts=task.get("end_ts"),
        details=details,
        epoch=epoch,
        max_epochs=max_epochs,
    )


def format_measurements(measurements):
    """One line for the panel: the segmentation's area and greatest thickness, in mm or, saying so, in pixels."""
    if not measurements:
        return ""
    area, thickness = measurements.get("area_mm2"), measurements.get("max_thickness_mm")
    if isinstance(area, (int, float)) and isinstance(thickness, (int, float)):
        return f"Segmented: area {area:.3g} mm², max thickness {thickness:.3g} mm"
    area, thickness = measurements.get("area_pixels"), measurements.get("max_thickness_pixels")
    if isinstance(area, (int, float)) and isinstance(thickness, (int, float)):
        return f"Segmented: area {area:.0f} px, max thickness {thickness:.0f} px (no pixel spacing known)"
    return ""


def format_spacing(spacing):
    """``0.1 × 0.1 mm`` for ``[x, y]``."""
    return f"{spacing[0]:.4g} × {spacing[1]:.4g} mm"


def format_result(result):
    """Human-readable lines for the panel: decision, score vs threshold, the segmentation's size, the frame of a
    cine loop, the box and where it came from."""
    decision = "DISTENDED" if result.distended else "normal"
    lines = [
        f"Decision: {decision}",
        f"Score: {result.score:.4g} (threshold {result.threshold:.4g})",
    ]
    size = format_measurements(result.measurements)
    if size:
        lines.append(size)
    if result.frame_count > 1:
        how = "the most anomalous" if result.frame_scores is not None else "the one chosen"
        lines.append(f"Frame: {result.frame} of 0..{result.frame_count - 1} ({how})")
    source = "your box" if result.box_source == "request" else "detected recess"
    if result.box_source == "detector" and result.detector_confidence is not None:
        source += f", confidence {result.detector_confidence:.2f}"
    lines.append(f"Box: {result.box} ({source})")
    if result.metric:
        lines.append(f"Metric: {result.metric}")
    return "\n".join(lines)
