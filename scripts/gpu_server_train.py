"""Train LoRIS through a real MONAI Label server on the GPU(s), ``multi_gpu`` on: one step of ``gpu_check.sh``.

``python scripts/gpu_server_train.py --workdir DIR [--epochs 3] [--paper] [--out FILE.json]``

Sets up the sample datastore and first models in ``DIR`` (``python -m lib.server.setup --no-server``, on
the GPU), starts ``monailabel start_server`` of this app on it, sends ``POST /train/loris`` with
``{"multi_gpu": true, "gpus": "all", "max_epochs": N, "quick": ...}``, waits for it, and prints
(and writes) what ``/info`` then reports as ``train_stats.loris``: world size, epochs of each rank,
seconds, peak GPU memory. With one GPU MONAI Label trains in one process (it says
"Distributed/Multi GPU is limited"); the world size is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import requests

    from lib import app_setup
    from lib.server.process import QUIET_ENV, start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--paper", action="store_true", help="the paper preset (256 px reference U-Net) instead of quick")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if app_setup.main(["--workdir", str(args.workdir), "--no-server", "--device", "cuda"]) != 0:
        return 2
    env = {**QUIET_ENV, "MONAI_LABEL_SESSION_PATH": str(args.workdir / "sessions")}
    with start_server(studies=args.workdir / "datastore", conf={"models_dir": str((args.workdir / "models").resolve())},
                      env=env, log_path=args.workdir / "server.log") as server:
        request = {"max_epochs": args.epochs, "quick": not args.paper, "multi_gpu": True, "gpus": "all"}
        started = time.monotonic()
        answer = requests.post(f"{server.url}/train/loris", json=request, timeout=60)
        if answer.status_code != 200:
            print(f"POST /train/loris answered {answer.status_code}: {answer.text[:500]}", file=sys.stderr)
            return 1
        status = {}
        while time.monotonic() - started < 3600:
            status = requests.get(f"{server.url}/train/", timeout=60).json()
            if status.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(2)
        wall = time.monotonic() - started
        stats = requests.get(f"{server.url}/info/", timeout=60).json().get("train_stats", {}).get("loris", {})
    summary = stats.get("summary", {})
    report = {"request": request, "status": status.get("status"), "wall_s": wall,
              "world_size": stats.get("world_size"), "rank_epochs": summary.get("rank_epochs"),
              "epochs_run": summary.get("epochs_run"), "train_seconds": summary.get("seconds"),
              "device": summary.get("device"), "gpu_peak_memory_mb": summary.get("gpu_peak_memory_mb"),
              "n_train": summary.get("n_train"), "image_size": stats.get("settings", {}).get("image_size")}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if status.get("status") != "DONE":
        print("training did not finish; last log lines:\n" + "\n".join(status.get("details", [])[-20:]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
