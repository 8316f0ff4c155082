"""Run LoRIS on one image: reconstruction, anomaly map, score, decision and segmentation.

Writes into OUT (each file atomically, and only once everything is computed):
  reconstruction.png   the network's reconstruction (8-bit, the image's size)
  anomaly_map.nrrd     float32 anomaly map on the image's pixel grid (x = column, y = row,
                       origin 0, spacing = the image's pixel spacing in mm, 1 when unknown)
  mask.png             segmentation (0/255)
  segmentation.nrrd   the segmentation as 0/1 on the map's grid (spacing included)
  result.json          score, distended, threshold, metric, pixel_metric, pixel_threshold,
                       display_range, box, box_source, detector_confidence, image_size,
                       pixel_spacing_mm [x, y] (or null), spacing_source, measurements
                       (area_mm2, max_thickness_mm; in pixels when no spacing is known),
                       frame, frame_count, frame_scores, image, model (and detector), mask_pixels

DICOM ultrasound: the pixel spacing comes from the Sequence of Ultrasound Regions
(cm per pixel, given in mm), else from Pixel Spacing; pixels outside the imaging
region (burned-in text, scales) are set to 0 first. A cine loop (a multi-frame
DICOM) is scored frame by frame in batches and the most anomalous frame is written
(result.json names its "frame" and gives every frame's score); --frame N runs
frame N only (0 = the first).

Without --metric the score and decision are the model's metric (MSGMSD) and the
map and segmentation its pixel metric (DD); with --metric, all of that metric.

The box is x_min y_min x_max y_max in the image's pixels (max exclusive). Without
--box, a recess detector (--detector MODEL_DIR, trained with train-detector)
proposes it.

Examples:
  python -m lib infer --model runs/loris --image data/sample/images/p001_01.png --box 200 150 420 230 --out runs/out
  python -m lib infer --model runs/loris --image scan.dcm --detector runs/detector --out runs/out --metric dd
  python -m lib infer --model runs/loris --image cine.dcm --box 200 150 420 230 --out runs/out --frame 12
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lib.loris.settings import METRICS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR", help="trained LoRIS model directory")
    parser.add_argument("--image", required=True, type=Path, metavar="FILE", help="image file (PNG, JPEG or DICOM)")
    parser.add_argument("--box", type=int, nargs=4, metavar=("X_MIN", "Y_MIN", "X_MAX", "Y_MAX"),
                        help="recess box in pixels (max exclusive)")
    parser.add_argument("--detector", type=Path, metavar="MODEL_DIR", help="recess detector used when --box is not given")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--metric", choices=METRICS,
                        help="one metric for score, map and segmentation (default: the model's metric for the "
                             "score and its pixel metric for the map)")
    parser.add_argument("--frame", type=int, metavar="N",
                        help="the frame of a cine loop to run (0 = the first; default: score every frame and "
                             "write the most anomalous)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def main(args: argparse.Namespace) -> int:
    from lib.errors import DataError
    from lib.pipeline import Pipeline, model_context, run_inference

    if args.box is None and args.detector is None:
        raise DataError("give the recess box with --box X_MIN Y_MIN X_MAX Y_MAX, or a detector with --detector MODEL_DIR")
    pipeline = Pipeline.load(args.model, args.detector, args.device)
    result = run_inference(pipeline, args.image, args.out, args.box, policy="fail", metric=args.metric,
                           context=model_context(args.model, args.detector), frame=args.frame)
    print(json.dumps({k: v for k, v in result.items() if k != "files"}, indent=2))
    print(f"wrote {', '.join(result['files'].values())} to {args.out}")
    return 0
