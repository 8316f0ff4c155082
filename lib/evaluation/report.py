"""The human-readable evaluation report: ``report.md``, ROC/score figures and image panels.

Everything here reads the results (``metrics.json`` contents and the per-fold
files) and draws; nothing is computed from images except the panels, which the
protocol hands over ready-made. Figures use matplotlib's Agg backend (no display).

Files written under the output folder:

- ``report.md``: dataset summary, Table-1-style table (with the paper's numbers
  for reference), the box comparison (``gt`` vs ``uniform`` vs ``detected``),
  Table-2-style comparison with the detector's precision and mAP, and the
  box-shape leakage sentence.
- ``figures/roc_<key>.png``: per method, the ROC curve of each fold and the
  distribution of the test scores of normal and distended images.
- ``figures/roc_all_<box>.png``: every method's ROC (test scores of all folds pooled) on one plot.
- ``panels/<key>.png``: a few normal and distended test images of the first fold:
  original with box, masked input, reconstruction, anomaly map, segmentation vs ground truth.

:func:`rewrite_report` rebuilds ``report.md`` and the figures of a finished run from
``metrics.json`` and ``folds/`` (``evaluate --report-only``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.atomic import atomic_path, write_text
from lib.evaluation.metrics import image_roc
from lib.evaluation.results import METRIC_NAMES, base_key

# The paper's published numbers (real knee ultrasound, 483 images, 5 patient folds;
# docs/method.md): (mean, std) of I-AUROC, P-AUROC, Dice (whole images).
PAPER_TABLE1 = {
    "riad+msgmsd": ("RIAD (multi-mask inpainting)", (0.583, 0.083), (0.682, 0.016), (0.051, 0.017)),
    "patchcore": ("PatchCore (best unsupervised)", (0.701, 0.090), (0.871, 0.009), (0.193, 0.066)),
    "supervised": ("supervised multi-task classifier", (0.780, 0.050), None, None),
    "loris+msgmsd": ("LoRIS + MSGMSD", (0.783, 0.050), (0.932, 0.018), (0.263, 0.042)),
    "loris+dd": ("LoRIS + DD", (0.750, 0.100), (0.746, 0.047), (0.353, 0.034)),
}
# Table 2 of the paper (LoRIS + MSGMSD with detected boxes): detector precision, mAP@50, mAP@75,
# then I-AUROC, P-AUROC, Dice.
PAPER_TABLE2 = {
    "YOLOv5": (0.954, 0.796, 0.254, 0.773, 0.872, 0.223),
    "Co-DETR": (1.0, 0.90, 0.41, 0.776, 0.910, 0.240),
}

METRIC_TITLES = {
    "i_auroc": "I-AUROC",
    "p_auroc": "P-AUROC",
    "dice": "Dice (paper)",
    "dice_in_box": "Dice in box",
    "dice_calibrated": "Dice (calibrated)",
    "normal_box_share": "box share, normal",
    "distended_box_share": "box share, distended",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
SCORING_TITLES = {"mean/box": "mean in box", "max/box": "max in box", "mean/image": "mean over image",
                  "max/image": "max over image"}
BOX_TITLES = {"gt": "annotated (gt)", "uniform": "uniform", "detected": "detected"}


def safe_name(key: str) -> str:
    """A file-name-safe form of a method key (``loris+msgmsd@uniform`` -> ``loris_msgmsd_uniform``)."""
    return key.replace("+", "_").replace("@", "_")


def fmt(summary: dict | None, digits: int = 3) -> str:
    """``"0.783 ± 0.050"`` from a ``{"mean", "std"}`` summary; ``–`` when missing."""
    if not summary or summary.get("mean") is None:
        return "–"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def _paper_cell(key: str) -> str:
    paper = PAPER_TABLE1.get(base_key(key))
    if paper is None:
        return ""
    parts = [f"{v[0]:.3f}" if v else "–" for v in paper[1:]]
    return " / ".join(parts)


def _method_label(entry: dict) -> str:
    if entry["metric"] is None:
        return entry["method"]
    label = f"{entry['method']} + {entry['metric']}"
    if entry.get("pooling") and entry.get("score_region"):
        label += f" ({SCORING_TITLES[entry['pooling'] + '/' + entry['score_region']]})"
    return label


def table1(results: dict, box: str) -> str:
    """Markdown Table-1-style table of every method with boxes ``box``."""
    header = ["method"] + [METRIC_TITLES[m] for m in METRIC_NAMES] + ["paper I / P / Dice"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, entry in results["methods"].items():
        if entry["box"] != box:
            continue
        cells = [_method_label(entry)] + [fmt(entry[m]) for m in METRIC_NAMES] + [_paper_cell(key)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def box_comparison(results: dict, boxes: list[str]) -> str:
    """Markdown table: each method with every box source side by side (I-AUROC, P-AUROC, Dice)."""
    shown = ("i_auroc", "p_auroc", "dice")
    header = ["method"] + [f"{METRIC_TITLES[m]} {BOX_TITLES[b]}" for m in shown for b in boxes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    bases: list[str] = []
    for key in results["methods"]:
        if base_key(key) not in bases:
            bases.append(base_key(key))
    by_key = results["methods"]
    for base in bases:
        entries = {b: by_key.get(base if b == "gt" else f"{base}@{b}") for b in boxes}
        first = next(e for e in entries.values() if e is not None)
        cells = [_method_label(first)]
        for m in shown:
            for b in boxes:
                cells.append(fmt(entries[b][m]) if entries[b] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scoring_table(results: dict, box: str) -> str:
    """Markdown table: the I-AUROC of every network method's maps pooled each way (the scoring ablation)."""
    rows = [(key, results["methods"][key], ablation) for key, ablation in results.get("scoring", {}).items()
            if results["methods"].get(key, {}).get("box") == box]
    if not rows:
        return ""
    combos = list(rows[0][2])
    header = ["method"] + [SCORING_TITLES.get(c, c) for c in combos]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, entry, ablation in rows:
        own = f"{entry.get('pooling')}/{entry.get('score_region')}"
        cells = [f"{entry['method']} + {entry['metric']}"]
        for c in combos:
            cell = fmt(ablation.get(c))
            cells.append(f"**{cell}**" if c == own else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table2(results: dict) -> str:
    """Markdown Table-2-style comparison: LoRIS with annotated vs detected boxes, plus detector quality."""
    det = results.get("detector", {})
    header = ["LoRIS metric", "box", "I-AUROC", "P-AUROC", "Dice", "precision@50", "mAP@50", "mAP@75"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    detector_cells = [fmt(det.get("precision50")), fmt(det.get("map50")), fmt(det.get("map75"))]
    for key, entry in results["methods"].items():
        if entry["method"] != "loris" or entry["box"] != "gt":
            continue
        detected = results["methods"].get(f"{key}@detected")
        lines.append(f"| {entry['metric']} | annotated | {fmt(entry['i_auroc'])} | {fmt(entry['p_auroc'])} | "
                     f"{fmt(entry['dice'])} | – | – | – |")
        if detected:
            lines.append(f"| {entry['metric']} | detected | {fmt(detected['i_auroc'])} | {fmt(detected['p_auroc'])} | "
                         f"{fmt(detected['dice'])} | " + " | ".join(detector_cells) + " |")
    for name, (prec, m50, m75, ia, pa, dc) in PAPER_TABLE2.items():
        lines.append(f"| msgmsd (paper) | {name} | {ia:.3f} | {pa:.3f} | {dc:.3f} | {prec:.3f} | {m50:.3f} | {m75:.3f} |")
    return "\n".join(lines)


def leakage_sentence(results: dict) -> str:
    """One sentence on how much class signal the boxes alone carry (box-shape I-AUROC)."""
    parts = []
    for box in ("gt", "uniform", "detected"):
        key = "box-shape" if box == "gt" else f"box-shape@{box}"
        entry = results["methods"].get(key)
        if entry and entry["i_auroc"]["mean"] is not None:
            parts.append((box, entry["i_auroc"]["mean"], entry["i_auroc"]["std"]))
    if not parts:
        return "The box-shape baseline was not run, so this report cannot say how much the boxes alone reveal."
    box, value, std = parts[0]
    strength = abs(value - 0.5)
    if strength >= 0.4:
        amount = "almost all of the class signal"
    elif strength >= 0.25:
        amount = "much of the class signal"
    elif strength >= 0.1:
        amount = "some class signal"
    else:
        amount = "little or no class signal"
    text = (f"The {BOX_TITLES[box]} boxes alone carry {amount}: their height/width ratio, without looking at the "
            f"image, separates distended from normal images with I-AUROC {value:.3f} ± {std:.3f}")
    others = [f"{v:.3f} with {BOX_TITLES[b]} boxes" for b, v, _ in parts[1:]]
    if others:
        text += " (" + ", ".join(others) + ")"
    return text + "; any method that sees the box should be read against this number."


def _fold_scores(fold_results: list[dict], key: str) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for fold in fold_results:
        entry = fold["methods"].get(key)
        if entry and entry.get("scores") is not None:
            out.append((np.asarray(entry["labels"], dtype=bool), np.asarray(entry["scores"], dtype=np.float64)))
    return out


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")


def roc_figure(path: Path, key: str, results_entry: dict, fold_scores: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """ROC curves (one per fold) and the score distributions of normal vs distended test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (labels, scores) in enumerate(fold_scores):
        roc = image_roc(labels, scores)
        if roc is not None:
            ax_roc.plot(roc[0], roc[1], lw=1.2, label=f"fold {k}")
    ax_roc.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{key}: I-AUROC {fmt(results_entry['i_auroc'])}")
    ax_roc.legend(loc="lower right", fontsize=8)
    if fold_scores:
        labels = np.concatenate([lab for lab, _ in fold_scores])
        scores = np.concatenate([s for _, s in fold_scores])
        bins = np.histogram_bin_edges(scores, bins=30)
        ax_hist.hist(scores[~labels], bins=bins, alpha=0.6, label=f"normal (n={int((~labels).sum())})", density=True)
        ax_hist.hist(scores[labels], bins=bins, alpha=0.6, label=f"distended (n={int(labels.sum())})", density=True)
        ax_hist.legend(fontsize=8)
    ax_hist.set(xlabel="image score (test images, all folds)", ylabel="density", title="score distributions")
    _savefig(fig, path)
    plt.close(fig)


def roc_overview(path: Path, box: str, results: dict, fold_results: list[dict]) -> None:
    """Every method's ROC with boxes ``box`` on one plot (test scores of all folds pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for key, entry in results["methods"].items():
        if entry["box"] != box:
            continue
        scores = _fold_scores(fold_results, key)
        if not scores:
            continue
        roc = image_roc(np.concatenate([lab for lab, _ in scores]), np.concatenate([s for _, s in scores]))
        if roc is not None:
            ax.plot(roc[0], roc[1], lw=1.2, label=f"{key} ({fmt(entry['i_auroc'], 2)})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC, {BOX_TITLES[box]} boxes (folds pooled)")
    ax.legend(loc="lower right", fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


@dataclass
class PanelRow:
    """One test image in a method's panel. Arrays are ``(H, W)`` in the original geometry.

    Attributes:
        name, label: the image name and its true label.
        image: the original, float [0, 1].
        box: the box the method was given.
        masked_input: what the network saw, float [0, 1] (None for the baselines).
        reconstruction: float [0, 1], or None.
        anomaly_map: float, or None (``box-shape``).
        mask: the predicted segmentation (bool), or None.
        truth: the ground-truth mask (bool; all False for normal images).
        score, distended: the image score and the decision at the calibrated threshold.
    """

    name: str
    label: str
    image: np.ndarray
    box: tuple
    masked_input: np.ndarray | None
    reconstruction: np.ndarray | None
    anomaly_map: np.ndarray | None
    mask: np.ndarray | None
    truth: np.ndarray
    score: float
    distended: bool


def panel_figure(path: Path, title: str, rows: list[PanelRow], aspect: float = 1.0) -> None:
    """A grid: one row per image; columns original+box, masked input, reconstruction, anomaly map,
    segmentation vs ground truth (green = both, red = predicted only, blue = missed).

    ``aspect``: height / width of one displayed pixel (``H / W`` of the original image when the
    arrays are on the square network grid, so that the anatomy keeps its proportions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = ("original + box", "masked input", "reconstruction", "anomaly map", "segmentation vs truth")
    fig, axes = plt.subplots(max(len(rows), 1), len(columns), figsize=(2.4 * len(columns), 2.4 * max(len(rows), 1)),
                             squeeze=False)
    for r, row in enumerate(rows):
        ax = axes[r]
        x0, y0, x1, y1 = row.box
        ax[0].imshow(row.image, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        ax[0].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.2))
        verdict = "distended" if row.distended else "normal"
        ax[0].set_ylabel(f"{row.name}\ntruth: {row.label}\nscore {row.score:.3g} -> {verdict}", fontsize=7)
        for c, array in ((1, row.masked_input), (2, row.reconstruction)):
            if array is None:
                ax[c].text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax[c].transAxes)
            else:
                ax[c].imshow(array, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        if row.anomaly_map is None:
            ax[3].text(0.5, 0.5, "no map", ha="center", va="center", transform=ax[3].transAxes)
        else:
            ax[3].imshow(row.anomaly_map, cmap="inferno", aspect=aspect)
        overlay = np.stack([row.image] * 3, axis=-1) * 0.6
        predicted = row.mask if row.mask is not None else np.zeros_like(row.truth)
        overlay[predicted & row.truth] = (0.1, 0.9, 0.1)
        overlay[predicted & ~row.truth] = (0.95, 0.15, 0.15)
        overlay[~predicted & row.truth] = (0.2, 0.4, 1.0)
        ax[4].imshow(np.clip(overlay, 0, 1), aspect=aspect)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def write_report(out_dir: Path, results: dict, fold_results: list[dict], dataset_text: str = "") -> Path:
    """Write ``report.md`` and the ROC figures under ``out_dir``; return the report's path.

    Args:
        results: the ``metrics.json`` contents.
        fold_results: the per-fold results (with the test scores, for the ROC figures).
        dataset_text: the dataset summary, shown verbatim.
    """
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for key, entry in results["methods"].items():
        roc_figure(figures / f"roc_{safe_name(key)}.png", key, entry, _fold_scores(fold_results, key))
    config = results.get("config", {})
    boxes = list(config.get("boxes") or sorted({e["box"] for e in results["methods"].values()}))
    for box in boxes:
        roc_overview(figures / f"roc_all_{box}.png", box, results, fold_results)

    lines = ["# LoRIS evaluation report", ""]
    if config.get("command"):
        lines += ["Command:", "", "```", config["command"], "```", ""]
    effective = dict(config)
    loris = config.get("loris_settings") or {}
    # The effective values (the preset's when a flag was not given).
    for key, name in (("epochs", "max_epochs"), ("patience", "patience"), ("image_size", "image_size")):
        if effective.get(key) is None and name in loris:
            effective[key] = loris[name]
    settings = [f"{k} = {effective[k]}" for k in ("n_folds", "epochs", "patience", "image_size", "seed", "quick",
                                                  "device", "torch_threads") if effective.get(k) is not None]
    if settings:
        lines += ["Settings: " + ", ".join(settings) + ".", ""]
    if loris:
        network = ("the reference U-Net" if loris.get("architecture") == "reference" else "MONAI UNet")
        scoring = SCORING_TITLES.get(f"{loris.get('pooling')}/{loris.get('score_region', 'box')}", "")
        baseline = config.get("baseline_scoring")
        lines += [f"Network: {network}, channels {loris.get('channels')}, learning rate {loris.get('learning_rate')}, "
                  f"batch {loris.get('batch_size')}, augmentation {'on' if loris.get('augment') else 'off'}; "
                  f"LoRIS score: {scoring}"
                  + (f"; RIAD / autoencoder score: {SCORING_TITLES[baseline['pooling'] + '/' + baseline['score_region']]}"
                     if baseline else "")
                  + f"; pixel metrics on the {loris.get('image_size')} x {loris.get('image_size')} network grid.", ""]
    if config.get("fold_sizes"):
        sizes = "; ".join(f"{s['test']} ({s['test_distended']} distended)" for s in config["fold_sizes"])
        lines += [f"Test images per fold: {sizes}.", ""]
    if config.get("wall_s") is not None:
        lines += [f"Wall time: {config['wall_s'] / 60:.1f} min.", ""]
    dataset = results.get("dataset", {})
    lines += ["## Dataset", ""]
    if dataset_text:
        lines += ["```", dataset_text.rstrip(), "```", ""]
    elif dataset:
        lines += [", ".join(f"{k}: {v}" for k, v in dataset.items() if not isinstance(v, (dict, list))), ""]
    lines += ["## How much the boxes alone say", "", leakage_sentence(results), ""]
    if "uniform_box" in results:
        u = results["uniform_box"]
        lines += [f"Uniform boxes: {u['width_fraction']:.3f} of the image width (median annotated width) x "
                  f"{u['height_fraction']:.3f} of its height ({u['height_percentile']:g}th percentile of the "
                  "annotated heights), centred on each annotated box and clipped to the image.", ""]
    for box in boxes:
        lines += [f"## Table 1: every method, {BOX_TITLES[box]} boxes", "", table1(results, box), ""]
    lines += [
        "Mean ± standard deviation over the patient-grouped folds. I-AUROC / P-AUROC: image / pixel "
        "(pixels of all test images pooled, normal images all-negative) AUROC. Dice (paper): the best F1 over "
        "thresholds of the pooled pixels of whole test images (threshold chosen on the test set: an upper "
        "bound). Dice in box: the same when only box pixels may fire (every method reaches at least the Dice "
        "of \"the whole box\" there: a floor, not a measurement). Dice (calibrated): at the pixel threshold "
        "fitted on validation, after 3x3 closing then opening, in the region the method segments (the box for "
        "LoRIS and box-intensity, the whole image for RIAD and the autoencoder). Box share: the median share of "
        "the box segmented at that threshold on normal / distended test images (a segmentation that is the box "
        "has 1.0 on both). Sensitivity / specificity: at the image threshold fitted on validation. The paper "
        "column gives the published numbers (real knee ultrasound, 483 images) for reference only; they are not "
        "comparable with another dataset.",
        "",
    ]
    for box in boxes:
        table = scoring_table(results, box)
        if table:
            lines += [f"## Scoring ablation, {BOX_TITLES[box]} boxes", "", table, "",
                      "I-AUROC of each network method's test maps pooled by mean or max, over the box or over the "
                      "whole image; bold: the method's own scoring (LoRIS: the paper's mean in the box; RIAD and "
                      "the autoencoder: the max over the whole image, as their papers score; their in-box columns "
                      "give them LoRIS's location prior).", ""]
    if len(boxes) > 1:
        lines += ["## Annotated vs re-drawn vs detected boxes", "", box_comparison(results, boxes), ""]
    if "detected" in boxes:
        det = results.get("detector", {})
        lines += ["## Table 2: annotated vs detected boxes", "", table2(results), ""]
        policy = config.get("box_policy", "fail")
        fate = {"fail": "they get no answer, as from the server (HTTP 409), and count as normal, ranked below "
                        "every answered image, with an empty segmentation",
                "skip": "they are skipped, as by active-learning scoring, and count as normal, ranked below every "
                        "answered image, with an empty segmentation",
                "whole_image": "the whole image is their box"}[policy]
        lines += [f"Detector: trained per fold on that fold's normal training images; mean IoU with the "
                  f"annotated box on the test images {fmt(det.get('mean_iou'))}. Boxes come from the pipeline's "
                  f"box step with the detector's confidence floor and box policy `{policy}`"
                  + (" (the server's)" if policy == "fail" else "") + f": test images where it found nothing, "
                  f"per fold: {det.get('missed')}; {fate}. The calibration of the detected-box rows uses "
                  "detected boxes on the validation images too.", ""]
    lines += ["## Figures", ""]
    for key in results["methods"]:
        name = safe_name(key)
        lines.append(f"- `{key}`: [ROC and scores](figures/roc_{name}.png)"
                     + (f", [panel](panels/{name}.png)" if (out_dir / "panels" / f"{name}.png").exists() else ""))
    lines.append("")
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path


def rewrite_report(out_dir: Path) -> Path:
    """Rebuild ``report.md`` and the ROC figures of a finished run from its ``metrics.json`` and ``folds/``.

    Raises:
        DataError: ``out_dir`` holds no finished run.
    """
    import json

    from lib.data.summary import format_summary
    from lib.errors import DataError

    out_dir = Path(out_dir)
    path = out_dir / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the evaluation first")
    try:
        results = json.loads(path.read_text())
        config = results["config"]
        indices = config.get("fold_indices") or list(range(config["n_folds"]))
        folds = [json.loads((out_dir / "folds" / f"fold_{k}.json").read_text()) for k in indices]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{out_dir}: incomplete evaluation output ({exc})") from None
    dataset = {k: v for k, v in results.get("dataset", {}).items() if k != "layout"}
    try:
        text = format_summary(dataset)
    except (KeyError, TypeError):
        text = ""
    return write_report(out_dir, results, folds, text)
