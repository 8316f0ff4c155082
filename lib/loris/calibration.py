"""Thresholds fitted on the validation split and stored with the model, for every metric.

Two thresholds per metric:

- ``threshold`` (image level, on the pooled score; distended when ``score >= threshold``):
  rule ``youden`` = maximizes Youden's J = TPR - FPR when validation holds both
  normal and distended images; otherwise rule ``target_fpr`` = the ``1 - target_fpr``
  quantile of the normal validation scores.
- ``pixel_threshold`` (on the anomaly map, before the 3x3 closing/opening), so that a
  normal image's segmentation is small and a distended one's follows the anomaly:

  * the **cap**: at most ``normal_box_share`` of the box pixels of the normal validation
    images may be segmented (thresholded, then closed and opened as the served segmentation
    is): the lowest threshold that keeps the pooled share at or under the cap. Without it the
    Dice rule below picks "the whole box": an annotated box is the tight bounding box of a
    distended recess, so segmenting every box pixel already scores a high Dice, and a
    threshold under every box pixel wins;
  * rule ``dice`` = the threshold maximizing the Dice of the thresholded map over the pooled
    pixels of whole validation images (normal images contribute an empty truth, distended
    images their mask; as the reference code's best F1), when it respects the cap;
    ``dice_capped`` = the cap, when the Dice threshold would let more normal box pixels fire;
  * rule ``normal_box_share`` = the cap alone, when no distended validation image has a mask.

Segmentation only fires in its region (the box when ``segment_in_box``): truth pixels
outside it count as missed at every threshold. Thresholds are never refitted on test data.

Each entry also stores ``display_range`` ``[low, high]``: the anomaly-map values a viewer maps
onto its colour scale, the same for every image of the model (``low`` = the pixel threshold,
``high`` = the 99.5th percentile of the distended validation images' box pixels, or the 99.9th
of the normal ones when validation has no distended image).
"""

from __future__ import annotations

import numpy as np

from lib.data.imageio import read_mask
from lib.errors import DataError
from lib.loris import preprocess
from lib.loris.masking import box_mask
from lib.loris.postprocess import segment
from lib.loris.settings import METRICS


def fit_image_threshold(scores, distended, target_fpr: float = 0.05) -> dict:
    """Image threshold from validation ``scores`` ``(N,)`` and labels ``distended`` ``(N,)`` bool.

    Returns:
        ``{"threshold", "image_rule", "valid_auroc" (None without both classes)}``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    distended = np.asarray(distended, dtype=bool)
    normal = scores[~distended]
    if normal.size == 0:
        raise DataError("calibration needs at least one normal validation image")
    if distended.any():
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, thresholds = roc_curve(distended, scores)
        finite = np.isfinite(thresholds)
        j = np.where(finite, tpr - fpr, -np.inf)
        best = int(np.argmax(j))
        return {
            "threshold": float(thresholds[best]),
            "image_rule": "youden",
            "valid_auroc": float(roc_auc_score(distended, scores)),
        }
    return {"threshold": float(np.quantile(normal, 1.0 - target_fpr)), "image_rule": "target_fpr", "valid_auroc": None}


def best_dice_threshold(values, truth, extra_positives: int = 0) -> tuple[float, float]:
    """Threshold maximizing the pooled Dice of ``values >= t`` against ``truth`` (flat arrays).

    ``extra_positives`` counts true pixels that can never be predicted (outside the region):
    they are false negatives at every threshold. Returns ``(threshold, dice)``; vectorized (one sort).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    positives = int(truth.sum()) + int(extra_positives)
    if values.size == 0 or positives == 0:
        raise DataError("Dice calibration needs at least one anomalous pixel")
    order = np.argsort(-values, kind="stable")
    v, t = values[order], truth[order]
    tp = np.cumsum(t)
    predicted = np.arange(1, v.size + 1)
    last_of_tie = np.r_[v[1:] != v[:-1], True]  # a threshold can only split between different values
    dice = np.where(last_of_tie, 2.0 * tp / (predicted + positives), -1.0)
    best = int(np.argmax(dice))
    return float(v[best]), float(dice[best])


def _dice_at(values: np.ndarray, truth: np.ndarray, threshold: float, extra_positives: int) -> float:
    predicted = values >= threshold
    denominator = int(predicted.sum()) + int(truth.sum()) + int(extra_positives)
    return 2.0 * int((predicted & truth).sum()) / denominator if denominator else 1.0


def _display_range(maps, boxes, distended, low: float) -> list[float]:
    pixels = maps[distended][boxes[distended]] if distended.any() else np.zeros(0, np.float32)
    high = float(np.quantile(pixels, 0.995)) if pixels.size else float(np.quantile(maps[boxes], 0.999))
    if not high > low:
        high = float(maps[boxes].max()) if boxes.any() else low
    if not high > low:
        high = low + max(abs(low), 1e-6)
    return [float(low), high]


def segmented_box_share(maps, regions, boxes, threshold: float) -> float:
    """Pooled share of the ``boxes`` pixels that :func:`~lib.loris.postprocess.segment` marks at ``threshold``
    (maps, regions, boxes: ``(N, H, W)``; regions = where segmentation may fire)."""
    total = int(boxes.sum())
    if total == 0:
        return 0.0
    return int((segment(maps, threshold, regions) & boxes).sum()) / total


def share_cap_threshold(maps, regions, boxes, share: float) -> float:
    """The lowest threshold at which at most ``share`` of the ``boxes`` pixels are segmented (after closing and
    opening), searched among the quantiles of the box pixels (bisection: the segmented share only falls as the
    threshold rises, thresholding, closing and opening being monotone)."""
    candidates = np.unique(np.quantile(maps[boxes], np.linspace(0.0, 1.0, 1001)))
    candidates = np.append(candidates, np.nextafter(np.float32(candidates[-1]), np.float32(np.inf)))
    lo, hi = 0, len(candidates) - 1  # candidates[hi] segments nothing: it is above every box pixel
    while lo < hi:
        mid = (lo + hi) // 2
        if segmented_box_share(maps, regions, boxes, float(candidates[mid])) <= share:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def fit_pixel_threshold(maps, masks, regions, boxes, has_mask, distended, normal_box_share: float = 0.05) -> dict:
    """Pixel threshold from validation maps (see the module docstring for the rules).

    Args:
        maps: ``(N, H, W)`` float anomaly maps (network grid).
        masks: ``(N, H, W)`` bool truth (all False for normal images).
        regions: ``(N, H, W)`` bool, where segmentation may fire (the box, or everything).
        boxes: ``(N, H, W)`` bool, the box of each image (the cap counts normal images' box pixels).
        has_mask: ``(N,)`` bool, True for images whose truth is known (normal images, distended with a mask).
        distended: ``(N,)`` bool labels.
        normal_box_share: the cap, in ``(0, 1)``.

    Returns:
        ``{"pixel_threshold", "pixel_rule", "valid_dice" (None without masks), "dice_threshold"
        (the uncapped Dice threshold, or None), "valid_normal_box_share" (share of the normal images' box
        pixels segmented at the threshold), "display_range"}``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks, regions = np.asarray(masks, dtype=bool), np.asarray(regions, dtype=bool)
    boxes = np.asarray(boxes, dtype=bool)
    has_mask, distended = np.asarray(has_mask, dtype=bool), np.asarray(distended, dtype=bool)
    normal = ~distended
    if not boxes[normal].any():
        raise DataError("calibration needs at least one normal validation image with a box")
    cap = share_cap_threshold(maps[normal], regions[normal], boxes[normal], normal_box_share)
    out = {"pixel_threshold": cap, "pixel_rule": "normal_box_share", "valid_dice": None, "dice_threshold": None}
    known = has_mask | normal
    if (known & distended).any() and masks[known & distended].any():
        values = maps[known][regions[known]]
        truth = masks[known][regions[known]]
        outside = int((masks[known] & ~regions[known]).sum())
        threshold, dice = best_dice_threshold(values, truth, outside)
        out["dice_threshold"] = threshold
        if threshold >= cap:
            out.update(pixel_threshold=threshold, pixel_rule="dice", valid_dice=dice)
        else:
            out.update(pixel_rule="dice_capped", valid_dice=_dice_at(values, truth, cap, outside))
    t = out["pixel_threshold"]
    out["valid_normal_box_share"] = segmented_box_share(maps[normal], regions[normal], boxes[normal], t)
    out["display_range"] = _display_range(maps, boxes, distended, t)
    return out


def fit_calibration(scores: dict, maps: dict, distended, masks, regions, boxes, has_mask, target_fpr: float = 0.05,
                    normal_box_share: float = 0.05) -> dict:
    """Calibration of every metric: ``{metric: {threshold, image_rule, pixel_threshold, pixel_rule, ...}}``.

    Args:
        scores: ``{metric: (N,)}`` image scores.
        maps: ``{metric: (N, H, W)}`` anomaly maps on the network grid.
        distended, masks, regions, boxes, has_mask: as in :func:`fit_pixel_threshold`.
        target_fpr: the image threshold's rule without distended validation images.
        normal_box_share: the pixel threshold's cap.
    """
    distended = np.asarray(distended, dtype=bool)
    counts = {
        "n_normal": int((~distended).sum()),
        "n_distended": int(distended.sum()),
        "n_masks": int((np.asarray(has_mask, dtype=bool) & distended).sum()),
        "target_fpr": float(target_fpr),
        "normal_box_share": float(normal_box_share),
    }
    out = {}
    for metric in scores:
        entry = fit_image_threshold(scores[metric], distended, target_fpr)
        entry.update(fit_pixel_threshold(maps[metric], masks, regions, boxes, has_mask, distended, normal_box_share))
        entry.update(counts)
        out[metric] = entry
    return out


def calibrate(predictor, records, images, metrics=METRICS, batch_size: int = 16) -> dict:
    """Fit thresholds of every metric on labelled, boxed ``records`` (normal and distended) and their ``(H, W)``
    ``images``, with a :class:`~lib.loris.predictor.LorisPredictor` -> the calibration dict of :func:`fit_calibration`."""
    s = predictor.settings
    size = s.image_size
    scores = {m: [] for m in metrics}
    maps = {m: [] for m in metrics}
    boxes = []
    for _, out in predictor.batches(images, [r.box for r in records], metrics, batch_size):
        for m in metrics:
            scores[m].append(out.scores[m].float().cpu().numpy())
            maps[m].append(out.maps[m][:, 0].float().cpu().numpy())
        boxes.append(box_mask(out.grid_boxes.cpu(), size, size)[:, 0].numpy())
    boxes = np.concatenate(boxes)
    regions = boxes if s.segment_in_box else np.ones_like(boxes)
    distended = np.array([r.label == "distended" for r in records])
    has_mask = np.array([r.label == "normal" or r.mask_path is not None for r in records])
    masks = np.zeros((len(records), size, size), dtype=bool)
    for i, r in enumerate(records):
        if r.label == "distended" and r.mask_path is not None:
            masks[i] = preprocess.mask_tensor(read_mask(r.mask_path), size)[0].numpy()
    return fit_calibration(
        {m: np.concatenate(v) for m, v in scores.items()},
        {m: np.concatenate(v) for m, v in maps.items()},
        distended, masks, regions, boxes, has_mask, s.target_fpr, s.normal_box_share,
    )
