"""Thresholds fitted on the validation split and stored with the model, for every metric.

Two thresholds per metric:

- ``threshold`` (image level, on the pooled score; distended when ``score >= threshold``):
  rule ``youden`` = maximizes Youden's J = TPR - FPR when validation holds both
  normal and distended images; otherwise rule ``target_fpr`` = the ``1 - target_fpr``
  quantile of the normal validation scores.
- ``pixel_threshold`` (on the anomaly map, before the 3x3 closing/opening):
  rule ``dice`` = maximizes the Dice of the thresholded map over the pooled
  pixels of the validation images (normal images contribute an empty truth,
  distended images their mask; as the reference code's best F1) when some
  distended validation image has a mask; otherwise rule ``target_fpr`` = the
  ``1 - target_fpr`` quantile of the normal images' pixels.

Pixels are those of the region where segmentation may fire (the box when
``segment_in_box``), on the network grid. Thresholds are never refitted on test data.
"""

from __future__ import annotations

import numpy as np

from lib.errors import DataError


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


def fit_pixel_threshold(maps, masks, regions, has_mask, distended, target_fpr: float = 0.05) -> dict:
    """Pixel threshold from validation maps.

    Args:
        maps: ``(N, H, W)`` float anomaly maps (network grid).
        masks: ``(N, H, W)`` bool truth (all False for normal images).
        regions: ``(N, H, W)`` bool, where segmentation may fire (the box, or everything).
        has_mask: ``(N,)`` bool, True for images whose truth is known (normal images, distended with a mask).
        distended: ``(N,)`` bool labels.
        target_fpr: used when no distended image has a mask.

    Returns:
        ``{"pixel_threshold", "pixel_rule", "valid_dice" (None for target_fpr)}``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks, regions = np.asarray(masks, dtype=bool), np.asarray(regions, dtype=bool)
    has_mask, distended = np.asarray(has_mask, dtype=bool), np.asarray(distended, dtype=bool)
    known = has_mask | ~distended
    if (known & distended).any() and masks[known & distended].any():
        sel = known
        values = maps[sel][regions[sel]]
        truth = masks[sel][regions[sel]]
        outside = int((masks[sel] & ~regions[sel]).sum())
        threshold, dice = best_dice_threshold(values, truth, outside)
        return {"pixel_threshold": threshold, "pixel_rule": "dice", "valid_dice": dice}
    normal = ~distended
    if not normal.any():
        raise DataError("calibration needs at least one normal validation image")
    values = maps[normal][regions[normal]]
    return {"pixel_threshold": float(np.quantile(values, 1.0 - target_fpr)), "pixel_rule": "target_fpr", "valid_dice": None}


def fit_calibration(scores: dict, maps: dict, distended, masks, regions, has_mask, target_fpr: float = 0.05) -> dict:
    """Calibration of every metric: ``{metric: {threshold, image_rule, pixel_threshold, pixel_rule, ...}}``.

    Args:
        scores: ``{metric: (N,)}`` image scores.
        maps: ``{metric: (N, H, W)}`` anomaly maps on the network grid.
        distended, masks, regions, has_mask: as in :func:`fit_pixel_threshold`.
    """
    distended = np.asarray(distended, dtype=bool)
    counts = {
        "n_normal": int((~distended).sum()),
        "n_distended": int(distended.sum()),
        "n_masks": int((np.asarray(has_mask, dtype=bool) & distended).sum()),
        "target_fpr": float(target_fpr),
    }
    out = {}
    for metric in scores:
        entry = fit_image_threshold(scores[metric], distended, target_fpr)
        entry.update(fit_pixel_threshold(maps[metric], masks, regions, has_mask, distended, target_fpr))
        entry.update(counts)
        out[metric] = entry
    return out
