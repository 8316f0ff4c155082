"""The evaluation metrics of the paper, computed with scikit-learn.

Conventions, shared by every function here:

- ``labels``: one bool per image, True = distended (the positive class).
- ``scores``: one float per image, higher = more anomalous.
- ``masks``: one bool array ``(H, W)`` per image, the ground-truth anomaly
  mask; a normal image's mask is all False (it has no anomalous pixel).
- ``maps``: one float array ``(H, W)`` per image, the anomaly map, on the same
  pixel grid as its mask; higher = more anomalous.
- Pixel metrics pool the pixels of all given images into one set (as the
  paper's reference code does), so large anomalies weigh more than small ones.

A metric that is undefined on the given data (an AUROC with only one class
present) is returned as None, never as a made-up number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_curve, roc_auc_score, roc_curve

from lib.errors import DataError

MAX_POOLED_PIXELS = 30_000_000
"""Above this many pooled pixels the pixel metrics use a fixed random subsample of this size.

30 M pixels is about 120 test images of 500 x 500; sorting them stays well
under a few GB. Below the limit every pixel is used (no subsampling).
"""


def _binary_labels(labels, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{name} must be booleans or 0/1, got values {sorted(set(np.unique(y).tolist()))[:5]}")
        y = y.astype(bool)
    return y.ravel()


def _scores(scores, n: int, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape[0] != n:
        raise DataError(f"{name}: got {s.shape[0]} values for {n} labels")
    if not np.isfinite(s).all():
        raise DataError(f"{name}: {int((~np.isfinite(s)).sum())} values are NaN or infinite")
    return s


def image_auroc(labels, scores) -> float | None:
    """Image-level AUROC (I-AUROC): area under the ROC curve of the image scores.

    Returns None when the images are all of one class (the AUROC is undefined).
    """
    y = _binary_labels(labels)
    s = _scores(scores, y.shape[0])
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def image_roc(labels, scores) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC curve of the image scores as ``(false_positive_rate, true_positive_rate)``, or None (one class)."""
    y = _binary_labels(labels)
    s = _scores(scores, y.shape[0])
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def pool_pixels(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_pixels: int = MAX_POOLED_PIXELS,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pool the pixels of several images into flat ``(truth, value)`` arrays.

    Args:
        masks: ground-truth bool masks ``(H, W)``, one per image.
        maps: anomaly maps (or binary predictions) ``(H, W)``, same shapes as ``masks``.
        max_pixels: above this total, a fixed random subsample of ``max_pixels`` pixels is returned.
        seed: seed of that subsample.

    Returns:
        ``(truth bool (N,), values float32 (N,), subsampled)``.

    Raises:
        DataError: different numbers of masks and maps, or a mask and map of different shapes.
    """
    if len(masks) != len(maps):
        raise DataError(f"{len(masks)} masks for {len(maps)} anomaly maps")
    for i, (m, a) in enumerate(zip(masks, maps)):
        if np.shape(m) != np.shape(a):
            raise DataError(f"image {i}: mask of shape {np.shape(m)} but anomaly map of shape {np.shape(a)}")
    if not masks:
        return np.zeros(0, bool), np.zeros(0, np.float32), False
    truth = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks])
    values = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in maps])
    if truth.shape[0] <= max_pixels:
        return truth, values, False
    keep = np.random.default_rng(seed).choice(truth.shape[0], size=max_pixels, replace=False)
    return truth[keep], values[keep], True


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """Pixel-level AUROC (P-AUROC) over the pooled pixels of all images.

    Normal images take part with their all-negative masks. None when no pixel
    (or every pixel) is anomalous.
    """
    truth, values, _ = pool_pixels(masks, maps)
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, values))


def best_dice(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray],
              regions: Sequence[np.ndarray] | None = None) -> tuple[float | None, float | None]:
    """The paper's Dice: the best F1 over all thresholds of the pooled pixels.

    One threshold for the whole set (pixels pooled, as in the reference code),
    chosen on the very data it is measured on: an optimistic upper bound of the
    segmentation quality, reported because the paper does. Computed exactly from
    the precision-recall curve (every distinct map value is a candidate threshold),
    on the thresholded map itself (no closing/opening).

    Args:
        masks, maps: as in the module docstring.
        regions: optional bool ``(H, W)`` per image, where the segmentation may fire
            (the box): pixels outside are never predicted anomalous, at any threshold
            (their anomalous pixels count as missed).

    Returns:
        ``(dice, threshold)``: the best Dice and the map value at which it is reached
        (a pixel is anomalous when its value >= threshold); ``(None, None)`` when no
        pixel is anomalous.
    """
    if regions is not None:
        if len(regions) != len(maps):
            raise DataError(f"{len(regions)} regions for {len(maps)} anomaly maps")
        floor = min((float(np.min(m)) for m in maps if np.size(m)), default=0.0) - 1.0
        maps = [np.where(np.asarray(r, dtype=bool), m, floor) for m, r in zip(maps, regions)]
    truth, values, _ = pool_pixels(masks, maps)
    if not truth.any():
        return None, None
    precision, recall, thresholds = precision_recall_curve(truth, values)
    # The last (precision, recall) point has no threshold (recall 0, precision 1).
    precision, recall = precision[:-1], recall[:-1]
    if regions is not None:
        # The lowest threshold (floor) would switch on the pixels outside the regions: not a candidate.
        keep = thresholds > floor
        precision, recall, thresholds = precision[keep], recall[keep], thresholds[keep]
        if thresholds.size == 0:
            return 0.0, None
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def dice(masks: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> float | None:
    """Dice of binary predicted masks against the ground truth, pixels pooled over all images.

    ``2 |P ∩ T| / (|P| + |T|)``. 1.0 when both are empty everywhere (nothing to
    find, nothing found); None when there are no images.
    """
    truth, predicted, _ = pool_pixels(masks, predictions)
    if truth.shape[0] == 0:
        return None
    return float(f1_score(truth, predicted.astype(bool), zero_division=1.0))


def sensitivity_specificity(labels, decisions) -> tuple[float | None, float | None]:
    """Sensitivity (true-positive rate) and specificity (true-negative rate) of bool decisions.

    Each is None when its class is absent (no distended image, or no normal image).
    """
    y = _binary_labels(labels)
    d = _binary_labels(decisions, "decisions")
    if d.shape[0] != y.shape[0]:
        raise DataError(f"decisions: got {d.shape[0]} values for {y.shape[0]} labels")
    tn, fp, fn, tp = confusion_matrix(y, d, labels=[False, True]).ravel()
    sensitivity = float(tp / (tp + fn)) if tp + fn else None
    specificity = float(tn / (tn + fp)) if tn + fp else None
    return sensitivity, specificity


def summarize(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "folds"}`` of per-fold values; None folds are kept in ``folds`` and left out of mean/std.

    ``std`` is the population standard deviation over the folds (numpy's default,
    ``ddof=0``); mean and std are None when no fold has a value.
    """
    folds = [None if v is None else float(v) for v in values]
    present = np.array([v for v in folds if v is not None], dtype=np.float64)
    if present.size == 0:
        return {"mean": None, "std": None, "folds": folds}
    return {"mean": float(present.mean()), "std": float(present.std()), "folds": folds}
