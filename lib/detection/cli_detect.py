"""Propose the recess box of one image with a trained detector.

Prints JSON on stdout. When a box reaches the model's score threshold:
  {"found": true, "box": [x_min, y_min, x_max, y_max], "confidence": 0.93}
(original pixels, max exclusive, the labels.csv convention); otherwise:
  {"found": false, "box": null, "confidence": null, "message": "..."}

example:
  python -m lib detect --model runs/detector --image data/sample/images/p001_0.png
"""

from __future__ import annotations

import json
import sys


def configure(parser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="detector model directory")
    parser.add_argument("--image", required=True, metavar="FILE", help="PNG, JPEG or DICOM image")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="minimum confidence of a reported box (default: the model's score_threshold)")


def detect_file(model_dir, image_path, threshold: float | None = None) -> dict:
    """The JSON answer of ``detect`` for one image file (see the module docstring)."""
    from lib.data.imageio import read_image
    from lib.detection.infer import RecessDetector, is_blank
    from lib.errors import DataError

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DataError(f"--threshold must be a confidence in [0, 1], got {threshold}")
    detector = RecessDetector.load(model_dir)
    image = read_image(image_path)
    threshold = detector.score_threshold if threshold is None else threshold
    best = detector.detect(image, min_confidence=0.0)
    if best is not None and best.confidence >= threshold:
        return {"found": True, **best.to_dict()}
    if is_blank(image):
        message = "the image is blank (constant intensity): there is no recess to find"
    elif best is None:
        message = "no recess candidate in this image"
    else:
        message = f"no recess box with confidence >= {threshold:.3g} (best candidate {best.confidence:.3g})"
    return {"found": False, "box": None, "confidence": None, "message": message}


def main(args) -> int:
    json.dump(detect_file(args.model, args.image, args.threshold), sys.stdout)
    sys.stdout.write("\n")
    return 0
