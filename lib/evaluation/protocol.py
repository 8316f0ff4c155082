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
   (:meth:`lib.loris.infer.LorisPredictor.network_outputs`).
4. ``--box detected``: a recess detector is trained on the fold's normal training
   images (:func:`lib.detection.train.train_detector`); its boxes replace the
   annotated ones on the validation (for calibration) and test images; its
   precision/mAP on the test images are recorded.
5. The baselines (``box-intensity``, ``box-shape``) are calibrated and tested
   on the same images with the same boxes.

Pixel metrics are computed on the network grid (``S x S``, where the maps are
made and calibrated, as in the paper's reference code at 256 px); ground-truth
masks are resized to it (a grid pixel is anomalous when at least half covered).
Distended test images without a mask are left out of the pixel metrics only.

Each finished fold is written atomically to ``OUT/folds/fold_<k>.json``; with
``resume`` a finished fold of the same configuration is not run again (and an
interrupted model training continues from its last epoch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
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
from lib.errors import DataError
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
from lib.evaluation.report import PanelRow, panel_figure, safe_name, write_report
from lib.evaluation.results import aggregate, method_key
from lib.loris import preprocess
from lib.loris.anomaly import METRICS
from lib.loris.calibration import best_dice_threshold, fit_image_threshold
from lib.loris.masking import box_mask, fill_box, riad_masks
from lib.loris.postprocess import segment
from lib.loris.settings import LorisSettings

FORMAT_VERSION = 1


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
        detector_epochs: detector training length (None = the detector preset's own: 160, ``quick`` 80).
        detector_image_size: the detector's input side (None = the detector preset's own, independent
            of ``image_size``: the box is found on its grid and mapped back to the image's pixels).
        uniform_percentile: percentile of annotated heights for ``--box uniform``.
        resume: skip folds already finished with this configuration.
        device: ``auto``, ``cpu`` or ``cuda``.
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
    detector_epochs: int | None = None
    detector_image_size: int | None = None
    uniform_percentile: float = 90.0
    resume: bool = False
    device: str = "auto"
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
        """The settings of a network method (``mode`` = loris | riad | autoencoder): same network and budget."""
        base = LorisSettings.quick() if self.quick else LorisSettings()
        metric = self.metrics[0] if self.metrics else base.metric
        return base.replace(mode=mode, max_epochs=self.epochs, patience=self.patience, image_size=self.image_size,
                            seed=self.seed, metric=metric)

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
            "detector_epochs": self.detector_epochs, "detector_image_size": self.detector_image_size,
            "uniform_percentile": self.uniform_percentile,
            "device": self.device, "command": self.command,
        }
        out["loris_settings"] = self.loris_settings("loris").to_dict()
        if "detected" in self.boxes:
            out["detector_settings"] = self.detector_settings().to_dict()
        return out

    def fingerprint(self) -> str:
        """Hash of what changes a fold's results (not the output folder, device or resume flag)."""
        d = self.to_dict()
        for k in ("out", "device", "command", "data"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --- per-fold data ----------------------------------------------------------------------------------------------


@dataclass
class SplitData:
    """The images of one split with one box source, ready for the network grid.

    Attributes:
        records: labelled, boxed records (their ``box`` is the box source's).
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

    def with_records(self, records: list[Record]) -> "SplitData":
        """The same images with other boxes (same order)."""
        return SplitData(records, self.images, self.truths, self.known)


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


def _method_metrics(labels, scores, threshold, maps=None, truths=None, known=None, regions=None,
                    pixel_threshold=None) -> dict:
    """All metrics of one method on one fold's test set (grid maps ``(N, S, S)`` when it has maps)."""
    scores = np.asarray(scores, dtype=np.float64)
    sens, spec = sensitivity_specificity(labels, scores >= threshold)
    out = {"i_auroc": image_auroc(labels, scores), "p_auroc": None, "dice": None, "dice_threshold": None,
           "dice_calibrated": None, "sensitivity": sens, "specificity": spec,
           "threshold": float(threshold), "pixel_threshold": None}
    if maps is not None:
        sel = np.flatnonzero(known)
        t = [truths[i] for i in sel]
        m = [maps[i] for i in sel]
        out["p_auroc"] = pixel_auroc(t, m)
        out["dice"], out["dice_threshold"] = best_dice(t, m, None if regions is None else [regions[i] for i in sel])
        predicted = segment(maps, pixel_threshold, regions)
        out["dice_calibrated"] = dice(t, [predicted[i] for i in sel])
        out["pixel_threshold"] = float(pixel_threshold)
    return out


def _grid_regions(grid_boxes: np.ndarray, size: int, in_box: bool) -> np.ndarray | None:
    if not in_box:
        return None
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


def _fit_baseline(labels, scores, maps, truths, known, regions, target_fpr: float) -> tuple[float, float | None]:
    """Image and pixel thresholds of a baseline on validation, with the core's rules (see :mod:`lib.loris.calibration`)."""
    threshold = fit_image_threshold(scores, labels, target_fpr)["threshold"]
    if maps is None:
        return threshold, None
    sel = known
    if (labels & sel).any() and truths[labels & sel].any():
        values = maps[sel][regions[sel]]
        truth = truths[sel][regions[sel]]
        outside = int((truths[sel] & ~regions[sel]).sum())
        return threshold, best_dice_threshold(values, truth, outside)[0]
    normal = ~labels
    return threshold, float(np.quantile(maps[normal][regions[normal]], 1.0 - target_fpr))


# --- the run ------------------------------------------------------------------------------------------------------


class _Progress:
    """One tqdm bar over every training epoch of every fold (folds x models x epochs), with ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, disable=not enabled, desc="evaluate", unit="epoch", dynamic_ncols=True,
                        file=sys.stderr)
        self.stage = ""

    def start(self, stage: str, budget: int) -> None:
        self.stage, self.budget, self.used = stage, budget, 0
        self.bar.set_postfix_str(stage)

    def epoch(self, stats: dict) -> None:
        if self.used < self.budget:
            self.bar.update(1)
            self.used += 1
        loss = stats.get("valid_loss", stats.get("loss"))
        self.bar.set_postfix_str(f"{self.stage} ep {stats.get('epoch')}" + (f" loss {loss:.4f}" if loss is not None else ""))

    def finish(self) -> None:
        """A training ended (early stop): its unused epochs leave the ETA."""
        if self.budget > self.used:
            self.bar.update(self.budget - self.used)
        self.used = self.budget

    def skip(self, epochs: int) -> None:
        self.bar.update(epochs)

    def close(self) -> None:
        self.bar.close()


class Evaluation:
    """One evaluation run; :meth:`run` does everything and returns the ``metrics.json`` contents."""

    def __init__(self, config: EvaluationConfig, log=print) -> None:
        self.config = config
        self.log = log
        from lib.loris.infer import resolve_device

        self.device = resolve_device(config.device)
        self.size = config.loris_settings("loris").image_size

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
        fold_results: list[dict] = []
        progress = _Progress(len(folds) * self._epochs_per_fold(), c.progress)
        try:
            for fold in folds:
                done = self._finished(fold)
                if done is not None:
                    self.log(f"fold {fold.index}: finished earlier, skipped (--resume)")
                    progress.skip(self._epochs_per_fold())
                else:
                    done = self._run_fold(fold, progress)
                    write_json(self._fold_path(fold.index), done)
                fold_results.append(done)
        finally:
            progress.close()

        results = aggregate(fold_results)
        if self.uniform is not None:
            results["uniform_box"] = self.uniform.to_dict()
        config = c.to_dict()
        config.update({"fold_source": fold_source, "n_folds": len(folds), "fold_indices": [f.index for f in folds], "device": str(self.device),
                       "torch_threads": torch.get_num_threads(), "wall_s": time.monotonic() - started,
                       "pixel_metrics_grid": self.size, "format_version": FORMAT_VERSION,
                       "fold_sizes": [f["split"] for f in fold_results]})
        results["config"] = config
        results["dataset"] = {"layout": dataset.layout, **data_summary}
        write_json(c.out / "metrics.json", results)
        write_report(c.out, results, fold_results, dataset_text)
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
            "methods": {}, "training": {},
        }

        # Models: train everything first (the progress bar's ETA covers it), then evaluate.
        models = {}
        for method, train_box in self._network_models():
            train_records, valid_split, _ = splits[train_box]
            models[(method, train_box)] = self._train_network(method, train_box, fold, train_records,
                                                              valid_split.records, progress)
        if "detected" in c.boxes:
            from lib.detection.metrics import detection_metrics

            detector = self._train_detector(fold, progress)
            det = detection_metrics(detector, test.records, test.arrays())
            valid_det, missed_valid = box_sources.detected_records(detector, valid.records, images)
            test_det, missed_test = box_sources.detected_records(detector, test.records, images)
            det.update({"missed": missed_test, "missed_valid": missed_valid, "calibration_boxes": "detected"})
            result["detector"] = det
            splits["detected"] = (None, valid.with_records(valid_det), test.with_records(test_det))
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
        result["seconds"] = time.monotonic() - t0
        return result

    def _evaluate_network(self, method, box, model_dir, valid: SplitData, test: SplitData, recalibrate: bool,
                          result: dict, panels: bool) -> None:
        from lib.loris.infer import LorisPredictor
        from lib.loris.train import calibrate

        c = self.config
        predictor = LorisPredictor.load(model_dir, device=self.device)
        if recalibrate:
            predictor.calibration = calibrate(predictor, valid.records, valid.arrays(), c.metrics)
        settings = predictor.settings
        size = settings.image_size
        scores = {m: [] for m in c.metrics}
        maps = {m: [] for m in c.metrics}
        grid_boxes, xs, recons = [], [], []
        panel_idx = self._panel_indices(test) if panels else []
        arrays = test.arrays()
        bs = 16
        for i in range(0, len(arrays), bs):
            out = predictor.network_outputs(arrays[i:i + bs], [r.box for r in test.records[i:i + bs]], c.metrics)
            for m in c.metrics:
                scores[m].append(out.scores[m].float().cpu().numpy())
                maps[m].append(out.maps[m][:, 0].float().cpu().numpy())
            grid_boxes.append(out.grid_boxes.cpu().numpy())
            wanted = [j - i for j in panel_idx if i <= j < i + bs]
            if wanted:
                xs.append(out.x[wanted].cpu())
                recons.append(out.reconstruction[wanted].cpu())
        grid = np.concatenate(grid_boxes)
        regions = _grid_regions(grid, size, settings.segment_in_box)
        labels = test.labels
        for m in c.metrics:
            thr, pthr = predictor.thresholds(m)
            s = np.concatenate(scores[m])
            mp = np.concatenate(maps[m])
            entry = _method_metrics(labels, s, thr, mp, test.truths, test.known, regions, pthr)
            key = method_key(method, m, box)
            entry.update({"method": method, "metric": m, "box": box, "scores": s.tolist(), "labels": labels.tolist(),
                          "images": [r.image for r in test.records],
                          "calibration": {k: v for k, v in predictor.calibration[m].items()
                                          if k in ("image_rule", "pixel_rule", "valid_auroc", "valid_dice")},
                          "recalibrated": recalibrate})
            result["methods"][key] = entry
            if panel_idx:
                x = torch.cat(xs)
                recon = torch.cat(recons)
                masked = self._masked_input(method, x, torch.as_tensor(grid[panel_idx]), settings)
                pred = segment(mp[panel_idx], pthr, None if regions is None else regions[panel_idx])
                rows = [PanelRow(test.records[j].image, test.records[j].label,
                                 preprocess.to_unit_range(x[k, 0]).numpy(), tuple(grid[j]),
                                 masked[k], np.clip(preprocess.to_unit_range(recon[k, 0]).numpy(), 0, 1),
                                 mp[j], pred[k], test.truths[j], float(s[j]), bool(s[j] >= thr))
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
        target_fpr = self.config.loris_settings("loris").target_fpr
        v_scores, v_maps, v_grid = _baseline_outputs(method, valid, size)
        v_regions = _grid_regions(v_grid, size, True)
        thr, pthr = _fit_baseline(valid.labels, v_scores, v_maps, valid.truths, valid.known, v_regions, target_fpr)
        s, mp, grid = _baseline_outputs(method, test, size)
        regions = _grid_regions(grid, size, True)
        labels = test.labels
        entry = _method_metrics(labels, s, thr, mp, test.truths, test.known, regions, pthr)
        key = method_key(method, None, box)
        entry.update({"method": method, "metric": None, "box": box, "scores": s.tolist(), "labels": labels.tolist(),
                      "images": [r.image for r in test.records]})
        result["methods"][key] = entry
        if panels:
            idx = self._panel_indices(test)
            x, _ = preprocess.batch([test.images[test.records[j].image] for j in idx],
                                    [test.records[j].box for j in idx], size)
            pred = segment(mp[idx], pthr, regions[idx]) if mp is not None else [None] * len(idx)
            rows = [PanelRow(test.records[j].image, test.records[j].label, preprocess.to_unit_range(x[k, 0]).numpy(),
                             tuple(grid[j]), None, None, None if mp is None else mp[j], pred[k], test.truths[j],
                             float(s[j]), bool(s[j] >= thr))
                    for k, j in enumerate(idx)]
            panel_figure(self.config.out / "panels" / f"{safe_name(key)}.png",
                         f"{key}, fold {result['index']} test images (network grid {size} px)", rows,
                         self._aspect(test, idx))


def command_line() -> str:
    """The current command line, quoted, for the report."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("lib", "__main__.py")):
        argv = ["-m", "lib", *argv[1:]]
    return " ".join(shlex.quote(a) for a in ["python", *argv])


def run_evaluation(config: EvaluationConfig, log=print) -> dict:
    """Run the whole protocol (see the module docstring); returns the ``metrics.json`` contents."""
    return Evaluation(config, log).run()
