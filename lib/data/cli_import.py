"""Import a dataset into a MONAI Label datastore.

  python -m lib import --from DIR --to DATASTORE [--merge | --overwrite] [--dry-run]

DIR is detected as one of these layouts:

  flat:      DIR/images/<name>.png|.jpg|.jpeg|.dcm   (8-bit gray or RGB; DICOM one frame)
             DIR/masks/<name>.png                     distended images only; nonzero = distended recess
             DIR/labels.csv   columns exactly image,patient_id,label,x_min,y_min,x_max,y_max
                              label normal|distended; box in pixels, x right, y down, max exclusive
                              (an image without a row is imported unlabelled)
  reference: DIR/anomaly_<fold>/sqr/{train,valid,test}/{nd,distended}/<name>.png  (the paper's layout)
             DIR/anomaly_<fold>/sqr/boxes/<name>.txt                  YOLO "class cx cy w h"
             DIR/anomaly_<fold>/sqr/ground_truth/distended/<name>.png
             patient ids: the name up to the first '_' or '-' (see --patient-regex)
  datastore: another MONAI Label datastore (copied)

The whole source is validated first; every problem found is listed (file,
line, field) and nothing is written. Then the datastore is built in a
temporary folder beside DATASTORE and renamed into place:

  DATASTORE/<name>.png               8-bit grayscale PNG (JPEG, DICOM and RGB are converted)
  DATASTORE/labels/final/<name>.png  uint8 0/1 mask, same size (all zero for normal images)
  DATASTORE/datastore_v2.json        label info {"label", "box", "patient_id"}; image info {"patient_id"}

Start the server on it with `monailabel start_server --app monailabel_app --studies DATASTORE`.
An existing non-empty DATASTORE is refused unless --merge (add images; ids
must be new) or --overwrite (replace a datastore whole) is given; a folder that
is not a datastore is never written into. Both rebuild the datastore beside
it and swap it in: stop a server running on DATASTORE first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.data.dataset import load_dataset
from lib.errors import DataError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="DIR", help="dataset folder (flat, reference or datastore layout)")
    parser.add_argument("--to", dest="target", required=True, metavar="DATASTORE", help="MONAI Label datastore folder to create")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--merge", action="store_true", help="add the images to an existing datastore")
    group.add_argument("--overwrite", action="store_true", help="replace an existing datastore")
    parser.add_argument("--patient-regex", default=None, metavar="REGEX",
                        help="reference layout: regular expression whose first group is the patient id "
                             "(default: the name up to the first '_' or '-')")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the summary; write nothing")


def _print_summary(title: str, summary: dict) -> None:
    classes = summary["classes"]
    print(title)
    print(f"  layout:   {summary['layout']} ({summary['root']})")
    print(f"  images:   {summary['images']}  (normal {classes['normal']}, distended {classes['distended']}, "
          f"unlabelled {classes['unlabelled']})")
    print(f"  patients: {summary['patients']}")
    print(f"  boxes:    {summary['boxes']}   masks: {summary['masks']}")
    if summary["folds"]:
        print(f"  folds:    {summary['folds']} (precomputed; not stored in the datastore)")


def main(args: argparse.Namespace) -> int:
    from lib.data.datastore import write_datastore

    source, target = Path(args.source), Path(args.target)
    if source.resolve() == target.resolve() and not args.overwrite:
        raise DataError(f"{target}: the datastore cannot be its own source")
    dataset = load_dataset(source, patient_regex=args.patient_regex)
    if not dataset.records:
        raise DataError(f"{source}: no images found")
    _print_summary(f"read {source}", dataset.summary())
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    mode = "merge" if args.merge else "overwrite" if args.overwrite else "create"
    records = write_datastore(dataset.records, target, mode=mode, description=f"Imported from {source.name} ({dataset.layout} layout)")
    print(f"wrote {len(dataset.records)} images to {target} ({mode}); the datastore now holds {len(records)} images")
    return 0
