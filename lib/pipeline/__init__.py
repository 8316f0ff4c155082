"""The one way from an image to a LoRIS result, shared by every caller.

``image (+ optional box) -> box, with its source and confidence -> prediction -> result``

The command line (``python -m lib infer``), the server's ``loris`` infer tasks,
active-learning scoring and ``evaluate`` all enter here, so what is evaluated is
what is served. A box given by the caller is used as is (validated against the
image); without one the recess detector proposes one, with its own calibrated
confidence floor. When it finds nothing, the caller's **box policy** decides
(:data:`BOX_POLICIES`), named and chosen explicitly by every caller:

- ``fail``: no result; :meth:`Pipeline.run_one` raises :class:`~lib.errors.NoBoxError`
  (the command line's error, the server's HTTP 409). The server and the command line.
- ``skip``: no result, nothing raised (the image is left out). Active-learning scoring.
- ``whole_image``: the whole image is the box (the inpainting then hides everything).

``evaluate --box detected`` uses the server's policy (``fail``) unless told otherwise; an
image without a result there counts as unanswered (see :mod:`lib.evaluation.protocol`).

The result vocabulary (:meth:`PipelineResult.to_json`, the keys the README documents):
``score``, ``distended``, ``threshold``, ``metric``, ``pixel_metric``, ``pixel_threshold``,
``display_range``, ``box``, ``box_source`` (``request``, or the caller's name for a box it
gave, such as scoring's ``image_info``; ``detector``; ``whole_image``), ``detector_confidence``,
``image_size`` ``[W, H]``, ``pixel_spacing_mm`` ``[x, y]`` (millimetres per pixel from the DICOM
calibration, or null), ``spacing_source``, ``measurements`` (the segmentation's ``area_mm2`` and
``max_thickness_mm``, see :mod:`lib.loris.measurements`), ``frame`` (the frame of the result, 0 =
the first), ``frame_count`` and ``frame_scores`` (every frame's score when a cine loop was scored
whole, else null).

**Cine loops** (:meth:`Pipeline.run_file`): with a ``frame``, that frame is the image. Without
one, every frame is boxed and scored in batches (``batch_size`` frames per network forward: a
100-frame loop at 16 is 7 forwards), and the most anomalous frame (highest score) gets the
full result: one more forward for its map and segmentation. One given box serves every frame;
without one the detector boxes each frame, and frames it finds nothing in are left unscored
(score null) -- the ``fail`` policy fails only when no frame has a box.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lib.data.imageio import ImageFile, read_image_file
from lib.data.records import Box, validate_box
from lib.errors import DataError, ModelError, NoBoxError
from lib.loris.measurements import measure
from lib.loris.predictor import LorisPredictor, Prediction, write_outputs

BOX_POLICIES = ("fail", "skip", "whole_image")
"""What happens when no box is given and the detector finds none (see the module docstring)."""


def check_box_policy(policy: str) -> str:
    """Return ``policy`` if known, else raise :class:`DataError` listing :data:`BOX_POLICIES`."""
    if policy not in BOX_POLICIES:
        raise DataError(f"unknown box policy {policy!r}; valid policies are {', '.join(BOX_POLICIES)}")
    return policy


@dataclass(frozen=True)
class BoxChoice:
    """Where one image's box comes from.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` in the image's pixels, or None (no box: no result).
        source: ``"request"`` (or the caller's name for a box it gave), ``"detector"``, ``"whole_image"``, or
            ``"none"`` (no box).
        confidence: the detector's confidence for a detected box, else None.
    """

    box: Box | None
    source: str
    confidence: float | None = None


@dataclass
class PipelineResult:
    """One image through the pipeline: its box and, when it had one, its prediction.

    Attributes:
        box_choice: the box and its source.
        prediction: the LoRIS prediction, or None when the policy left the image without a box.
        image_size: ``(W, H)``.
        pixel_spacing_mm: ``(x, y)`` millimetres per pixel, or None when unknown.
        spacing_source: where the spacing came from (:data:`lib.data.dicom.SPACING_SOURCES`), or None.
        frame: the frame of the file the result is of (0 = the first).
        frame_count: how many frames the file has.
        frame_scores: every frame's score (None for a frame without a box) when a loop was scored whole.
    """

    box_choice: BoxChoice
    prediction: Prediction | None
    image_size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None
    frame: int = 0
    frame_count: int = 1
    frame_scores: list | None = None

    def to_json(self) -> dict:
        """The result vocabulary (module docstring); ``prediction`` None gives the box fields only."""
        out = self.prediction.to_json() if self.prediction is not None else {"box": None}
        out.update(box_source=self.box_choice.source, detector_confidence=self.box_choice.confidence,
                   image_size=[int(v) for v in self.image_size],
                   pixel_spacing_mm=[float(v) for v in self.pixel_spacing_mm] if self.pixel_spacing_mm else None,
                   spacing_source=self.spacing_source, frame=int(self.frame), frame_count=int(self.frame_count),
                   frame_scores=list(self.frame_scores) if self.frame_scores is not None else None)
        if self.prediction is not None:
            out["measurements"] = measure(self.prediction.mask, self.pixel_spacing_mm)
        return out


def resolve_boxes(images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None, detector, policy: str = "fail",
                  names: Sequence[str] | None = None, given_source: str = "request") -> list[BoxChoice]:
    """The box step: each ``(H, W)`` image's box, given ones validated, missing ones from the detector, then ``policy``.

    Args:
        images: the images.
        boxes: one box or None per image (None for every image when ``boxes`` is None).
        detector: a zero-argument callable returning the detector (called only when an image needs a box;
            it raises :class:`NoBoxError` when there is none).
        policy: one of :data:`BOX_POLICIES`.
        names: the images' names, for messages.
        given_source: where the given boxes come from (their ``BoxChoice.source``).

    Raises:
        DataError: a given box outside its image, inverted or empty.
        NoBoxError: ``policy == "fail"``, an image needs a box and the detector is missing or finds none.
    """
    check_box_policy(policy)
    boxes = list(boxes) if boxes is not None else [None] * len(images)
    if len(boxes) != len(images):
        raise DataError(f"{len(images)} images but {len(boxes)} boxes")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    out: list[BoxChoice | None] = [None] * len(images)
    for i, (image, box) in enumerate(zip(images, boxes)):
        if box is not None:
            h, w = np.shape(image)
            out[i] = BoxChoice(validate_box(box, w, h, f"{names[i]}: box"), given_source)
    need = [i for i, choice in enumerate(out) if choice is None]
    if not need:
        return out
    try:
        found = detector().detect_batch([images[i] for i in need])
    except NoBoxError:
        if policy == "fail":
            raise
        found = [None] * len(need)
    for i, detection in zip(need, found):
        if detection is not None:
            out[i] = BoxChoice(tuple(int(v) for v in detection.box), "detector", float(detection.confidence))
        elif policy == "whole_image":
            h, w = np.shape(images[i])
            out[i] = BoxChoice((0, 0, int(w), int(h)), "whole_image")
        elif policy == "fail":
            raise NoBoxError(f"{names[i]}: no box given and the recess detector found no recess; "
                             "give the box (x_min, y_min, x_max, y_max)")
        else:
            out[i] = BoxChoice(None, "none")
    return out


class Pipeline:
    """A loaded LoRIS model and, optionally, the recess detector that boxes images without a box.

    Args:
        predictor: the LoRIS model.
        detector: a :class:`~lib.detection.infer.RecessDetector`, or a zero-argument callable returning one
            (called only when an image needs a box: the server loads the detector on first need), or None.
    """

    def __init__(self, predictor: LorisPredictor, detector=None) -> None:
        self.predictor = predictor
        self._detector = detector

    @classmethod
    def load(cls, model_dir: str | os.PathLike, detector_dir: str | os.PathLike | None = None,
             device: str = "cpu") -> "Pipeline":
        """Load a LoRIS model directory and, when given, a detector directory (loaded on first need)."""
        predictor = LorisPredictor.load(model_dir, device)
        detector = None
        if detector_dir is not None:
            def detector():
                from lib.detection.infer import RecessDetector

                return RecessDetector.load(detector_dir, device)
        return cls(predictor, detector)

    def detector(self):
        """The detector (loaded now if it was given as a callable); :class:`NoBoxError` when there is none."""
        if self._detector is None:
            raise NoBoxError("no box given and no recess detector: give the box (x_min, y_min, x_max, y_max), "
                             "or a trained detector")
        if callable(self._detector) and not hasattr(self._detector, "detect_batch"):
            try:
                self._detector = self._detector()
            except ModelError as exc:  # not trained yet, or an unreadable model folder
                raise NoBoxError(f"no box given and the recess detector is not available ({exc}); give the box "
                                 "(x_min, y_min, x_max, y_max), or train the detector") from None
        return self._detector

    def boxes(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None = None,
              policy: str = "fail", names: Sequence[str] | None = None,
              given_source: str = "request") -> list[BoxChoice]:
        """:func:`resolve_boxes` with this pipeline's detector (loaded only if an image needs it)."""
        return resolve_boxes(images, boxes, self.detector, policy, names, given_source)

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None = None, policy: str = "fail",
            metric: str | None = None, names: Sequence[str] | None = None, with_reconstruction: bool = True,
            batch_size: int = 16) -> list[PipelineResult]:
        """Every image through the pipeline, ``batch_size`` per network forward.

        Args:
            images: ``(H, W)`` float images in ``[0, 1]``.
            boxes: one box or None per image (None: the detector's box, then ``policy``).
            policy: one of :data:`BOX_POLICIES`.
            metric: None for the model's served combination (score of ``metric``, map and segmentation of
                ``pixel_metric``), or one metric for everything.
            names: for error messages.
            with_reconstruction: see :meth:`~lib.loris.predictor.LorisPredictor.predict_batch`.
        """
        choices = self.boxes(images, boxes, policy, names)
        keep = [i for i, c in enumerate(choices) if c.box is not None]
        predictions = self.predictor.predict_served([images[i] for i in keep], [choices[i].box for i in keep],
                                                    metric, with_reconstruction=with_reconstruction,
                                                    batch_size=batch_size)
        by_index = dict(zip(keep, predictions))
        return [PipelineResult(choice, by_index.get(i), (int(np.shape(im)[1]), int(np.shape(im)[0])))
                for i, (im, choice) in enumerate(zip(images, choices))]

    def scores(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None = None,
               policy: str = "skip", names: Sequence[str] | None = None, given_source: str = "request",
               batch_size: int = 16) -> list[tuple[BoxChoice, float | None]]:
        """The box and the image score of each image (the model's ``metric``; no maps brought back to the image):
        what active learning ranks images by. An image the policy leaves without a box has score None."""
        choices = self.boxes(images, boxes, policy, names, given_source)
        keep = [i for i, c in enumerate(choices) if c.box is not None]
        metric = self.predictor.settings.metric
        scored = self.predictor.score_batch([images[i] for i in keep], [choices[i].box for i in keep], (metric,),
                                            batch_size)[metric]
        by_index = dict(zip(keep, (float(v) for v in scored)))
        return [(choice, by_index.get(i)) for i, choice in enumerate(choices)]

    def run_one(self, image: np.ndarray, box: Box | None = None, policy: str = "fail", metric: str | None = None,
                name: str = "image", with_reconstruction: bool = True) -> PipelineResult:
        """One image (see :meth:`run`)."""
        return self.run([image], [box], policy, metric, [name], with_reconstruction)[0]

    def run_file(self, image: ImageFile, box: Box | None = None, policy: str = "fail", metric: str | None = None,
                 frame: int | None = None, name: str = "image", with_reconstruction: bool = True,
                 batch_size: int = 16) -> PipelineResult:
        """One image file: a single frame, a chosen frame of a cine loop, or a whole loop (module docstring).

        Args:
            image: the file as :func:`lib.data.imageio.read_image_file` read it (its spacing goes into the result).
            box: one box for every frame, or None (the detector's, then ``policy``).
            frame: the frame to run (0 = the first); None: the only frame, or every frame of a loop.
            batch_size: frames per network forward when a loop is scored whole.

        Raises:
            DataError: a ``frame`` the file lacks; a bad box.
            NoBoxError: ``policy == "fail"`` and no frame has a box.
        """
        count = image.frame_count
        geometry = dict(pixel_spacing_mm=image.pixel_spacing_mm, spacing_source=image.spacing_source,
                        frame_count=count)
        if frame is not None or count == 1:
            array = image.frame(frame, name)
            result = self.run_one(array, box, policy, metric, name, with_reconstruction)
            return dataclasses.replace(result, frame=int(frame or 0), **geometry)
        check_box_policy(policy)
        if box is None and policy == "fail":
            self.detector()  # no detector: the usual NoBoxError, not "no recess in any frame"
        frames = list(image.frames)
        names = [f"{name}, frame {i}" for i in range(count)]
        choices = self.boxes(frames, [box] * count, "skip" if policy == "fail" else policy, names)
        keep = [i for i, c in enumerate(choices) if c.box is not None]
        if not keep:
            if policy == "fail":
                raise NoBoxError(f"{name}: no box given and the recess detector found no recess in any of the "
                                 f"{count} frames; give the box (x_min, y_min, x_max, y_max)")
            return PipelineResult(choices[0], None, image.size, frame=0, frame_scores=[None] * count, **geometry)
        score_metric = metric or self.predictor.settings.metric
        scored = self.predictor.score_batch([frames[i] for i in keep], [choices[i].box for i in keep],
                                            (score_metric,), batch_size)[score_metric]
        frame_scores: list = [None] * count
        for i, value in zip(keep, scored):
            frame_scores[i] = float(value)
        best = keep[int(np.argmax(scored))]
        prediction = self.predictor.predict_served([frames[best]], [choices[best].box], metric,
                                                   with_reconstruction=with_reconstruction)[0]
        return PipelineResult(choices[best], prediction, image.size, frame=best, frame_scores=frame_scores,
                              **geometry)


def run_inference(pipeline: Pipeline, image_path: str | os.PathLike, out_dir: str | os.PathLike,
                  box: Box | None = None, policy: str = "fail", metric: str | None = None,
                  context: dict | None = None, timings: dict | None = None, frame: int | None = None) -> dict:
    """The pipeline on one image file; writes :data:`lib.loris.predictor.OUTPUT_FILES` into ``out_dir``.

    Returns the ``result.json`` dict: the result vocabulary, ``image`` (the path), ``context`` (e.g. the model
    folder), the file names and ``mask_pixels``. Model, image and box are checked before anything runs; the
    files appear only once all are written; the NRRD files carry the image's pixel spacing. A cine loop is
    run as :meth:`Pipeline.run_file` says (``frame``: one frame; None: every frame, the most anomalous
    written). ``timings``, when given, receives each step's wall time in milliseconds: ``read_ms`` (the image
    file), ``predict_ms`` (box, network and maps), ``write_ms`` (the files).

    Raises:
        DataError: unreadable image, a frame it lacks, or a box outside the image, inverted or empty.
        NoBoxError: no box, and the detector is missing or finds none (``policy == "fail"``).
    """
    t0 = time.perf_counter()
    image = read_image_file(image_path)
    t1 = time.perf_counter()
    result = pipeline.run_file(image, box, policy, metric, frame, name=str(image_path))
    if result.prediction is None:
        raise NoBoxError(f"{image_path}: no box given and the recess detector found no recess")
    t2 = time.perf_counter()
    extra = {**result.to_json(), "image": str(image_path), **(context or {})}
    written = write_outputs(result.prediction, out_dir, extra, result.pixel_spacing_mm)
    if timings is not None:
        timings.update(read_ms=(t1 - t0) * 1e3, predict_ms=(t2 - t1) * 1e3, write_ms=(time.perf_counter() - t2) * 1e3)
    return written


def model_context(model_dir: str | os.PathLike, detector_dir: str | os.PathLike | None = None) -> dict:
    """The model folders a result came from (added to ``result.json``)."""
    out = {"model": str(model_dir)}
    if detector_dir is not None:
        out["detector"] = str(detector_dir)
    return out

