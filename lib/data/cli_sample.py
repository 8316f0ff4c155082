"""Generate synthetic longitudinal knee-ultrasound frames with ground truth, in the flat layout.

Writes, all or nothing (an existing flat data set at OUT is replaced only once everything
is written; a non-empty OUT that is not a flat data set is refused):

  OUT/images/<name>.png   8-bit grayscale B-mode frames (default 640x480, W x H)
  OUT/masks/<name>.png    0/255 mask of the fluid, distended frames only
  OUT/labels.csv          image,patient_id,label,x_min,y_min,x_max,y_max
                          (label normal|distended; box in pixels, x right, y down, max exclusive)

With --format dicom the frames are OUT/images/<name>.dcm instead: RGB DICOM ultrasound
(US Image Storage, one study per patient) whose Sequence of Ultrasound Regions holds
the field of view as the imaging region and the pixel size (PhysicalDeltaX/Y in cm),
as scanners export them. With --cine-frames N, also one cine loop per patient:

  OUT/cine/<patient>_cine.dcm   DICOM US Multi-frame, N frames of a slow probe sweep
  OUT/cine/loops.csv            loop,patient_id,label,frames,pixel_mm,most_distended_frame,
                                x_min,y_min,x_max,y_max (a box holding the recess in every frame)

The frames imitate a longitudinal suprapatellar scan (proximal on the left):
skin, subcutaneous fat, the fibrillar quadriceps tendon, the suprapatellar and
prefemoral fat pads, the recess between them, the femoral cortex with its
acoustic shadow and sometimes the patella, on a scanner's black frame with a
depth scale. Speckle comes from a simulated scattering field (envelope of a
complex Gaussian field, log-compressed), with depth attenuation, time-gain
compensation, focus and receiver noise. A normal recess is a thin dark line;
a distended one a dark lens of fluid. About a quarter of the frames are
distended (whole patients where possible), with borderline cases on both
sides. Each patient gets several frames with small probe moves; patients
differ in depth, gain, tilt and tissue thickness. The same seed gives the same
data set.

The boxes are drawn as a clinician would (a margin around the line or the
collection, with annotator noise), so a distended recess's box is taller: the
printed summary gives the AUROC of the box's height/width ratio alone
(box-shape) and of the mean darkness inside the box (box-intensity).

Examples:
  python -m lib sample-data --out data/sample
  python -m lib sample-data --out /tmp/s --patients 40 --seed 3 --image-size 800x600
  python -m lib sample-data --out /tmp/s --preview docs/sample_data.png
  python -m lib sample-data --out /tmp/us --patients 4 --format dicom --cine-frames 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lib.data.summary import format_summary, summarize
from lib.data.synthetic import (
    DEFAULT_DISTENDED_FRACTION,
    DEFAULT_IMAGE_SIZE,
    IMAGE_FORMATS,
    parse_image_size,
    write_sample_data,
)
from lib.errors import DataError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder; an existing flat data set there is replaced, any other non-empty folder is refused",
    )
    parser.add_argument("--patients", type=int, default=10, help="number of patients, 4-6 frames each (default 10)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same data (default %(default)s)"
    )
    parser.add_argument(
        "--image-size",
        default="{}x{}".format(*DEFAULT_IMAGE_SIZE),
        metavar="WxH",
        help="frame size in pixels, width x height (default %(default)s)",
    )
    parser.add_argument(
        "--distended-fraction",
        type=float,
        default=DEFAULT_DISTENDED_FRACTION,
        metavar="F",
        help="fraction of distended frames, 0..1 (default %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=IMAGE_FORMATS,
        default="png",
        help="png: 8-bit gray PNG frames; dicom: RGB DICOM ultrasound with its region calibration (default png)",
    )
    parser.add_argument(
        "--cine-frames",
        type=int,
        default=0,
        metavar="N",
        help="also write one DICOM cine loop of N frames per patient into OUT/cine (default: none)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        metavar="FILE",
        help="also save a PNG of sample frames with their boxes and mask contours (e.g. docs/sample_data.png)",
    )


def main(args: argparse.Namespace) -> int:
    size = parse_image_size(args.image_size)
    if args.patients < 1:
        raise DataError(f"--patients must be at least 1, got {args.patients}")
    if not 0.0 <= args.distended_fraction <= 1.0:
        raise DataError(f"--distended-fraction must be between 0 and 1, got {args.distended_fraction}")
    start = time.perf_counter()
    if args.cine_frames and args.cine_frames < 2:
        raise DataError(f"--cine-frames must be at least 2, got {args.cine_frames}")
    records = write_sample_data(
        args.out, args.patients, args.seed, size, args.distended_fraction, preview=args.preview,
        image_format=args.format, cine_frames=args.cine_frames,
    )
    elapsed = time.perf_counter() - start
    masks = sum(r.mask_path is not None for r in records)
    print(
        f"wrote {len(records)} images ({masks} masks) of {len(records) and len({r.patient_id for r in records})} "
        f"patients to {args.out} in {elapsed:.1f} s: images/, masks/, labels.csv"
    )
    if args.cine_frames:
        print(f"wrote {len({r.patient_id for r in records})} cine loops of {args.cine_frames} frames to "
              f"{args.out / 'cine'}: <patient>_cine.dcm, loops.csv")
    if args.preview:
        print(f"wrote preview {args.preview} (sample frames of this data set with boxes and mask contours)")
    print(format_summary(summarize(records)))
    return 0
