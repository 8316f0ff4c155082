"""Train the recess box detector on the normal images of a dataset.

Only normal images with a recess box are trained on (a detector that saw
distended recesses would leak the anomaly into LoRIS). Patients are split into
training and validation; the learning rate decays to zero over the epochs
(cosine) and the last epoch's model is kept (--schedule plateau: early stopping
on the validation mean IoU, best epoch kept); the confidence floor below which
the detector answers "nothing found" is calibrated on the validation images.
The model (weights + settings + floor) is written atomically to
MODEL_DIR/model.pt (model.json is a readable copy without weights) and the
resumable state after every epoch to MODEL_DIR/checkpoint_last.pt (--resume).
Prints the training summary as JSON on stdout (progress on stderr).

Several GPUs (or CPU processes): launch with torchrun, one process per GPU;
each trains on its share of the images with --batch-size images per step
(effective batch: batch size x processes), gradients averaged (PyTorch DDP);
process 0 writes the model and prints the summary.

examples:
  python -m lib train-detector --data data/sample --out runs/detector --quick
  python -m lib train-detector --data data/sample --out runs/detector --epochs 300 --resume
  torchrun --nproc_per_node 2 -m lib train-detector --data data/sample --out runs/detector --batch-size 4
"""

from __future__ import annotations

import json
import sys


def configure(parser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder (flat, reference or datastore layout)")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    parser.add_argument("--epochs", type=int, metavar="N", help="number of epochs (default 160; --quick 80)")
    parser.add_argument("--schedule", choices=("cosine", "plateau"),
                        help="cosine (default): decay to zero, keep the last epoch; plateau: early stopping")
    parser.add_argument("--patience", type=int, metavar="P",
                        help="--schedule plateau: stop after P epochs without validation improvement")
    parser.add_argument("--image-size", type=int, metavar="S",
                        help="network input width in pixels (multiple of 32; the height keeps 4:3)")
    parser.add_argument("--batch-size", type=int, metavar="B", help="images per training step")
    parser.add_argument("--flip", action="store_true",
                        help="also train on horizontally flipped images (only for data that mixes "
                             "proximal-left and proximal-right scans)")
    parser.add_argument("--seed", type=int, help="seed of the patient split, initialisation and augmentations")
    parser.add_argument("--quick", action="store_true", help="CPU preset: the same recipe, 80 epochs")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint_last.pt when present")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (default auto; under torchrun each process takes the GPU of "
                             "its local rank)")
    parser.add_argument("--threads", type=int, metavar="T", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    import torch

    from lib.data.dataset import load_dataset
    from lib.detection.settings import DetectorSettings
    from lib.detection.train import train_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "max_epochs": args.epochs,
        "schedule": args.schedule,
        "patience": args.patience,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "flip": True if args.flip else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = DetectorSettings.quick(**overrides) if args.quick else DetectorSettings(**overrides)
    dataset = load_dataset(args.data)
    summary = train_detector(dataset.records, args.out, settings, resume=args.resume, progress=not args.no_progress,
                             device=args.device)
    stopped = f"{summary['epochs_run']} epochs ({summary['stopped'].replace('_', ' ')})"
    if summary["rank"] != 0:
        print(f"rank {summary['rank']} of world size {summary['world_size']}: {stopped} on {summary['device']}; "
              "rank 0 writes the model", file=sys.stderr)
        return 0
    if summary["world_size"] > 1:
        print(f"world size {summary['world_size']}: {summary['world_size']} processes trained together "
              f"(batch {settings.batch_size} per process, {settings.batch_size * summary['world_size']} per step); "
              f"epochs run by each rank: {summary['rank_epochs']}", file=sys.stderr)
    # the epoch records are in the summary's "history"; stdout keeps the rest
    json.dump({k: v for k, v in summary.items() if k != "history"}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
