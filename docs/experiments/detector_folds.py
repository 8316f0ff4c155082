"""The recess detector alone, cross-validated as ``python -m lib evaluate --box detected`` trains it.

For each fold of ``lib.data.splits.kfold(records, folds, seed=0, valid_fraction=0.2)``: train on the fold's
normal training images, validate (and calibrate the confidence floor) on its normal validation images,
measure on all its test images (normal and distended) with ``lib.detection.metrics.detection_metrics``.
Also measures the "nothing found" answer: the share of test recesses reported (confidence at least the
calibrated floor) and the share of recess-free frames made from the test images
(``lib.detection.negatives``) answered "nothing found".

usage (from the repository root):
  .venv/bin/python -m lib sample-data --out /tmp/det30 --patients 30 --seed 11
  PYTHONPATH=. .venv/bin/python docs/experiments/detector_folds.py /tmp/det30 /tmp/det_runs [--full]
      [--folds 0,1,2,3,4] [--set key=JSON ...] [--threads 1]

``--set`` overrides ``DetectorSettings`` fields (e.g. ``--set seed=1 max_epochs=40``); the base is the
quick preset, or the default one with ``--full``. Prints one JSON line per fold, then the mean and the
standard deviation over folds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lib.data.dataset import load_dataset
from lib.data.imageio import read_image
from lib.data.splits import kfold
from lib.detection.calibrate import negative_frames
from lib.detection.infer import RecessDetector
from lib.detection.metrics import detection_metrics
from lib.detection.settings import DetectorSettings
from lib.detection.train import train_detector

KEYS = ("precision50", "map50", "map75", "mean_iou")


def _share(values, floor, above: bool) -> float:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    return float(((values >= floor) if above else (values < floor)).mean()) if values.size else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON")
    parser.add_argument("--full", action="store_true", help="default preset instead of the quick one")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = DetectorSettings(**overrides) if args.full else DetectorSettings.quick(**overrides)
    records = load_dataset(args.data).records
    folds = kfold(records, args.n_folds, seed=0, valid_fraction=0.2)
    rows = []
    for k in (int(x) for x in args.folds.split(",")):
        fold = folds[k]
        started = time.time()
        summary = train_detector([r for r in fold.train if r.is_normal], Path(args.out) / f"fold_{k}", settings,
                                 valid_records=[r for r in fold.valid if r.is_normal], progress=False)
        seconds = time.time() - started
        detector = RecessDetector.load(Path(args.out) / f"fold_{k}")
        images = [read_image(r.image_path) for r in fold.test]
        row = {"fold": k, "train_seconds": round(seconds, 1), "epochs": summary["epochs_run"]}
        row.update({k2: v for k2, v in detection_metrics(detector, fold.test, images).items()})
        for label in ("normal", "distended"):
            pairs = [(r, im) for r, im in zip(fold.test, images) if r.label == label]
            if pairs:
                part = detection_metrics(detector, [r for r, _ in pairs], [im for _, im in pairs])
                row.update({f"{label}_{key}": part[key] for key in ("map50", "map75", "mean_iou")})
        floor = detector.score_threshold
        confidences = detector.confidences(images)
        row["floor"] = floor
        for label in ("normal", "distended"):
            values = [c for c, r in zip(confidences, fold.test) if r.label == label]
            row[f"found_{label}"] = _share(values, floor, True)
        for kind, frames in negative_frames(images, [r.box for r in fold.test], seed=1000 + k).items():
            row[f"nothing_found_{kind}"] = _share(detector.confidences(frames), floor, False)
        rows.append(row)
        print(json.dumps({key: round(v, 3) if isinstance(v, float) else v for key, v in row.items()}), flush=True)
    keys = [key for key in rows[0] if key != "fold" and isinstance(rows[0][key], (int, float))]
    print("MEAN", json.dumps({key: round(float(np.nanmean([r.get(key, np.nan) for r in rows])), 3) for key in keys}))
    print("STD ", json.dumps({key: round(float(np.nanstd([r.get(key, np.nan) for r in rows])), 3) for key in KEYS}))
    print("settings", json.dumps(settings.to_dict()))


if __name__ == "__main__":
    main()
