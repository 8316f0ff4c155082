"""The shape of evaluation results: method keys, per-fold files, and ``metrics.json``.

Method keys
    ``"<method>+<metric>"`` for the network methods (``loris+msgmsd``,
    ``riad+msgmsd``, ``autoencoder+dd`` ...), the bare name for the no-learning
    baselines (``box-intensity``, ``box-shape``). Boxes other than the annotated
    ones add ``"@<box>"``: ``loris+msgmsd@uniform``, ``box-shape@detected``.
    Every entry also carries its parts as fields ``method``, ``metric`` (None for
    baselines) and ``box`` (``gt`` | ``uniform`` | ``detected``), so a reader never
    has to parse the key.

``metrics.json``::

    {"methods": {"<key>": {"method": "loris", "metric": "msgmsd", "box": "gt",
                           "pooling": "mean", "score_region": "box", "dice_calibrated_region": "box",
                           "i_auroc": {"mean": float|null, "std": float|null, "folds": [float|null, ...]},
                           "p_auroc": {...}, "dice": {...}, "dice_in_box": {...}, "dice_calibrated": {...},
                           "normal_box_share": {...}, "distended_box_share": {...},
                           "sensitivity": {...}, "specificity": {...}}},
     "scoring": {"<key>": {"mean/box": {...}, "max/box": {...}, "mean/image": {...}, "max/image": {...}}},
     "detector": {"precision50": {...}, "map50": {...}, "map75": {...}, "mean_iou": {...},
                  "missed": [int per fold]}          # only with --box detected
     "uniform_box": {"width_fraction": .., "height_fraction": .., ...},   # only with --box uniform
     "config": {...}, "dataset": {...}}

``p_auroc`` ranks every pixel of the anomaly maps (the whole network grid).
``dice`` is the paper's best-threshold Dice (the pooled pixels of whole test
images, normal images included as all-negative, threshold chosen on the test set
itself: an upper bound, without post-processing); ``dice_in_box`` the same when
only box pixels can fire (anomalous pixels outside the box count as missed; a
floor of "the whole box" that every method reaches); ``dice_calibrated`` uses
the pixel threshold fitted on validation and the closing/opening
post-processing, in the region the method segments (``dice_calibrated_region``:
``box`` or ``image``). ``normal_box_share`` / ``distended_box_share``: the
median share of the box segmented at the calibrated threshold, over the normal /
distended test images. ``scoring``: the I-AUROC of each network method's maps
pooled by mean or max over the box or the whole image (the scoring ablation).
A metric that does not apply (``box-shape`` has no anomaly map) or is
undefined on a fold (one class only) is null.
"""

from __future__ import annotations

from lib.evaluation.baselines import BASELINES
from lib.evaluation.metrics import summarize

METRIC_NAMES = ("i_auroc", "p_auroc", "dice", "dice_in_box", "dice_calibrated", "normal_box_share",
                "distended_box_share", "sensitivity", "specificity")
"""The per-method metrics of ``metrics.json``, in report order."""

DETECTOR_METRICS = ("precision50", "map50", "map75", "mean_iou")


def method_key(method: str, metric: str | None, box: str = "gt") -> str:
    """The ``metrics.json`` key of one method, anomaly metric and box source (see the module docstring)."""
    base = method if method in BASELINES or metric is None else f"{method}+{metric}"
    return base if box == "gt" else f"{base}@{box}"


def base_key(key: str) -> str:
    """The key without its ``@box`` suffix."""
    return key.split("@", 1)[0]


def aggregate(fold_results: list[dict]) -> dict:
    """Per-fold results (``folds/fold_<k>.json`` contents, in fold order) -> the ``methods`` and
    ``detector`` parts of ``metrics.json``.

    A method missing from a fold counts as null there.
    """
    keys: list[str] = []
    for fold in fold_results:
        for key in fold["methods"]:
            if key not in keys:
                keys.append(key)
    methods = {}
    for key in keys:
        entries = [fold["methods"].get(key) for fold in fold_results]
        first = next(e for e in entries if e is not None)
        out = {"method": first["method"], "metric": first["metric"], "box": first["box"]}
        for name in ("pooling", "score_region", "dice_calibrated_region"):
            if first.get(name) is not None:
                out[name] = first[name]
        for name in METRIC_NAMES:
            out[name] = summarize([None if e is None else e.get(name) for e in entries])
        methods[key] = out
    result = {"methods": methods, "scoring": {}}
    for key in keys:
        entries = [fold["methods"].get(key) for fold in fold_results]
        ablations = [None if e is None else e.get("scoring") for e in entries]
        if any(a is not None for a in ablations):
            combos = next(a for a in ablations if a is not None)
            result["scoring"][key] = {c: summarize([None if a is None else a.get(c) for a in ablations]) for c in combos}
    detectors = [fold.get("detector") for fold in fold_results]
    if any(d is not None for d in detectors):
        result["detector"] = {
            name: summarize([None if d is None else d.get(name) for d in detectors]) for name in DETECTOR_METRICS
        }
        result["detector"]["missed"] = [None if d is None else len(d.get("missed", [])) for d in detectors]
    return result
