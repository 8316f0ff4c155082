"""Run a throwaway LoRIS MONAI Label server for the module's scene-level tests (runs with the server's Python).

The scene tests run in the ``slicer-core`` environment, which has neither torch nor
monailabel; their ``server`` fixture starts this script with the server environment's
Python. It builds the same tiny datastore and tiny trained models as the server
fixture of ``tests/conftest.py`` (the datastore under ``--root``), starts
``monailabel start_server`` on a free port of 127.0.0.1, writes
``{"url", "datastore", "unlabelled_ids", "sample_image_id"}`` to ``--ready`` and
serves until its standard input closes; then it stops the server.
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="folder for the datastore, models and log")
    parser.add_argument("--ready", required=True, type=Path, help="JSON file written once the server answers")
    args = parser.parse_args()

    import torch

    from lib.server.setup import make_sample_datastore, train_missing
    from lib.server.process import QUIET_ENV, free_port
    from tests.conftest import APP_DIR, ServerProcess, _tiny_settings

    torch.set_num_threads(1)
    datastore, models_dir = args.root / "datastore", args.root / "models"
    records = make_sample_datastore(datastore, patients=4, image_size=(96, 64), seed=3)
    loris, detector = _tiny_settings()
    train_missing(datastore, models_dir, loris_settings=loris, detector_settings=detector)
    env = {**QUIET_ENV, "MONAI_LABEL_SESSION_PATH": str(args.root / "sessions"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    server = ServerProcess(url=f"http://127.0.0.1:{free_port()}", datastore=datastore, models_dir=models_dir,
                           app_dir=APP_DIR, log_path=args.root / "server.log", env=env)
    server.start()
    try:
        info = {
            "url": server.url,
            "datastore": str(datastore),
            "unlabelled_ids": sorted(r.image for r in records if r.label is None),
            "sample_image_id": next(r.image for r in records if r.label == "normal"),
        }
        tmp = args.ready.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, args.ready)
        sys.stdin.read()  # until the test session closes our stdin
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
