"""Train a LoRIS model on the normal images of a data set.

DIR is a flat-layout folder (images/, labels.csv, masks/), the paper's
reference layout, or a MONAI Label datastore. Normal images with a box are the
training data; images are split by patient into train and validation
(--valid-fraction). Distended images never enter the loss: those in
validation calibrate the thresholds (pixel threshold maximizing Dice, image
threshold maximizing Youden's J; without them, both from --target-fpr on
normal images). The best checkpoint on the validation loss is saved, with
its settings and calibration, in MODEL_DIR/model.pt (model.json is a readable
copy); MODEL_DIR/checkpoint_last.pt allows --resume.

Defaults are the paper's (the reference U-Net, 256 px, Adam 1e-4, batch 4,
1000 epochs, patience 50, no augmentation): a GPU job. --quick is a CPU demo
preset (128 px, the same U-Net design with channels 8-16-32-64-128, Adam 2e-3,
100 epochs, patience 25).

Several GPUs (or CPU processes): launch with torchrun, one process per GPU;
each trains on its share of the images with --batch-size images per step
(effective batch: batch size x processes), gradients averaged (PyTorch DDP),
batch norms synchronized; process 0 writes the model. --precision bf16/fp16
runs the network's forward in mixed precision (GPUs).

Examples:
  python -m lib sample-data --out data/sample
  python -m lib train --data data/sample --out runs/loris --quick
  python -m lib train --data data/sample --out runs/loris --epochs 200 --patience 20 --device cuda
  python -m lib train --data data/sample --out runs/loris --quick --resume
  torchrun --nproc_per_node 4 -m lib train --data data/sample --out runs/loris --batch-size 1 --precision bf16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lib.loris.settings import ARCHITECTURES, METRICS, MODES, NETWORKS, POOLINGS, SCORE_REGIONS, LorisSettings
from lib.training.precision import PRECISIONS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="data set folder (flat, reference or datastore)")
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR", help="model directory to write")
    parser.add_argument("--quick", action="store_true",
                        help="CPU demo preset: 128 px, small reference U-Net (8-16-32-64-128), Adam 2e-3, "
                             "100 epochs, patience 25")
    parser.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (default 1000; quick 100)")
    parser.add_argument("--patience", type=int, metavar="P", help="early-stopping patience in epochs (default 50; quick 25)")
    parser.add_argument("--batch-size", type=int, metavar="B", help="mini-batch size (default 4)")
    parser.add_argument("--lr", type=float, metavar="LR", help="Adam learning rate (default 1e-4; quick 2e-3)")
    parser.add_argument("--image-size", type=int, metavar="S", help="network grid side in pixels (default 256; quick 128)")
    parser.add_argument("--metric", choices=METRICS, help="default anomaly-map metric of the model (default msgmsd)")
    parser.add_argument("--architecture", choices=ARCHITECTURES,
                        help="network: reference (the paper's U-Net, default; 64-128-256-512-512) or unet (a small "
                             "MONAI UNet, 16-32-64-128-128); --channels changes the channels")
    parser.add_argument("--channels", type=int, nargs="+", metavar="C",
                        help="network channels per level, the first level first (default: the preset's)")
    parser.add_argument("--pooling", choices=POOLINGS, help="image score pooling (default mean, paper)")
    parser.add_argument("--score-region", choices=SCORE_REGIONS,
                        help="where the score pools the map: box (default) or the whole image")
    parser.add_argument("--mode", choices=MODES, help="network input: loris (box mask, default), autoencoder, riad")
    parser.add_argument("--valid-fraction", type=float, metavar="F", help="share of patients for validation (default 0.2)")
    parser.add_argument("--target-fpr", type=float, metavar="F", help="calibration FPR without distended validation images (default 0.05)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="random box jitter and intensity gain while training (off by default, as in the paper)")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint_last.pt")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (default auto; under torchrun each process takes the GPU of "
                             "its local rank)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="the network's forward while training: float32 (default), bf16 or fp16 autocast (GPU)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="stop after this many minutes of training (the epoch under way is dropped; the best "
                             "epoch so far is calibrated and saved)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _architecture(args: argparse.Namespace) -> dict:
    """The network fields of ``--architecture`` (:data:`~lib.loris.settings.NETWORKS`) and ``--channels`` (strides
    of 2 between its levels)."""
    out = dict(NETWORKS[args.architecture]) if args.architecture is not None else {}
    if args.channels:
        out.update(channels=tuple(args.channels), strides=(2,) * (len(args.channels) - 1))
    return out


def settings_from_args(args: argparse.Namespace) -> LorisSettings:
    """The settings of a ``train`` command line: preset, then the flags given."""
    base = LorisSettings.quick() if args.quick else LorisSettings()
    return base.replace(
        max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, learning_rate=args.lr,
        image_size=args.image_size, metric=args.metric, pooling=args.pooling, score_region=args.score_region,
        mode=args.mode, valid_fraction=args.valid_fraction, target_fpr=args.target_fpr, seed=args.seed,
        augment=True if args.augment else None, **_architecture(args),
    )


def main(args: argparse.Namespace) -> int:
    from lib.data.dataset import load_dataset
    from lib.errors import DataError
    from lib.loris.train import train

    settings = settings_from_args(args)
    should_stop = None
    if args.time_budget is not None:
        if args.time_budget <= 0:
            raise DataError(f"--time-budget must be a positive number of minutes, got {args.time_budget}")
        deadline = time.monotonic() + 60.0 * args.time_budget

        def should_stop() -> bool:
            return time.monotonic() > deadline
    dataset = load_dataset(args.data)
    summary = train(dataset.records, args.out, settings, resume=args.resume, progress=not args.no_progress,
                    device=args.device, precision=args.precision, should_stop=should_stop)
    reason = summary["stopped"].replace("_", " ")
    if summary["stopped"] == "cancelled" and should_stop is not None:
        reason = f"time budget of {args.time_budget:g} min"
    stopped = f"{summary['epochs_run']} epochs ({reason})"
    if summary["rank"] != 0:
        print(f"rank {summary['rank']} of world size {summary['world_size']}: {stopped} on {summary['device']}; "
              "rank 0 writes the model")
        return 0
    if args.resume and not summary["resumed"]:
        print(f"note: no checkpoint in {args.out}; trained from scratch")
    print(f"trained on {summary['n_train']} normal images, validated on {summary['n_valid']} normal "
          f"+ {summary['n_valid_distended']} distended ({summary['valid_source']}); "
          f"{stopped}, best epoch "
          f"{summary['best_epoch']} (validation loss {summary['best_value']:.4f}), {summary['seconds']:.1f} s on "
          f"{summary['device']} ({summary['precision']})"
          + (f", peak GPU memory {summary['gpu_peak_memory_mb']:.0f} MB" if summary["gpu_peak_memory_mb"] else ""))
    if summary["world_size"] > 1:
        print(f"world size {summary['world_size']}: {summary['world_size']} processes trained together "
              f"(batch {settings.batch_size} per process, {settings.batch_size * summary['world_size']} per step); "
              f"epochs run by each rank: {summary['rank_epochs']}")
    print(f"{'metric':8} {'threshold':>10} {'rule':>10} {'pixel_thr':>10} {'rule':>10} {'valid AUROC':>11} {'valid Dice':>10}")
    for metric, c in summary["calibration"].items():
        auroc = "-" if c["valid_auroc"] is None else f"{c['valid_auroc']:.3f}"
        dice = "-" if c["valid_dice"] is None else f"{c['valid_dice']:.3f}"
        print(f"{metric:8} {c['threshold']:10.4f} {c['image_rule']:>10} {c['pixel_threshold']:10.4f} "
              f"{c['pixel_rule']:>10} {auroc:>11} {dice:>10}")
    print(f"model saved in {args.out} (model.pt, model.json; default metric {settings.metric}, pooling {settings.pooling})")
    return 0
