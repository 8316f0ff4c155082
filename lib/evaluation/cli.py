"""Cross-validated evaluation of LoRIS, the paper's protocol, with baselines and a report.

Patient-grouped K folds (the reference layout's own folds when DIR has them):
per fold every network method is trained once on the normal training images
(early stopping on the normal validation images), thresholds are fitted on
the validation split only, and every metric is measured on the test split
from one forward pass. Baselines run on the same folds and boxes.

Methods (--methods):
  loris          single box mask inpainting (the paper), one model per fold, all --metrics on it
  riad           RIAD: disjoint random grid masks at several cell sizes, stitched (same network, budget)
  autoencoder    plain reconstruction without masking (same network, budget)
  box-intensity  no learning: mean darkness inside the box (map: darkness inside the box)
  box-shape      no image: the box's height/width ratio (how much the annotator's box gives away)

Box sources (--box, several allowed; the report shows them side by side):
  gt        the annotated boxes (the paper's Table 1)
  uniform   every box (train, validation, test) re-drawn to one size for the dataset: the 90th
            percentile of annotated heights x the median annotated width (fractions of the image),
            centred on the annotated box and clipped to the image, so the box's shape cannot tell
            the class; LoRIS is trained and tested with them
  detected  a recess detector per fold, trained on that fold's normal training images, boxes the
            validation (calibration) and test images; LoRIS is the one trained on annotated boxes
            (the paper's Table 2); detector precision / mAP@50 / mAP@75 are recorded

Scoring: LoRIS pools its map by the mean in the box (the paper; --pooling/--score-region change it);
RIAD and the autoencoder by the max over the whole image (as their papers), with the box beside them
in the scoring ablation, which reports every network method's I-AUROC pooled each way (mean, max) x
(box, whole image).

Metrics per method and fold, mean ± std over folds (metrics.json, report.md):
  i_auroc, p_auroc (pixels of all test images pooled, normal images all-negative), dice (the paper's:
  best F1 over thresholds of the pooled pixels of whole test images, an upper bound), dice_in_box
  (the same, only box pixels may fire), dice_calibrated (validation pixel threshold, 3x3 closing then
  opening, in the region the method segments), normal_box_share / distended_box_share (median share
  of the box segmented at that threshold), sensitivity and specificity (validation image threshold).
  Pixel metrics are measured on the network grid (--image-size).

Output in OUT:
  metrics.json         {"methods": {"<method>+<metric>[@<box>]": {"i_auroc": {"mean", "std", "folds"}, ...}},
                        "detector", "uniform_box", "config", "dataset"}; baselines are keyed by their name
                        alone ("box-shape"), annotated boxes have no "@box" suffix
  report.md            Table 1 per box source (paper's numbers alongside), box comparison, Table 2
  figures/*.png        ROC curves and score distributions per method
  panels/*.png         first fold's test images: original + box, masked input, reconstruction,
                       anomaly map, segmentation vs ground truth
  folds/fold_<k>.json  per-fold results (what --resume keeps): every metric, every test image with its
                       label, boxes (and their source) and scores, and the model folders used
  models/fold_<k>/     the trained models

Folds side by side: --workers N runs up to N folds at once, each in its own
process on --threads torch threads (default: the machine's share), on a GPU of its
own when there are several; metrics.json has the same numbers as --workers 1 with
the same --threads (on the CPU, the thread count can change the last bits).

Examples:
  python -m lib evaluate --data data/sample --out runs/eval --image-size 128 --epochs 20
  python -m lib evaluate --data data/sample --out runs/eval --quick --workers 5 --device cuda
  python -m lib evaluate --data data/sample --out runs/eval --box gt uniform detected --resume
  python -m lib evaluate --data data/sample --out runs/tiny --folds 2 --epochs 1 --quick --methods loris box-shape
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.evaluation.baselines import METHODS
from lib.evaluation.boxes import BOX_MODES
from lib.loris.anomaly import METRICS
from lib.loris.settings import ARCHITECTURES, POOLINGS, SCORE_REGIONS
from lib.pipeline import BOX_POLICIES


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="dataset folder (flat, reference or MONAI Label datastore layout); required "
                             "except with --report-only")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="patient-grouped folds (default 5)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                        help=f"methods to compare (default all: {' '.join(METHODS)})")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS, metavar="METRIC",
                        help=f"anomaly-map metrics of the network methods (default all: {' '.join(METRICS)})")
    parser.add_argument("--box", nargs="+", default=["gt"], choices=BOX_MODES, dest="boxes", metavar="SOURCE",
                        help="box sources: gt, uniform, detected (several allowed; default gt)")
    parser.add_argument("--epochs", type=int, metavar="N", help="maximum training epochs (default 1000; --quick 100)")
    parser.add_argument("--patience", type=int, metavar="P", help="early-stopping patience (default 50; --quick 25)")
    parser.add_argument("--image-size", type=int, metavar="S", help="network grid side in pixels (default 256; --quick 128)")
    parser.add_argument("--detector-epochs", type=int, metavar="N",
                        help="detector epochs (default: the detector preset's, 160; --quick 80)")
    parser.add_argument("--detector-image-size", type=int, metavar="S",
                        help="detector input width in pixels (default: the detector's preset, 256)")
    parser.add_argument("--box-policy", choices=BOX_POLICIES, default="fail",
                        help="--box detected: when the detector finds no recess, fail (default, as the server: "
                             "no answer, counted as normal), skip (the same in an evaluation), or whole_image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the training (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="start from the small CPU presets (128 px, the reference U-Net with channels "
                             "8-16-32-64-128, Adam 2e-3, 100 epochs, patience 25) instead of the paper's (reference "
                             "U-Net 64-128-256-512-512, 256 px, Adam 1e-4, 1000 epochs, patience 50)")
    parser.add_argument("--architecture", choices=ARCHITECTURES,
                        help="network of every network method (default: the preset's; reference = the paper's)")
    parser.add_argument("--channels", type=int, nargs="+", metavar="C",
                        help="network channels per level, the first level first (default: the preset's)")
    parser.add_argument("--augment", action="store_true",
                        help="train with box jitter and intensity gain (off by default, as in the paper)")
    parser.add_argument("--pooling", choices=POOLINGS, help="LoRIS's headline score pooling (default mean, the paper)")
    parser.add_argument("--score-region", choices=SCORE_REGIONS,
                        help="where LoRIS's headline score pools the map (default box)")
    parser.add_argument("--uniform-percentile", type=float, default=90.0, metavar="Q",
                        help="--box uniform: percentile of annotated box heights (default 90)")
    parser.add_argument("--resume", action="store_true", help="skip folds already finished in OUT with the same options")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: GPU when available)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads of each fold (default: torch's choice, divided among the --workers)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run up to N folds side by side, each in its own process (and on its own GPU when there "
                             "are several); the same numbers as --workers 1 with the same --threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild report.md and the figures of the finished run in OUT")


def main(args: argparse.Namespace) -> int:
    import torch

    from lib.errors import DataError
    from lib.evaluation.protocol import EvaluationConfig, command_line, run_evaluation
    from lib.evaluation.report import fmt, rewrite_report

    if args.report_only:
        print(f"wrote {rewrite_report(args.out)}")
        return 0
    if args.data is None:
        raise DataError("--data DIR is required (the dataset to evaluate on)")
    if args.threads is not None:
        if args.threads < 1:
            raise DataError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = EvaluationConfig(
        data=args.data, out=args.out, folds=args.folds, methods=tuple(args.methods), metrics=tuple(args.metrics),
        boxes=tuple(args.boxes), epochs=args.epochs, patience=args.patience, image_size=args.image_size,
        seed=args.seed, quick=args.quick, augment=args.augment, pooling=args.pooling,
        score_region=args.score_region, architecture=args.architecture,
        channels=tuple(args.channels) if args.channels else None, detector_epochs=args.detector_epochs,
        detector_image_size=args.detector_image_size, box_policy=args.box_policy,
        uniform_percentile=args.uniform_percentile, resume=args.resume, device=args.device,
        workers=args.workers, threads=args.threads, progress=not args.no_progress, command=command_line(),
    )
    results = run_evaluation(config)
    print(f"\n{'method':<32}{'I-AUROC':>16}{'P-AUROC':>16}{'Dice':>16}{'box share N/D':>16}")
    for key, entry in results["methods"].items():
        shares = [entry.get(f"{k}_box_share", {}).get("mean") for k in ("normal", "distended")]
        share = "–" if None in shares else f"{shares[0]:.2f}/{shares[1]:.2f}"
        print(f"{key:<32}{fmt(entry['i_auroc']):>16}{fmt(entry['p_auroc']):>16}{fmt(entry['dice']):>16}{share:>16}")
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'report.md'} "
          f"({results['config']['wall_s'] / 60:.1f} min)")
    return 0
