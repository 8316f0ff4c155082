"""Re-calibrate the LoRIS models of a finished ``evaluate`` run under several pixel-threshold rules.

For each fold: the fold's LoRIS model (annotated boxes) is calibrated on the fold's validation
images with the cap on segmented normal box pixels at several values (1.0 = no cap: the Dice rule
alone), then segments the fold's test images; prints, per rule and metric, the calibrated Dice
over whole test images and the median share of the box segmented on normal / distended test images.

    python docs/experiments/calibration_rules.py EVAL_DIR DATA_DIR

EVAL_DIR: an ``evaluate --box gt --methods loris`` output (its models and fold files); DATA_DIR: its data.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lib.data.dataset import load_dataset  # noqa: E402
from lib.data.imageio import read_image, read_mask  # noqa: E402
from lib.data.splits import kfold  # noqa: E402
from lib.loris import preprocess  # noqa: E402
from lib.loris.calibration import calibrate  # noqa: E402
from lib.loris.masking import box_mask  # noqa: E402
from lib.loris.postprocess import segment  # noqa: E402
from lib.loris.predictor import LorisPredictor  # noqa: E402

CAPS = (1.0, 0.10, 0.05, 0.02)
METRICS = ("msgmsd", "dd")


def main(eval_dir: Path, data_dir: Path) -> None:
    torch.set_num_threads(1)
    config = json.loads((eval_dir / "metrics.json").read_text())["config"]
    records = [r for r in load_dataset(data_dir).records if r.label in ("normal", "distended") and r.box is not None]
    folds = kfold(records, config["n_folds"], seed=config["seed"],
                  valid_fraction=config["loris_settings"]["valid_fraction"])
    rows = {(cap, m): {"dice": [], "normal": [], "distended": []} for cap in CAPS for m in METRICS}
    for fold in folds:
        predictor = LorisPredictor.load(eval_dir / "models" / f"fold_{fold.index}" / "loris_gt")
        size = predictor.settings.image_size
        valid_images = [read_image(r.image_path) for r in fold.valid]
        test_images = [read_image(r.image_path) for r in fold.test]
        maps, boxes = {m: [] for m in METRICS}, []
        for _, out in predictor.batches(test_images, [r.box for r in fold.test], METRICS):
            for m in METRICS:
                maps[m].append(out.maps[m][:, 0].numpy())
            boxes.append(box_mask(out.grid_boxes, size, size)[:, 0].numpy())
        boxes = np.concatenate(boxes)
        truths = np.stack([preprocess.mask_tensor(read_mask(r.mask_path), size)[0].numpy() if r.mask_path
                           else np.zeros((size, size), bool) for r in fold.test])
        distended = np.array([r.label == "distended" for r in fold.test])
        for cap in CAPS:
            predictor.settings = predictor.settings.replace(normal_box_share=cap)
            calibration = calibrate(predictor, fold.valid, valid_images, METRICS)
            for m in METRICS:
                predicted = segment(np.concatenate(maps[m]), calibration[m]["pixel_threshold"], boxes)
                inter, total = (predicted & truths).sum(), predicted.sum() + truths.sum()
                share = (predicted & boxes).sum(axis=(1, 2)) / boxes.sum(axis=(1, 2))
                row = rows[(cap, m)]
                row["dice"].append(2 * inter / total if total else 1.0)
                row["normal"].append(float(np.median(share[~distended])))
                row["distended"].append(float(np.median(share[distended])))
    print("| cap on normal box pixels | metric | Dice (calibrated, whole images) | box share normal | box share distended |")
    print("|---|---|---|---|---|")
    for (cap, m), row in rows.items():
        cells = [f"{np.mean(row[k]):.3f} ± {np.std(row[k]):.3f}" for k in ("dice", "normal", "distended")]
        print(f"| {'none (Dice alone)' if cap == 1.0 else f'{cap:.0%}'} | {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
