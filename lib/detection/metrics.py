"""Detector quality on held-out images: precision, mAP@50, mAP@75 (MONAI's COCO metric) and mean IoU.

Each image has exactly one recess and the pipeline uses one box per image, so
every image contributes its single best box (COCO "max detections = 1").

- ``map50``, ``map75``, ``map50_95``: COCO-style average precision (101-point
  interpolated) at IoU 0.5, 0.75 and averaged over 0.5:0.95, computed by
  ``monai.apps.detection.metrics.coco.COCOMetric`` from
  ``monai.apps.detection.metrics.matching.matching_batch``. Best boxes are ranked by
  confidence over the whole set, including those below the score threshold.
- ``precision50``: of the boxes the detector *reports* (confidence at least its
  ``score_threshold``), the share that overlap the annotated box with IoU >= 0.5
  (0 when it reports none). ``recall50``: the share of images that get such a box.
- ``mean_iou``: mean over images of the IoU between the reported box and the
  annotated one, counting 0 where nothing is reported.
- ``n_images``: images evaluated; ``n_found``: images where a box was reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

from lib.data.imageio import read_image
from lib.data.records import Box, Record
from lib.errors import DataError

IOU_LIST = (0.5, 0.75)
IOU_RANGE = (0.5, 0.95, 0.05)


def box_metrics(predictions: Sequence, truths: Sequence[Box], score_threshold: float) -> dict:
    """Metrics of one best box per image against one annotated box per image.

    Args:
        predictions: per image, a :class:`~lib.detection.infer.Detection` (anything with ``.box`` in pixels,
            max exclusive, and ``.confidence``) or None when the detector proposed nothing at all.
        truths: per image, the annotated box, same pixel convention.
        score_threshold: confidence from which a box counts as reported (for precision and mean IoU).

    Returns:
        ``{"precision50", "recall50", "map50", "map75", "map50_95", "mean_iou", "n_images", "n_found"}``.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} annotated boxes")
    if not truths:
        raise DataError("no boxed images to evaluate the detector on")
    coco = COCOMetric(classes=["recess"], iou_list=IOU_LIST, iou_range=IOU_RANGE, max_detection=(1,), verbose=False)
    thresholds = coco.iou_thresholds
    empty = np.zeros((0, 4), dtype=np.float64)
    pred_boxes = [empty if p is None else np.asarray([p.box], dtype=np.float64) for p in predictions]
    pred_scores = [np.zeros(0) if p is None else np.asarray([p.confidence], dtype=np.float64) for p in predictions]
    gt_boxes = [np.asarray([t], dtype=np.float64) for t in truths]
    matches = matching_batch(
        iou_fn=box_iou,
        iou_thresholds=thresholds,
        pred_boxes=pred_boxes,
        pred_classes=[np.zeros(len(b), dtype=int) for b in pred_boxes],
        pred_scores=pred_scores,
        gt_boxes=gt_boxes,
        gt_classes=[np.zeros(1, dtype=int) for _ in gt_boxes],
        max_detections=1,
    )
    ap, _ = coco(matches)
    i50 = int(np.argmin(np.abs(thresholds - 0.5)))

    reported = [p is not None and p.confidence >= score_threshold for p in predictions]
    hits = [bool(m[0]["dtMatches"][i50, 0]) for m, r in zip(matches, reported) if r]
    ious = [float(box_iou(b, g)[0, 0]) if r else 0.0 for b, g, r in zip(pred_boxes, gt_boxes, reported)]
    n_found = int(sum(reported))
    return {
        "precision50": float(np.mean(hits)) if hits else 0.0,
        "recall50": float(sum(hits)) / len(truths),
        "map50": float(ap["AP_IoU_0.50_MaxDet_1"]),
        "map75": float(ap["AP_IoU_0.75_MaxDet_1"]),
        "map50_95": float(ap["mAP_IoU_0.50_0.95_0.05_MaxDet_1"]),
        "mean_iou": float(np.mean(ious)),
        "n_images": len(truths),
        "n_found": n_found,
    }


def detection_metrics(detector, records: Sequence[Record], images: Sequence[np.ndarray] | None = None) -> dict:
    """Evaluate a :class:`~lib.detection.infer.RecessDetector` on boxed records (normal and distended).

    Args:
        detector: the trained detector (its ``score_threshold`` decides what counts as reported).
        records: held-out records; those without a box are skipped.
        images: the records' images already in memory (same order), to avoid reading them again.

    Returns:
        see :func:`box_metrics`.
    """
    pairs = [(i, r) for i, r in enumerate(records) if r.box is not None]
    if not pairs:
        raise DataError("no boxed images to evaluate the detector on (every record lacks a box)")
    arrays = [images[i] if images is not None else read_image(r.image_path) for i, r in pairs]
    predictions = detector.detect_batch(arrays, min_confidence=0.0)
    return box_metrics(predictions, [r.box for _, r in pairs], detector.score_threshold)
