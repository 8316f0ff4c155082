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

Metrics per method and fold, mean ± std over folds (metrics.json, report.md):
  i_auroc, p_auroc (pixels of all test images pooled, normal images all-negative), dice (the paper's:
  best F1 over thresholds of the pooled test pixels, an upper bound), dice_calibrated (validation
  pixel threshold, 3x3 closing then opening), sensitivity and specificity (validation image
  threshold). Pixel metrics are measured on the network grid (--image-size).

Output in OUT:
  metrics.json         {"methods": {"<method>+<metric>[@<box>]": {"i_auroc": {"mean", "std", "folds"}, ...}},
                        "detector", "uniform_box", "config", "dataset"}; baselines are keyed by their name
                        alone ("box-shape"), annotated boxes have no "@box" suffix
  report.md            Table 1 per box source (paper's numbers alongside), box comparison, Table 2
  figures/*.png        ROC curves and score distributions per method
  panels/*.png         first fold's test images: original + box, masked input, reconstruction,
                       anomaly map, segmentation vs ground truth
  folds/fold_<k>.json  per-fold results (what --resume keeps)
  models/fold_<k>/     the trained models

Examples:
  python -m lib evaluate --data data/sample --out runs/eval --image-size 128 --epochs 20
  python -m lib evaluate --data data/sample --out runs/eval --box gt uniform detected --resume
  python -m lib evaluate --data data/sample --out runs/tiny --folds 2 --epochs 1 --quick --methods loris box-shape
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.evaluation.baselines import METHODS
from lib.evaluation.boxes import BOX_MODES
from lib.loris.anomaly import METRICS


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
    parser.add_argument("--epochs", type=int, metavar="N", help="maximum training epochs (default 1000; --quick 30)")
    parser.add_argument("--patience", type=int, metavar="P", help="early-stopping patience (default 50; --quick 8)")
    parser.add_argument("--image-size", type=int, metavar="S", help="network grid side in pixels (default 256; --quick 64)")
    parser.add_argument("--detector-epochs", type=int, metavar="N", help="detector epochs (default: the detector preset's, 160; --quick 80)")
    parser.add_argument("--detector-image-size", type=int, metavar="S",
                        help="detector input width in pixels (default: the detector's preset, 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the training (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="start from the small CPU presets (small UNet, learning rate 1e-3) instead of the paper's")
    parser.add_argument("--uniform-percentile", type=float, default=90.0, metavar="Q",
                        help="--box uniform: percentile of annotated box heights (default 90)")
    parser.add_argument("--resume", action="store_true", help="skip folds already finished in OUT with the same options")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: GPU when available)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
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
        seed=args.seed, quick=args.quick, detector_epochs=args.detector_epochs,
        detector_image_size=args.detector_image_size,
        uniform_percentile=args.uniform_percentile, resume=args.resume, device=args.device,
        progress=not args.no_progress, command=command_line(),
    )
    results = run_evaluation(config)
    print(f"\n{'method':<32}{'I-AUROC':>16}{'P-AUROC':>16}{'Dice':>16}")
    for key, entry in results["methods"].items():
        print(f"{key:<32}{fmt(entry['i_auroc']):>16}{fmt(entry['p_auroc']):>16}{fmt(entry['dice']):>16}")
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'report.md'} "
          f"({results['config']['wall_s'] / 60:.1f} min)")
    return 0
