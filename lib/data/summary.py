"""What a data set holds, and how much its boxes alone give away.

A clinician boxes a thin normal recess with a flat box and a distended recess
with a taller one, so the box's shape can carry the class without looking at
the image. The summary reports that leakage next to the plainest image
baseline (mean darkness inside the box), so a user sees it before trusting
any number measured with those boxes. ``sample-data`` and ``evaluate`` print it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lib.data.imageio import image_size, read_image
from lib.data.records import Box, Record


def box_shape_score(box: Box) -> float:
    """The box's height / width ratio (no image used): the ``box-shape`` baseline's score."""
    x0, y0, x1, y1 = box
    return (y1 - y0) / max(x1 - x0, 1)


def box_darkness_score(image: np.ndarray, box: Box) -> float:
    """``1 -`` the mean intensity of ``image`` ((H, W) in [0, 1]) inside ``box``: the ``box-intensity`` score."""
    x0, y0, x1, y1 = box
    return float(1.0 - np.asarray(image[y0:y1, x0:x1], dtype=np.float64).mean())


def auroc(labels: Sequence[str], scores: Sequence[float], positive: str = "distended") -> float | None:
    """Area under the ROC curve of ``scores`` for ``label == positive``; None when a class is missing."""
    from sklearn.metrics import roc_auc_score

    y = np.array([label == positive for label in labels], dtype=bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def summarize(
    records: Sequence[Record],
    *,
    intensity: bool = True,
    load_image: Callable[[Record], np.ndarray] | None = None,
) -> dict:
    """Counts, sizes and box-leakage AUROCs of a data set.

    Args:
        records: the data set.
        intensity: also compute the box-intensity AUROC (reads every boxed, labelled image).
        load_image: how to read a record's image as float (H, W) in [0, 1]; default
            :func:`lib.data.imageio.read_image` on ``record.image_path``.

    Returns:
        A JSON-serialisable dict: ``images``, ``labels`` (count per label, ``"unlabelled"``
        for None), ``patients``, ``patients_with_distended``, ``image_sizes`` (``"WxH"`` ->
        count), ``boxed``, ``masks``, ``box_shape_auroc`` (height/width ratio as the score,
        distended positive), ``box_height_auroc`` and ``box_width_auroc`` (in pixels),
        ``box_intensity_auroc`` (mean darkness inside the box), ``box_height_width``
        (median ``[height, width]`` per label). AUROCs are None when a class is missing.
    """
    load_image = load_image or (lambda r: read_image(r.image_path))
    labels = Counter(r.label if r.label is not None else "unlabelled" for r in records)
    patients = {r.patient_id for r in records}
    with_distended = {r.patient_id for r in records if r.label == "distended"}
    sizes: Counter = Counter()
    for r in records:
        w, h = image_size(r.image_path)
        sizes[f"{w}x{h}"] += 1
    scored = [r for r in records if r.box is not None and r.label is not None]
    classes = [r.label for r in scored]
    heights = [r.box[3] - r.box[1] for r in scored]
    widths = [r.box[2] - r.box[0] for r in scored]
    summary = {
        "images": len(records),
        "labels": dict(sorted(labels.items())),
        "patients": len(patients),
        "patients_with_distended": len(with_distended),
        "image_sizes": dict(sizes.most_common()),
        "boxed": sum(r.box is not None for r in records),
        "masks": sum(r.mask_path is not None for r in records),
        "box_shape_auroc": auroc(classes, [box_shape_score(r.box) for r in scored]),
        "box_height_auroc": auroc(classes, heights),
        "box_width_auroc": auroc(classes, widths),
        "box_intensity_auroc": None,
        "box_height_width": {
            label: [
                float(np.median([h for h, c in zip(heights, classes) if c == label])),
                float(np.median([w for w, c in zip(widths, classes) if c == label])),
            ]
            for label in sorted(set(classes))
        },
    }
    if intensity and scored:
        darkness = [box_darkness_score(load_image(r), r.box) for r in scored]
        summary["box_intensity_auroc"] = auroc(classes, darkness)
    return summary


def _fmt(value) -> str:
    return "n/a (one class)" if value is None else f"{value:.3f}"


def format_summary(summary: Mapping) -> str:
    """The summary as a short plain-text table, ending with one sentence on box leakage."""
    labels = summary["labels"]
    sizes = ", ".join(f"{size} ({n})" for size, n in summary["image_sizes"].items())
    lines = [
        f"{'images':<28}{summary['images']}  (" + ", ".join(f"{k} {v}" for k, v in labels.items()) + ")",
        f"{'patients':<28}{summary['patients']}  ({summary['patients_with_distended']} with distended images)",
        f"{'image sizes (WxH)':<28}{sizes}",
        f"{'boxed / masks':<28}{summary['boxed']} / {summary['masks']}",
    ]
    for label, (h, w) in summary.get("box_height_width", {}).items():
        lines.append(f"{'median box ' + label:<28}{h:.0f} x {w:.0f} px (height x width)")
    lines += [
        f"{'box-shape AUROC (h/w)':<28}{_fmt(summary['box_shape_auroc'])}"
        f"   (height {_fmt(summary['box_height_auroc'])}, width {_fmt(summary['box_width_auroc'])})",
        f"{'box-intensity AUROC':<28}{_fmt(summary['box_intensity_auroc'])}   (mean darkness inside the box)",
    ]
    shape = summary["box_shape_auroc"]
    if shape is not None:
        leak = max(shape, 1.0 - shape)  # below 0.5 the ratio separates the classes the other way round
        verdict = "carry much of the class" if leak >= 0.75 else "carry little of the class"
        lines.append(
            f"The box's height/width ratio alone separates the classes with AUROC {shape:.2f} (0.5 = no leakage): "
            f"these boxes {verdict}; compare every method with box-shape, or evaluate with --box uniform."
        )
    return "\n".join(lines)
