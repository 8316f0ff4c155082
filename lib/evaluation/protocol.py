"""The paper's evaluation protocol: patient-grouped folds, one training per model and fold, all metrics.

For every fold (:func:`lib.data.splits.kfold`, or the reference layout's
precomputed folds):

1. Models are trained on the fold's **normal** training images only, with early
   stopping on its normal validation images (:func:`lib.loris.train.train`):
   ``loris`` once per box source it needs (annotated boxes serve ``gt`` and
   ``detected``; ``uniform`` boxes get their own model), ``riad`` and
   ``autoencoder`` once (they never look at the box while learning; the box only
   decides where their map is pooled and segmented).
2. Thresholds come from the validation split only (:mod:`lib.loris.calibration`,
   the core's rules), with the same box source as the test images: a model
   evaluated with other boxes than it was calibrated with is re-calibrated on the
   validation images with those boxes. Test images never set a threshold.
3. One forward pass per test batch gives every requested anomaly metric
   (:meth:`lib.loris.predictor.LorisPredictor.network_outputs`).
4. ``--box detected``: a recess detector is trained on the fold's normal training
   images (:func:`lib.detection.train.train_detector`); the pipeline's box step
   (:func:`lib.pipeline.resolve_boxes`: the detector's calibrated confidence floor,
   then ``box_policy``, by default the server's ``fail``) boxes the validation (for
   calibration) and test images, as the server would; its precision/mAP on the test
   images are recorded. An image the policy leaves without a box gets no answer, as
   from the server: it counts as normal (ranked below every answered image) with an
   empty segmentation, and calibration leaves it out.
5. The baselines (``box-intensity``, ``box-shape``) are calibrated and tested
   on the same images with the same boxes. ``riad`` and ``autoencoder`` are
   scored as their papers score them (the max of the map over the whole image,
   segmentation over the whole image, no box); their scores pooled in the box
   are reported beside, labelled, in the scoring ablation.
6. Scoring ablation: every network method's test maps are also pooled by
   ``mean`` and ``max`` over the ``box`` and over the whole ``image``; the
   I-AUROC of each is reported (``scoring``), LoRIS's headline being its
   settings' (the paper's mean in the box).

Pixel metrics are computed on the network grid (``S x S``, where the maps are
made and calibrated, as in the paper's reference code at 256 px); ground-truth
masks are resized to it (a grid pixel is anomalous when at least half covered).
Distended test images without a mask are left out of the pixel metrics only.
``dice`` is the paper's (whole images, threshold chosen on the test pixels: an
upper bound); ``dice_in_box`` the same with only box pixels able to fire;
``dice_calibrated`` at the validation threshold, in the region the method
segments (``dice_calibrated_region``). ``normal_box_share`` and
``distended_box_share`` are the median share of the box segmented on normal and
on distended test images at the calibrated threshold.

Each fold's file also lists every test image with its label, each box used
(and its source and confidence), each method's score, and the model folders,
so that any number can be audited and recomputed.

Each finished fold is written atomically to ``OUT/folds/fold_<k>.json``; with
``resume`` a finished fold of the same configuration is not run again (and an
interrupted model training continues from its last epoch).

Folds side by side (``workers`` > 1): each fold runs in a worker process of its own
(:func:`_fold_worker`, started with ``spawn``), at most ``workers`` at a time, each on
``threads`` torch CPU threads and, where there are several GPUs, on a GPU of its own
(worker slot ``i`` on ``cuda:i mod #GPUs``). A fold's work is the same function in both
modes, seeded by the configuration alone (training seeds the network, the shuffling and the
masks from ``seed``), so the results are those of the serial run, number for number,
provided each fold runs on as many CPU threads (``threads``; PyTorch's CPU kernels may round
differently with another count) and on the same kind of device (on GPUs, cuDNN is asked
for deterministic algorithms in both modes). Progress and messages of the workers come back
to the one progress bar; fold results are written by this process as each fold ends; a
failing fold stops the others and its error is raised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue as queues
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.data.atomic import write_json
from lib.data.dataset import load_dataset
from lib.data.imageio import image_size, read_image, read_mask
from lib.data.records import Record
from lib.data.splits import Fold, kfold
from lib.errors import DataError, LorisError
from lib.evaluation import boxes as box_sources
from lib.evaluation.baselines import (
    BASELINES,
    METHODS,
    NETWORK_METHODS,
    box_intensity_map,
    box_intensity_score,
    box_shape_score,
)
from lib.evaluation.metrics import (
    best_dice,
    dice,
    image_auroc,
    pixel_auroc,
    sensitivity_specificity,
)
from lib.loris.postprocess import image_scores
from lib.evaluation.report import PanelRow, panel_figure, safe_name, write_report
from lib.evaluation.results import aggregate, method_key
from lib.loris import preprocess
from lib.loris.anomaly import METRICS
from lib.loris.calibration import fit_calibration
from lib.loris.masking import box_mask, fill_box, riad_masks
from lib.loris.postprocess import segment
from lib.loris.settings import NETWORKS, POOLINGS, SCORE_REGIONS, LorisSettings

FORMAT_VERSION = 2

SCORINGS = tuple(f"{p}/{r}" for r in SCORE_REGIONS for p in POOLINGS)
"""The scoring ablation's ``pooling/region`` combinations: ``mean/box``, ``max/box``, ``mean/image``, ``max/image``."""


@dataclass
class EvaluationConfig:
    """Everything that defines one evaluation run (parsed once from the command line).

    Attributes:
        data: the dataset folder (flat, reference or datastore layout).
        out: output folder.
        folds: number of patient-grouped folds (ignored when the dataset brings its own).
        methods: of :data:`lib.evaluation.baselines.METHODS`.
        metrics: anomaly-map metrics of the network methods, of :data:`lib.loris.anomaly.METRICS`.
        boxes: box sources, of :data:`lib.evaluation.boxes.BOX_MODES`, reported side by side.
        epochs, patience: training length / early-stopping patience (None = the settings' default).
        image_size: network grid side ``S`` (None = the settings' default).
        seed: seed of the folds and of training.
        quick: start from the small CPU presets (``LorisSettings.quick()``, ``DetectorSettings.quick()``).
        augment: train the network methods with box jitter and intensity gain (the paper has none).
        pooling, score_region: LoRIS's headline score (None = the settings' default, the paper's mean in the box).
        architecture: the network of every network method (None = the preset's; another one comes with its
            default channels, :data:`lib.loris.settings.NETWORKS`).
        channels: its channels per level (None = the preset's or the architecture's).
        detector_epochs: detector training length (None = the detector preset's own: 160, ``quick`` 80).
        detector_image_size: the detector's input side (None = the detector preset's own, independent
            of ``image_size``: the box is found on its grid and mapped back to the image's pixels).
        box_policy: ``--box detected``: what an image gets when the detector finds no recess
            (:data:`lib.pipeline.BOX_POLICIES`; default ``fail``, the server's: no answer, counted as normal
            with an empty segmentation).
        uniform_percentile: percentile of annotated heights for ``--box uniform``.
        resume: skip folds already finished with this configuration.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: folds run side by side in that many processes (1: one after another, in this process).
        threads: torch CPU threads of each fold (None: PyTorch's default in the serial run, that divided
            among the workers otherwise); the same count gives the same numbers in both modes.
        panel_images: normal and distended test images (each) shown in the panels of the first fold.
        progress: show the progress bar.
        command: the command line, for the report.
    """

    data: Path
    out: Path
    folds: int = 5
    methods: tuple[str, ...] = METHODS
    metrics: tuple[str, ...] = METRICS
    boxes: tuple[str, ...] = ("gt",)
    epochs: int | None = None
    patience: int | None = None
    image_size: int | None = None
    seed: int = 0
    quick: bool = False
    augment: bool = False
    pooling: str | None = None
    score_region: str | None = None
    architecture: str | None = None
    channels: tuple[int, ...] | None = None
    detector_epochs: int | None = None
    detector_image_size: int | None = None
    box_policy: str = "fail"
    uniform_percentile: float = 90.0
    resume: bool = False
    device: str = "auto"
    workers: int = 1
    threads: int | None = None
    panel_images: int = 3
    progress: bool = True
    command: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.methods = tuple(dict.fromkeys(self.methods))
        self.metrics = tuple(dict.fromkeys(self.metrics))
        self.boxes = tuple(dict.fromkeys(self.boxes))
        for m in self.methods:
            if m not in METHODS:
                raise DataError(f"--methods: unknown method {m!r}; valid methods are {', '.join(METHODS)}")
        for m in self.metrics:
            if m not in METRICS:
                raise DataError(f"--metrics: unknown metric {m!r}; valid metrics are {', '.join(METRICS)}")
        for b in self.boxes:
            box_sources.check_box_mode(b)
        from lib.pipeline import check_box_policy

        check_box_policy(self.box_policy)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise DataError(f"--workers must be a whole number of at least 1, got {self.workers!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise DataError(f"--threads must be a whole number of at least 1, got {self.threads!r}")
        if not self.methods:
            raise DataError("--methods: give at least one method")
        if not self.boxes:
            raise DataError("--box: give at least one box source")
        if any(m in NETWORK_METHODS for m in self.methods) and not self.metrics:
            raise DataError("--metrics: the network methods need at least one anomaly metric")
        self.loris_settings("loris")  # validates epochs / patience / image size early
        if "detected" in self.boxes:
            self.detector_settings()

    def loris_settings(self, mode: str) -> LorisSettings:
        """The settings of a network method (``mode`` = loris | riad | autoencoder): same network and budget.

        LoRIS scores and segments in the box (the paper); RIAD and the autoencoder as their papers do:
        the max of the map over the whole image, segmentation over the whole image.
        """
        base = LorisSettings.quick() if self.quick else LorisSettings()
        if self.architecture is not None and self.architecture != base.architecture:
            base = base.replace(**NETWORKS[self.architecture])
        if self.channels is not None:
            base = base.replace(channels=tuple(self.channels), strides=(2,) * (len(self.channels) - 1))
        metric = self.metrics[0] if self.metrics else base.metric
        scoring = ({"pooling": self.pooling, "score_region": self.score_region} if mode == "loris" else
                   {"pooling": "max", "score_region": "image", "segment_in_box": False})
        return base.replace(mode=mode, max_epochs=self.epochs, patience=self.patience, image_size=self.image_size,
                            seed=self.seed, metric=metric, augment=self.augment, **scoring)

    def detector_settings(self):
        """The recess detector's settings for ``--box detected``."""
        from lib.detection.settings import DetectorSettings

        base = DetectorSettings.quick() if self.quick else DetectorSettings()
        # The detector keeps its own schedule (cosine over its preset's epochs, the last epoch kept):
        # LoRIS's --epochs / --patience are early-stopping budgets of another network and do not apply.
        changes = {"max_epochs": self.detector_epochs, "image_size": self.detector_image_size, "seed": self.seed}
        data = base.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return DetectorSettings.from_dict(data, where="detector settings")

    def to_dict(self) -> dict:
        out = {
            "data": str(self.data), "out": str(self.out), "folds": self.folds, "methods": list(self.methods),
            "metrics": list(self.metrics), "boxes": list(self.boxes), "epochs": self.epochs,
            "patience": self.patience, "image_size": self.image_size, "seed": self.seed, "quick": self.quick,
            "augment": self.augment, "pooling": self.pooling, "score_region": self.score_region,
            "architecture": self.architecture, "channels": None if self.channels is None else list(self.channels),
            "detector_epochs": self.detector_epochs, "detector_image_size": self.detector_image_size,
            "box_policy": self.box_policy,
            "uniform_percentile": self.uniform_percentile,
            "device": self.device, "workers": self.workers, "threads": self.threads, "command": self.command,
        }
        out["loris_settings"] = self.loris_settings("loris").to_dict()
        if any(m in self.methods for m in ("riad", "autoencoder")):
            out["baseline_scoring"] = {k: self.loris_settings("riad").to_dict()[k]
                                       for k in ("pooling", "score_region", "segment_in_box")}
        if "detected" in self.boxes:
            out["detector_settings"] = self.detector_settings().to_dict()
        return out

    def fingerprint(self) -> str:
        """Hash of what changes a fold's results (not the output folder, device, workers, threads or resume flag)."""
        d = self.to_dict()
        for k in ("out", "device", "command", "data", "workers", "threads"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --- per-fold data ----------------------------------------------------------------------------------------------


@dataclass
class SplitData:
    """The images of one split with one box source, ready for the network grid.

    Attributes:
        records: labelled records; their ``box`` is the box source's, None where the box policy left the
            image without one (detected boxes: no answer, as the server's 409).
        images: ``{image name: (H, W) float [0, 1]}`` (shared between box sources).
        truths: ``(N, S, S)`` bool ground-truth masks on the grid (all False for normal images).
        known: ``(N,)`` bool, False for distended images without a mask (left out of pixel metrics).
    """

    records: list[Record]
    images: dict
    truths: np.ndarray
    known: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label == "distended" for r in self.records], dtype=bool)

    def arrays(self) -> list[np.ndarray]:
        return [self.images[r.image] for r in self.records]

    @property
    def answered(self) -> np.ndarray:
        """``(N,)`` bool: the images that have a box, hence a result."""
        return np.array([r.box is not None for r in self.records], dtype=bool)

    def with_records(self, records: list[Record]) -> "SplitData":
        """The same images with other boxes (same order)."""
        return SplitData(records, self.images, self.truths, self.known)

    def subset(self, indices) -> "SplitData":
        """The images at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return SplitData([self.records[i] for i in indices], self.images, self.truths[indices], self.known[indices])


def _expand(answered: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
    """Values of the answered images into an array over every image (``fill`` for the unanswered ones).

    ``fill == "lowest"``: one below the lowest answered value (an unanswered image is never flagged: it
    ranks below every answered one).
    """
    if fill == "lowest":
        fill = float(np.min(values)) - 1.0 if np.size(values) else 0.0
    out = np.full((answered.shape[0], *np.shape(values)[1:]), fill, dtype=np.asarray(values).dtype)
    out[answered] = values
    return out


def _evaluable(records: list[Record]) -> list[Record]:
    return [r for r in records if r.label in ("normal", "distended") and r.box is not None]


def _split_data(records: list[Record], images: dict, size: int) -> SplitData:
    truths = np.zeros((len(records), size, size), dtype=bool)
    known = np.ones(len(records), dtype=bool)
    for i, r in enumerate(records):
        if r.label == "distended":
            if r.mask_path is None:
                known[i] = False
            else:
                truths[i] = preprocess.mask_tensor(read_mask(r.mask_path), size)[0].numpy()
    return SplitData(records, images, truths, known)


def _load_images(records: list[Record], cache: dict) -> dict:
    for r in records:
        if r.image not in cache:
            cache[r.image] = read_image(r.image_path)
    return cache


# --- metrics of one method on one test set ---------------------------------------------------------------------


def _box_shares(predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each image's box pixels that are segmented, ``(N,)`` (grid masks and box masks ``(N, S, S)``)."""
    inside = boxes.sum(axis=(1, 2))
    return (predicted & boxes).sum(axis=(1, 2)) / np.maximum(inside, 1)


def _median(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)) if values.size else None


def _method_metrics(labels, scores, threshold, maps=None, truths=None, known=None, boxes=None,
                    segment_in_box: bool = True, pixel_threshold=None,
                    answered=None) -> tuple[dict, np.ndarray | None]:
    """All metrics of one method on one fold's test set, and its calibrated segmentation (grid, or None).

    ``maps``, ``truths``, ``boxes``: ``(N, S, S)`` grid arrays; ``known``: ``(N,)``, False for distended
    images without a mask (left out of the pixel metrics); ``answered``: ``(N,)``, False for images left
    without a box (their map is empty; they are left out of the box shares).
    """
    scores = np.asarray(scores, dtype=np.float64)
    sens, spec = sensitivity_specificity(labels, scores >= threshold)
    out = {"i_auroc": image_auroc(labels, scores), "p_auroc": None, "dice": None, "dice_threshold": None,
           "dice_in_box": None, "dice_calibrated": None, "dice_calibrated_region": None,
           "normal_box_share": None, "distended_box_share": None, "sensitivity": sens, "specificity": spec,
           "threshold": float(threshold), "pixel_threshold": None}
    if maps is None:
        return out, None
    sel = np.flatnonzero(known)
    t = [truths[i] for i in sel]
    m = [maps[i] for i in sel]
    out["p_auroc"] = pixel_auroc(t, m)
    out["dice"], out["dice_threshold"] = best_dice(t, m)
    out["dice_in_box"] = best_dice(t, m, [boxes[i] for i in sel])[0]
    predicted = segment(maps, pixel_threshold, boxes if segment_in_box else None)
    out["dice_calibrated"] = dice(t, [predicted[i] for i in sel])
    out["dice_calibrated_region"] = "box" if segment_in_box else "image"
    shares = _box_shares(predicted, boxes)
    labels = np.asarray(labels, dtype=bool)
    answered = np.ones(labels.shape, bool) if answered is None else np.asarray(answered, dtype=bool)
    out["normal_box_share"] = _median(shares[~labels & answered])
    out["distended_box_share"] = _median(shares[labels & answered])
    out["pixel_threshold"] = float(pixel_threshold)
    return out, predicted


def _scoring_ablation(labels, maps: np.ndarray, grid_boxes: np.ndarray, answered=None) -> dict:
    """I-AUROC of the test maps pooled every way of :data:`SCORINGS`: ``{"mean/box": auroc, ...}``.

    ``answered``: ``(N,)`` bool, False for images without a box (they rank below every answered one).
    """
    labels = np.asarray(labels, dtype=bool)
    answered = np.ones(labels.shape, bool) if answered is None else np.asarray(answered, dtype=bool)
    tensor = torch.from_numpy(np.ascontiguousarray(maps[answered], dtype=np.float32))[:, None]
    boxes = torch.as_tensor(grid_boxes[answered])
    out = {}
    for scoring in SCORINGS:
        pooling, region = scoring.split("/")
        scores = image_scores(tensor, boxes, pooling, region).numpy() if answered.any() else np.zeros(0)
        out[scoring] = image_auroc(labels, _expand(answered, scores, "lowest"))
    return out


def _grid_boxes_mask(grid_boxes: np.ndarray, size: int) -> np.ndarray:
    return box_mask(torch.as_tensor(grid_boxes), size, size)[:, 0].numpy()


# --- baselines ----------------------------------------------------------------------------------------------------


def _baseline_outputs(method: str, split: SplitData, size: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(scores (N,), grid maps (N, S, S) or None, grid boxes (N, 4))`` of a baseline."""
    x, grid_boxes = preprocess.batch(split.arrays(), [r.box for r in split.records], size)
    grid_boxes = grid_boxes.numpy()
    if method == "box-shape":
        return np.array([box_shape_score(r.box) for r in split.records]), None, grid_boxes
    unit = preprocess.to_unit_range(x[:, 0]).numpy()
    maps = np.stack([box_intensity_map(u, tuple(b)) for u, b in zip(unit, grid_boxes)]) if len(unit) else \
        np.zeros((0, size, size), np.float32)
    scores = np.array([box_intensity_score(u, tuple(b)) for u, b in zip(unit, grid_boxes)])
    return scores, maps, grid_boxes


def _fit_baseline(split: SplitData, scores, maps, boxes, settings: LorisSettings) -> tuple[float, float | None]:
    """Image and pixel thresholds of a baseline on validation, with the core's rules (:mod:`lib.loris.calibration`)."""
    if maps is None:
        from lib.loris.calibration import fit_image_threshold

        return fit_image_threshold(scores, split.labels, settings.target_fpr)["threshold"], None
    entry = fit_calibration({"map": scores}, {"map": maps}, split.labels, split.truths, boxes, boxes, split.known,
                            settings.target_fpr, settings.normal_box_share)["map"]
    return entry["threshold"], entry["pixel_threshold"]


# --- the run ------------------------------------------------------------------------------------------------------


class _Progress:
    """One tqdm bar over every training epoch of every fold (folds x models x epochs), with ETA.

    Each running training has its own count (``key``: the fold, when folds run side by side), so that a
    training ending early gives back exactly its unused epochs.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, disable=not enabled, desc="evaluate", unit="epoch", dynamic_ncols=True,
                        file=sys.stderr)
        self.runs: dict = {}  # key -> [stage, budget, used]

    def start(self, stage: str, budget: int, key=None) -> None:
        self.runs[key] = [stage, budget, 0]
        self.bar.set_postfix_str(stage)

    def epoch(self, stats: dict, key=None) -> None:
        run = self.runs.setdefault(key, ["", 0, 0])
        if run[2] < run[1]:
            self.bar.update(1)
            run[2] += 1
        value = stats.get("value")
        self.bar.set_postfix_str(f"{run[0]} ep {stats.get('epoch')}"
                                 + (f" {stats.get('monitor')} {value:.4f}" if value is not None else ""))

    def finish(self, key=None) -> None:
        """A training ended (early stop): its unused epochs leave the ETA."""
        run = self.runs.pop(key, None)
        if run is not None and run[1] > run[2]:
            self.bar.update(run[1] - run[2])

    def skip(self, epochs: int) -> None:
        self.bar.update(epochs)

    def close(self) -> None:
        self.bar.close()


class Evaluation:
    """One evaluation run; :meth:`run` does everything and returns the ``metrics.json`` contents."""

    def __init__(self, config: EvaluationConfig, log=print) -> None:
        self.config = config
        self.log = log
        from lib.training.loop import resolve_device

        self.device = resolve_device(config.device)
        self.size = config.loris_settings("loris").image_size
        if self.device.type == "cuda":  # the same numbers from run to run, and with folds side by side
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    # -- plan
    def _network_models(self) -> list[tuple[str, str]]:
        """``(method, training box source)`` of every network model trained per fold."""
        c = self.config
        gt_like = any(b in ("gt", "detected") for b in c.boxes)
        models = []
        for method in c.methods:
            if method not in NETWORK_METHODS:
                continue
            if method == "loris":
                if gt_like:
                    models.append((method, "gt"))
                if "uniform" in c.boxes:
                    models.append((method, "uniform"))
            else:
                models.append((method, "gt" if gt_like else "uniform"))
        return models

    def _epochs_per_fold(self) -> int:
        c = self.config
        n = len(self._network_models()) * c.loris_settings("loris").max_epochs
        if "detected" in c.boxes:
            n += c.detector_settings().max_epochs
        return n

    def _fold_path(self, index: int) -> Path:
        return self.config.out / "folds" / f"fold_{index}.json"

    def _finished(self, fold: Fold) -> dict | None:
        path = self._fold_path(fold.index)
        if not (self.config.resume and path.exists()):
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable fold result ({exc}); delete it to run the fold again") from None
        if data.get("fingerprint") != self.config.fingerprint():
            raise DataError(f"{path}: this fold was run with another configuration; use another --out, "
                            "the same options, or drop --resume to run everything again")
        if sorted(data.get("test_images", [])) != sorted(r.image for r in fold.test):
            raise DataError(f"{path}: this fold had other test images (the dataset changed); use another --out")
        return data

    # -- entry point
    def run(self) -> dict:
        c = self.config
        started = time.monotonic()
        dataset = load_dataset(c.data)
        records = _evaluable(dataset.records)
        skipped = len(dataset.records) - len(records)
        labels = {r.label for r in records}
        if labels != {"normal", "distended"}:
            raise DataError(f"{c.data}: evaluation needs labelled, boxed normal and distended images; found "
                            f"{sorted(labels) or 'none'} among {len(dataset.records)} images")
        from lib.data.summary import format_summary, summarize

        data_summary = summarize(records)
        dataset_text = format_summary(data_summary)
        self.log(f"dataset {c.data} ({dataset.layout} layout)" + (f", {skipped} unlabelled or unboxed images skipped" if skipped else ""))
        self.log(dataset_text)

        if dataset.folds is not None:
            folds = [Fold(f.index, _evaluable(f.train), _evaluable(f.valid), _evaluable(f.test)) for f in dataset.folds]
            fold_source = "dataset"
            if c.folds != len(folds):
                self.log(f"using the dataset's {len(folds)} precomputed folds (--folds {c.folds} ignored)")
        else:
            folds = kfold(records, c.folds, seed=c.seed, valid_fraction=c.loris_settings("loris").valid_fraction)
            fold_source = "kfold"

        self.uniform = None
        if "uniform" in c.boxes:
            sizes = {r.image: image_size(r.image_path) for r in records}
            self.uniform = box_sources.uniform_box_size(records, c.uniform_percentile, sizes)
            self.uniform_sizes = sizes

        c.out.mkdir(parents=True, exist_ok=True)
        self.panel_fold = folds[0].index
        done: dict[int, dict] = {}
        progress = _Progress(len(folds) * self._epochs_per_fold(), c.progress)
        threads = self._fold_threads()
        try:
            for fold in folds:
                finished = self._finished(fold)
                if finished is not None:
                    self.log(f"fold {fold.index}: finished earlier, skipped (--resume)")
                    progress.skip(self._epochs_per_fold())
                    done[fold.index] = finished
            pending = [f for f in folds if f.index not in done]
            if c.workers > 1 and len(pending) > 1:
                self.log(f"{len(pending)} folds on {min(c.workers, len(pending))} workers side by side, "
                         f"{threads} torch thread(s) each")
                done.update(self._run_folds_in_workers(pending, progress, threads))
            else:
                previous = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    for fold in pending:
                        done[fold.index] = self._run_fold(fold, progress)
                        write_json(self._fold_path(fold.index), done[fold.index])
                finally:
                    torch.set_num_threads(previous)
        finally:
            progress.close()
        fold_results = [done[f.index] for f in folds]

        results = aggregate(fold_results)
        if self.uniform is not None:
            results["uniform_box"] = self.uniform.to_dict()
        config = c.to_dict()
        config.update({"fold_source": fold_source, "n_folds": len(folds), "fold_indices": [f.index for f in folds], "device": str(self.device),
                       "torch_threads": threads, "workers": c.workers, "wall_s": time.monotonic() - started,
                       "pixel_metrics_grid": self.size, "format_version": FORMAT_VERSION,
                       "fold_sizes": [f["split"] for f in fold_results]})
        results["config"] = config
        results["dataset"] = {"layout": dataset.layout, **data_summary}
        write_json(c.out / "metrics.json", results)
        write_report(c.out, results, fold_results, dataset_text)
        return results

    # -- folds side by side
    def _fold_threads(self) -> int:
        """Torch CPU threads of each fold: ``threads``, else PyTorch's default (divided among the workers)."""
        if self.config.threads is not None:
            return self.config.threads
        return max(1, torch.get_num_threads() // max(1, self.config.workers))

    def _worker_devices(self, n: int) -> list[str]:
        """The device of each worker slot: ``cuda:i mod #GPUs`` when the device is ``cuda`` (no index) and
        there are several GPUs; the evaluation's device otherwise."""
        count = torch.cuda.device_count() if self.device.type == "cuda" else 0
        if count > 1 and self.device.index is None:
            return [f"cuda:{i % count}" for i in range(n)]
        return [str(self.device)] * n

    def _run_folds_in_workers(self, folds: list[Fold], progress: _Progress, threads: int) -> dict[int, dict]:
        """Run ``folds`` in at most ``workers`` processes at a time (see the module docstring); returns
        ``{fold index: fold result}`` and writes each fold's file as it arrives."""
        context = multiprocessing.get_context("spawn")
        events = context.Queue()
        slots = min(self.config.workers, len(folds))
        devices = self._worker_devices(slots)
        shared = {"uniform": self.uniform, "uniform_sizes": getattr(self, "uniform_sizes", None),
                  "panel_fold": self.panel_fold}
        waiting, running, results, silent = list(folds), {}, {}, {}
        try:
            while waiting or running:
                for slot in range(slots):
                    if slot not in running and waiting:
                        fold = waiting.pop(0)
                        process = context.Process(target=_fold_worker, name=f"evaluate-fold-{fold.index}", daemon=True,
                                                  args=(self.config, shared, fold, devices[slot], threads, events))
                        process.start()
                        running[slot] = (process, fold)
                try:
                    kind, index, payload = events.get(timeout=1.0)
                except queues.Empty:
                    for slot, (process, fold) in list(running.items()):
                        if process.is_alive():
                            continue
                        silent[slot] = silent.get(slot, 0) + 1
                        if silent[slot] > 2:  # ended, and nothing more came from it
                            raise DataError(f"fold {fold.index}: its worker process ended (exit code "
                                            f"{process.exitcode}) without a result; run with --workers 1 to see why")
                    continue
                if kind == "start":
                    progress.start(*payload, key=index)
                elif kind == "epoch":
                    progress.epoch(payload, key=index)
                elif kind == "finish":
                    progress.finish(key=index)
                elif kind == "log":
                    self.log(payload)
                elif kind == "error":
                    raise payload
                elif kind == "done":
                    results[index] = payload
                    write_json(self._fold_path(index), payload)
                    slot = next(s for s, (_, f) in running.items() if f.index == index)
                    running.pop(slot)[0].join()
                    silent.pop(slot, None)
        finally:
            for process, _ in running.values():
                if process.is_alive():
                    process.terminate()
                process.join()
            events.close()
        return results

    # -- one fold
    def _train_network(self, method: str, train_box: str, fold: Fold, train: list[Record], valid: list[Record],
                       progress: _Progress) -> Path:
        from lib.loris.train import train as train_loris

        model_dir = self.config.out / "models" / f"fold_{fold.index}" / f"{method}_{train_box}"
        settings = self.config.loris_settings(method)
        progress.start(f"fold {fold.index} {method} ({train_box} boxes)", settings.max_epochs)
        train_loris(train, model_dir, settings, valid_records=valid, resume=self.config.resume, progress=False,
                    on_epoch=progress.epoch, device=self.device)
        progress.finish()
        return model_dir

    def _train_detector(self, fold: Fold, progress: _Progress):
        from lib.detection.infer import RecessDetector
        from lib.detection.train import train_detector

        settings = self.config.detector_settings()
        model_dir = self.config.out / "models" / f"fold_{fold.index}" / "detector"
        normal_train = [r for r in fold.train if r.is_normal]
        normal_valid = [r for r in fold.valid if r.is_normal]
        progress.start(f"fold {fold.index} detector", settings.max_epochs)
        train_detector(normal_train, model_dir, settings, valid_records=normal_valid or None,
                       resume=self.config.resume, progress=False, on_epoch=progress.epoch, device=self.device)
        progress.finish()
        return RecessDetector.load(model_dir, device=self.device)

    def _run_fold(self, fold: Fold, progress: _Progress) -> dict:
        c = self.config
        t0 = time.monotonic()
        size = self.size
        images: dict = {}
        calibration_records = fold.valid
        calibration_source = "valid"
        if not any(r.is_normal for r in fold.valid):
            # As the core's training does: without normal validation images, thresholds are fitted on the
            # normal training images plus the distended validation images (never on test images).
            calibration_source = "train normal + valid distended"
            calibration_records = [r for r in fold.train if r.is_normal] + fold.valid
            self.log(f"fold {fold.index}: no normal validation image; calibrating on normal training images "
                     "and the distended validation images")
        _load_images(calibration_records + fold.test, images)
        valid = _split_data(calibration_records, images, size)
        test = _split_data(fold.test, images, size)
        splits = {"gt": (fold.train, valid, test)}
        if "uniform" in c.boxes:
            def redraw(rs):
                return box_sources.uniform_records(rs, self.uniform, self.uniform_sizes)
            splits["uniform"] = (redraw(fold.train), valid.with_records(redraw(valid.records)),
                                 test.with_records(redraw(test.records)))

        result = {
            "index": fold.index, "fingerprint": c.fingerprint(), "format_version": FORMAT_VERSION,
            "split": {"train": len(fold.train), "train_normal": sum(r.is_normal for r in fold.train),
                      "valid": len(fold.valid), "valid_distended": sum(r.label == "distended" for r in fold.valid),
                      "test": len(fold.test), "test_distended": sum(r.label == "distended" for r in fold.test),
                      "test_patients": len({r.patient_id for r in fold.test})},
            "test_images": [r.image for r in fold.test], "calibration_source": calibration_source,
            "methods": {}, "training": {}, "models": {},
        }

        # Models: train everything first (the progress bar's ETA covers it), then evaluate.
        models = {}
        for method, train_box in self._network_models():
            train_records, valid_split, _ = splits[train_box]
            models[(method, train_box)] = self._train_network(method, train_box, fold, train_records,
                                                              valid_split.records, progress)
            result["models"][f"{method}@{train_box}"] = str(models[(method, train_box)])
        confidences = {}
        if "detected" in c.boxes:
            from lib.detection.metrics import detection_metrics

            detector = self._train_detector(fold, progress)
            result["models"]["detector"] = str(self.config.out / "models" / f"fold_{fold.index}" / "detector")
            det = detection_metrics(detector, test.records, test.arrays())
            valid_det, valid_choices = box_sources.detected_records(detector, valid.records, images, c.box_policy)
            test_det, test_choices = box_sources.detected_records(detector, test.records, images, c.box_policy)
            confidences = {r.image: ch.confidence for r, ch in zip(test.records, test_choices)}
            calibration_split, calibration_boxes = valid.with_records(valid_det), "detected"
            if not any(r.is_normal and r.box is not None for r in valid_det):
                # nothing to calibrate on: the detected-box rows keep the thresholds of the annotated boxes
                calibration_split = valid
                calibration_boxes = "annotated (the detector boxed no normal validation image)"
                self.log(f"fold {fold.index}: the detector boxed no normal validation image; detected-box rows "
                         "use thresholds calibrated on annotated boxes")
            det.update({"box_policy": c.box_policy, "calibration_boxes": calibration_boxes,
                        "missed": [r.image for r, ch in zip(test.records, test_choices) if ch.source != "detector"],
                        "missed_valid": [r.image for r, ch in zip(valid.records, valid_choices)
                                         if ch.source != "detector"],
                        "unanswered": [r.image for r in test_det if r.box is None]})
            result["detector"] = det
            splits["detected"] = (None, calibration_split, test.with_records(test_det))
            del detector

        panels = fold.index == self.panel_fold  # panels show the first fold's test images
        for box in c.boxes:
            _, valid_split, test_split = splits[box]
            for (method, train_box), model_dir in models.items():
                if method == "loris" and train_box != ("uniform" if box == "uniform" else "gt"):
                    continue
                recalibrate = box != train_box
                self._evaluate_network(method, box, model_dir, valid_split, test_split, recalibrate, result, panels)
            for method in c.methods:
                if method in BASELINES:
                    self._evaluate_baseline(method, box, valid_split, test_split, result, panels)
        result["images"] = self._image_records(splits, confidences, result["methods"])
        result["seconds"] = time.monotonic() - t0
        return result

    @staticmethod
    def _image_records(splits: dict, confidences: dict, methods: dict) -> list[dict]:
        """One entry per test image: label, patient, each box used with its source, each method's score."""
        sources = {"gt": "annotated", "uniform": "uniform (re-drawn annotated)"}
        test = splits["gt"][2]
        out = []
        for i, r in enumerate(test.records):
            boxes = {}
            for box, (_, _, split) in splits.items():
                chosen = split.records[i].box
                entry = {"box": None if chosen is None else [int(v) for v in chosen]}
                if box == "detected":
                    confidence = confidences.get(r.image)
                    entry.update(source="detector" if confidence is not None else
                                 ("none (no answer)" if chosen is None else "whole_image"), confidence=confidence)
                else:
                    entry["source"] = sources[box]
                boxes[box] = entry
            out.append({
                "image": r.image, "patient_id": r.patient_id, "label": r.label, "has_mask": bool(test.known[i]),
                "boxes": boxes,
                "scores": {key: m["scores"][m["images"].index(r.image)] for key, m in methods.items()
                           if r.image in m["images"]},
            })
        return out

    def _evaluate_network(self, method, box, model_dir, valid: SplitData, test: SplitData, recalibrate: bool,
                          result: dict, panels: bool) -> None:
        from lib.loris.calibration import calibrate
        from lib.loris.predictor import LorisPredictor

        c = self.config
        predictor = LorisPredictor.load(model_dir, device=self.device)
        if recalibrate:
            calibration_set = valid.subset(np.flatnonzero(valid.answered))
            predictor.calibration = calibrate(predictor, calibration_set.records, calibration_set.arrays(), c.metrics)
        settings = predictor.settings
        size = settings.image_size
        answered = test.answered
        run = test.subset(np.flatnonzero(answered))  # the images with a box: the network sees those
        scores = {m: [] for m in c.metrics}
        maps = {m: [] for m in c.metrics}
        grid_boxes, xs, recons = [], [], []
        panel_idx = [j for j in self._panel_indices(test) if answered[j]] if panels else []
        position = {j: k for k, j in enumerate(np.flatnonzero(answered))}  # test index -> index in run
        wanted_run = [position[j] for j in panel_idx]
        bs = 16
        for start, out in predictor.batches(run.arrays(), [r.box for r in run.records], c.metrics, bs):
            for m in c.metrics:
                scores[m].append(out.scores[m].float().cpu().numpy())
                maps[m].append(out.maps[m][:, 0].float().cpu().numpy())
            grid_boxes.append(out.grid_boxes.cpu().numpy())
            wanted = [j - start for j in wanted_run if start <= j < start + bs]
            if wanted:
                xs.append(out.x[wanted].cpu())
                recons.append(out.reconstruction[wanted].cpu())
        n = len(run.records)
        grid = _expand(answered, np.concatenate(grid_boxes) if n else np.zeros((0, 4), np.int64), 0)
        boxes = _grid_boxes_mask(grid, size)
        labels = test.labels
        for m in c.metrics:
            thr, pthr = predictor.thresholds(m)
            answered_scores = np.concatenate(scores[m]) if n else np.zeros(0)
            s = _expand(answered, answered_scores, "lowest")
            mp = _expand(answered, np.concatenate(maps[m]) if n else np.zeros((0, size, size), np.float32), 0.0)
            entry, predicted = _method_metrics(labels, s, thr, mp, test.truths, test.known, boxes,
                                               settings.segment_in_box, pthr, answered)
            key = method_key(method, m, box)
            entry.update({"method": method, "metric": m, "box": box, "pooling": settings.pooling,
                          "score_region": settings.score_region, "scores": s.tolist(), "labels": labels.tolist(),
                          "images": [r.image for r in test.records], "answered": int(answered.sum()),
                          "scoring": _scoring_ablation(labels, mp, grid, answered),
                          "calibration": {k: v for k, v in predictor.calibration[m].items()
                                          if k in ("image_rule", "pixel_rule", "valid_auroc", "valid_dice",
                                                   "valid_normal_box_share")},
                          "recalibrated": recalibrate})
            result["methods"][key] = entry
            if panel_idx:
                x = torch.cat(xs)
                recon = torch.cat(recons)
                masked = self._masked_input(method, x, torch.as_tensor(grid[panel_idx]), settings)
                rows = [PanelRow(test.records[j].image, test.records[j].label,
                                 preprocess.to_unit_range(x[k, 0]).numpy(), tuple(grid[j]),
                                 masked[k], np.clip(preprocess.to_unit_range(recon[k, 0]).numpy(), 0, 1),
                                 mp[j], predicted[j], test.truths[j], float(s[j]), bool(s[j] >= thr))
                        for k, j in enumerate(panel_idx)]
                panel_figure(c.out / "panels" / f"{safe_name(key)}.png",
                             f"{key}, fold {result['index']} test images (network grid {size} px)", rows,
                             self._aspect(test, panel_idx))
        result["training"][f"{method}@{box}"] = {"model_dir": str(model_dir), "recalibrated": recalibrate}

    @staticmethod
    def _masked_input(method: str, x: torch.Tensor, grid_boxes: torch.Tensor, settings: LorisSettings) -> list:
        """What the network sees, in [0, 1] (RIAD: the first of its masks at its largest cell size)."""
        if method == "loris":
            masked = fill_box(x, grid_boxes)
        elif method == "riad":
            cell = max(settings.riad_cells())
            hide = riad_masks(x.shape[-1], cell, settings.riad_masks, torch.Generator().manual_seed(settings.seed))[0]
            masked = x * (~hide)
        else:
            masked = x
        return [np.clip(preprocess.to_unit_range(m[0]).numpy(), 0, 1) for m in masked]

    @staticmethod
    def _aspect(split: SplitData, indices: list[int]) -> float:
        """``H / W`` of the first panel image: the grid is square, the anatomy is not."""
        if not indices:
            return 1.0
        h, w = split.images[split.records[indices[0]].image].shape
        return h / w

    def _panel_indices(self, test: SplitData) -> list[int]:
        n = self.config.panel_images
        normal = [i for i, r in enumerate(test.records) if r.label == "normal"][:n]
        distended = [i for i, r in enumerate(test.records) if r.label == "distended" and test.known[i]][:n]
        return normal + distended

    def _evaluate_baseline(self, method, box, valid: SplitData, test: SplitData, result: dict, panels: bool) -> None:
        size = self.size
        settings = self.config.loris_settings("loris")
        valid = valid.subset(np.flatnonzero(valid.answered))
        v_scores, v_maps, v_grid = _baseline_outputs(method, valid, size)
        thr, pthr = _fit_baseline(valid, v_scores, v_maps, _grid_boxes_mask(v_grid, size), settings)
        answered = test.answered
        s, mp, grid = _baseline_outputs(method, test.subset(np.flatnonzero(answered)), size)
        s, grid = _expand(answered, s, "lowest"), _expand(answered, grid, 0)
        mp = None if mp is None else _expand(answered, mp, 0.0)
        boxes = _grid_boxes_mask(grid, size)
        labels = test.labels
        entry, predicted = _method_metrics(labels, s, thr, mp, test.truths, test.known, boxes, True, pthr, answered)
        key = method_key(method, None, box)
        entry.update({"method": method, "metric": None, "box": box, "scores": s.tolist(), "labels": labels.tolist(),
                      "images": [r.image for r in test.records], "answered": int(answered.sum())})
        result["methods"][key] = entry
        if panels:
            idx = [j for j in self._panel_indices(test) if answered[j]]
            x, _ = preprocess.batch([test.images[test.records[j].image] for j in idx],
                                    [test.records[j].box for j in idx], size)
            rows = [PanelRow(test.records[j].image, test.records[j].label, preprocess.to_unit_range(x[k, 0]).numpy(),
                             tuple(grid[j]), None, None, None if mp is None else mp[j],
                             None if predicted is None else predicted[j], test.truths[j], float(s[j]), bool(s[j] >= thr))
                    for k, j in enumerate(idx)]
            panel_figure(self.config.out / "panels" / f"{safe_name(key)}.png",
                         f"{key}, fold {result['index']} test images (network grid {size} px)", rows,
                         self._aspect(test, idx))


class _ProgressToParent:
    """A worker's stand-in for :class:`_Progress`: sends each call to the parent's bar, keyed by fold."""

    def __init__(self, events, key: int) -> None:
        self.events, self.key = events, key

    def start(self, stage: str, budget: int) -> None:
        self.events.put(("start", self.key, (stage, budget)))

    def epoch(self, stats: dict) -> None:
        self.events.put(("epoch", self.key, {k: stats.get(k) for k in ("epoch", "monitor", "value")}))

    def finish(self) -> None:
        self.events.put(("finish", self.key, None))


def _fold_worker(config: EvaluationConfig, shared: dict, fold: Fold, device: str, threads: int, events) -> None:
    """One fold in a worker process: the serial run's :meth:`Evaluation._run_fold` on ``threads`` torch threads
    and ``device``; its result (or error) and its progress go to ``events``."""
    try:
        torch.set_num_threads(threads)
        evaluation = Evaluation(dataclasses.replace(config, device=device),
                                log=lambda message: events.put(("log", fold.index, message)))
        evaluation.uniform, evaluation.uniform_sizes = shared["uniform"], shared["uniform_sizes"]
        evaluation.panel_fold = shared["panel_fold"]
        events.put(("done", fold.index, evaluation._run_fold(fold, _ProgressToParent(events, fold.index))))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        if isinstance(exc, LorisError):
            error = exc
        else:
            error = RuntimeError(f"fold {fold.index} failed in its worker process: {type(exc).__name__}: {exc}\n"
                                 + traceback.format_exc())
        events.put(("error", fold.index, error))


def command_line() -> str:
    """The current command line, quoted, for the report."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("lib", "__main__.py")):
        argv = ["-m", "lib", *argv[1:]]
    return " ".join(shlex.quote(a) for a in ["python", *argv])


def run_evaluation(config: EvaluationConfig, log=print) -> dict:
    """Run the whole protocol (see the module docstring); returns the ``metrics.json`` contents."""
    return Evaluation(config, log).run()
