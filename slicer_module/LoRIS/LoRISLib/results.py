"""Typed results parsed from the LoRIS MONAI Label app's JSON answers.

The app's REST contract (see ``slicer_module/README.md``):

- ``/infer/loris`` params: ``score``, ``distended``, ``threshold``,
  ``pixel_threshold``, ``metric``, ``box``, ``box_source`` ("request" |
  "detector"), ``detector_confidence``.
- ``/infer/recess_detection`` params: ``box`` (or null), ``confidence``, ``found``.
- ``GET /train/``: MONAI Label's task record ``{"id", "status", "request",
  "start_ts", "end_ts", "details": [log lines]}``.

Parsing is strict where the module depends on a value (a missing ``score``
is an error naming the field) and lenient for optional extras.
"""

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
    "parse_detection",
    "parse_train_status",
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
    """

    score: float
    distended: bool
    threshold: float
    box: List[int]
    box_source: str
    pixel_threshold: Optional[float] = None
    metric: Optional[str] = None
    detector_confidence: Optional[float] = None
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
    known = {"score", "distended", "threshold", "box", "box_source", "pixel_threshold", "metric", "detector_confidence"}
    metric = params.get("metric")
    return LorisResult(
        score=score,
        distended=distended,
        threshold=threshold,
        box=box,
        box_source=box_source,
        pixel_threshold=_optional_number(params.get("pixel_threshold"), "pixel_threshold", where),
        metric=None if metric is None else str(metric),
        detector_confidence=_optional_number(params.get("detector_confidence"), "detector_confidence", where),
        extra={k: v for k, v in params.items() if k not in known},
    )


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


_EPOCH = re.compile(r"epoch\D{0,3}(\d+)(?:\s*(?:/|of)\s*(\d+))?", re.IGNORECASE)


def parse_train_status(task):
    """MONAI Label's training task record (``GET /train/``) -> :class:`TrainStatus`."""
    where = "train status"
    status = _require(task, "status", where)
    if not isinstance(status, str):
        raise ResultError(f"{where}: field 'status' must be a string, got {status!r}")
    request = task.get("request") or {}
    details = [str(line) for line in (task.get("details") or [])]
    epoch = max_epochs = None
    for line in reversed(details):
        match = _EPOCH.search(line)
        if match:
            epoch = int(match.group(1))
            max_epochs = int(match.group(2)) if match.group(2) else None
            break
    return TrainStatus(
        status=status,
        model=request.get("model") if isinstance(request, dict) else None,
        task_id=task.get("id"),
        start_ts=task.get("start_ts"),
        end_ts=task.get("end_ts"),
        details=details,
        epoch=epoch,
        max_epochs=max_epochs,
    )


def format_result(result):
    """Human-readable lines for the panel: decision, score vs threshold, box and where it came from."""
    decision = "DISTENDED" if result.distended else "normal"
    lines = [
        f"Decision: {decision}",
        f"Score: {result.score:.4g} (threshold {result.threshold:.4g})",
    ]
    source = "your box" if result.box_source == "request" else "detected recess"
    if result.box_source == "detector" and result.detector_confidence is not None:
        source += f", confidence {result.detector_confidence:.2f}"
    lines.append(f"Box: {result.box} ({source})")
    if result.metric:
        lines.append(f"Metric: {result.metric}")
    return "\n".join(lines)
