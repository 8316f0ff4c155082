"""The confidence floor: below it the detector answers "nothing found".

Calibrated at the end of training on the validation images (never on test
images): their confidences are the *positives*; frames without a recess made
from the same images (:mod:`lib.detection.negatives`: recess erased, the
superficial tissue alone, speckle, a uniform level) are the *negatives*. The
floor is the threshold that best separates the two (highest balanced accuracy:
the share of positives at or above it plus the share of negatives below it),
placed in the middle of the best range in logit space, so that a real recess
and a frame without one are equally far from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lib.data.records import Box
from lib.detection.negatives import KINDS, negative_frame

EPS = 1e-6


def _logit(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def choose_floor(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """The confidence floor that best separates ``positives`` (should be found) from ``negatives``.

    Every distinct confidence bounds a candidate range; the range with the highest balanced accuracy
    wins (the first when tied, i.e. the lowest floor: a missed recess costs more than a false box), and
    the floor is its middle in logit space. With no negatives the floor sits below every positive.
    """
    pos = np.asarray([_logit(p) for p in positives], dtype=np.float64)
    neg = np.asarray([_logit(p) for p in negatives], dtype=np.float64)
    if pos.size == 0:
        raise ValueError("no positive confidences to calibrate the floor on")
    if neg.size == 0:
        return _sigmoid(float(pos.min()) - 1.0)
    cuts = np.unique(np.concatenate([pos, neg]))
    edges = np.concatenate([[cuts[0] - 2.0], cuts, [cuts[-1] + 2.0]])
    best, best_range = -1.0, (edges[0], edges[1])
    for lo, hi in zip(edges[:-1], edges[1:]):
        threshold = (lo + hi) / 2  # found: confidence >= threshold
        accuracy = (pos >= threshold).mean() + (neg < threshold).mean()
        if accuracy > best + 1e-12:
            best, best_range = accuracy, (lo, hi)
    return _sigmoid(float(sum(best_range) / 2))


def negative_frames(images: Sequence[np.ndarray], boxes: Sequence[Box], seed: int = 0,
                    kinds: Sequence[str] = KINDS) -> dict[str, list[np.ndarray]]:
    """One recess-free frame of each kind per boxed image: ``{kind: [frames]}``."""
    rng = np.random.default_rng(seed)
    return {kind: [negative_frame(kind, rng, image, box) for image, box in zip(images, boxes)] for kind in kinds}


def _summary(values: Sequence[float], floor: float, found: bool) -> dict:
    values = np.asarray(values, dtype=np.float64)
    share = (values >= floor).mean() if found else (values < floor).mean()
    key = "found" if found else "nothing_found"
    return {"n": int(values.size), "min": float(values.min()), "median": float(np.median(values)),
            "max": float(values.max()), key: float(share)}


def calibrate(detector, images: Sequence[np.ndarray], boxes: Sequence[Box], seed: int = 0) -> dict:
    """Fit the confidence floor of ``detector`` on boxed validation ``images`` and frames made from them.

    Returns:
        ``{"confidence_floor", "positives": {"n", "min", "median", "max", "found"}, "negatives": {kind:
        {"n", "min", "median", "max", "nothing_found"}}}``; ``found`` / ``nothing_found`` are the shares
        answered rightly with that floor. Blank frames are left out: the detector never reports a box on them.
    """
    positives = [c for c in detector.confidences(images) if c is not None]
    negatives = {kind: [c for c in detector.confidences(frames) if c is not None]
                 for kind, frames in negative_frames(images, boxes, seed).items()}
    floor = choose_floor(positives, [c for values in negatives.values() for c in values])
    return {
        "confidence_floor": floor,
        "positives": _summary(positives, floor, True),
        "negatives": {kind: _summary(values, floor, False) for kind, values in negatives.items() if values},
    }
