"""First-run setup of the MONAI Label app, then the server: ``make run``.

``python -m lib.server.setup [--workdir runs/default] [--host 127.0.0.1] [--port 8000] [--no-server]``:

1. if ``WORKDIR/datastore`` holds no datastore yet, generate synthetic knee-ultrasound frames
   (:mod:`lib.data.synthetic`) and import them (:func:`lib.data.datastore.write_datastore`);
   about a third of the patients are left unlabelled (no class, no box) so that
   active learning has something to serve;
2. if a model directory holds no model this code can load (none yet, or one of an
   older format), train it from the datastore with the quick CPU preset through the
   app's own trainers (the code ``POST /train`` runs), showing progress;
3. unless ``--no-server``, replace this process with
   ``monailabel start_server --app monailabel_app --studies WORKDIR/datastore
   --conf models_dir WORKDIR/models --host HOST --port PORT``.

Later runs find everything in place and start the server in seconds. Each step is
atomic: an interrupted first run leaves nothing half-written and the next run
redoes only what is missing. ``--datastore`` / ``--models`` override the two folders.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "monailabel_app"
DEFAULT_WORKDIR = Path("runs/default")
SAMPLE_PATIENTS = 24
SAMPLE_IMAGE_SIZE = (320, 240)
UNLABELLED_EVERY = 3
"""Every third patient's frames are imported unlabelled."""


def make_sample_datastore(datastore: Path, *, patients: int = SAMPLE_PATIENTS,
                          image_size: tuple[int, int] = SAMPLE_IMAGE_SIZE, seed: int = 0,
                          unlabelled_every: int = UNLABELLED_EVERY) -> list:
    """Generate synthetic frames and import them as a MONAI Label datastore at ``datastore``.

    Patients ``unlabelled_every - 1, 2 * unlabelled_every - 1, ...`` (0-based) are imported
    without class or box. Returns the records read back from the datastore.
    """
    from lib.data.datastore import write_datastore
    from lib.data.synthetic import write_sample_data

    with tempfile.TemporaryDirectory(prefix="loris-sample-") as tmp:
        records = write_sample_data(Path(tmp) / "flat", patients=patients, seed=seed, image_size=image_size)
        patient_ids = sorted({r.patient_id for r in records})
        hidden = {p for i, p in enumerate(patient_ids) if unlabelled_every and i % unlabelled_every == unlabelled_every - 1}
        records = [replace(r, label=None, box=None, mask_path=None) if r.patient_id in hidden else r for r in records]
        return write_datastore(records, datastore, mode="create", description="LoRIS synthetic sample data")


def usable(name: str, model_dir: Path) -> bool:
    """True when ``model_dir`` holds a model this code can load; says why not otherwise."""
    from lib.errors import ModelError, NotTrainedError

    try:
        if name == "loris":
            from lib.loris.predictor import LorisPredictor

            LorisPredictor.load(model_dir)
        else:
            from lib.detection.infer import RecessDetector

            RecessDetector.load(model_dir)
    except NotTrainedError:
        return False
    except ModelError as exc:
        if Path(model_dir).is_dir():
            print(f"{name}: the model in {model_dir} cannot be used ({exc}); training a new one", flush=True)
        return False
    return True


def train_missing(datastore: Path, models_dir: Path, *, request: dict | None = None, loris_settings=None,
                  detector_settings=None, device: str = "cpu") -> list[str]:
    """Train each model whose directory under ``models_dir`` has no usable model, from ``datastore``.

    Args:
        request: ``/train`` params for both trainers (default: the quick preset).
        loris_settings, detector_settings: explicit settings instead of ``request`` (tests use tiny networks).

    Returns:
        the names of the models trained.
    """
    from lib.data.datastore import read_datastore
    from lib.trainers.loris import LorisTrainer
    from lib.trainers.recess_detection import RecessDetectionTrainer

    records = [r for r in read_datastore(datastore) if r.label is not None]
    trained = []
    for name, trainer, settings in (
        ("recess_detection", RecessDetectionTrainer(Path(models_dir) / "recess_detection"), detector_settings),
        ("loris", LorisTrainer(Path(models_dir) / "loris"), loris_settings),
    ):
        if usable(name, trainer.target):
            continue
        print(f"training {name} on {len(records)} labelled images ...", flush=True)
        started = time.time()
        settings = settings or trainer.settings_for({"quick": True, **(request or {})})
        trainer.publish(records, settings, device, run_id="setup")
        print(f"{name} trained in {time.time() - started:.0f} s -> {trainer.target}", flush=True)
        trained.append(name)
    return trained


def setup(datastore: Path, models_dir: Path, device: str = "cpu") -> None:
    """Make sure the sample datastore and both models exist (see the module docstring)."""
    from lib.data.datastore import is_datastore

    datastore, models_dir = Path(datastore), Path(models_dir)
    if not is_datastore(datastore):
        print(f"generating the sample datastore in {datastore} ...", flush=True)
        records = make_sample_datastore(datastore)
        print(f"{len(records)} images ({sum(r.label is not None for r in records)} labelled)", flush=True)
    trained = train_missing(datastore, models_dir, device=device)
    if not trained:
        print(f"sample datastore {datastore} and models in {models_dir} are ready", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.server.setup", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="holds datastore/ and models/")
    parser.add_argument("--datastore", type=Path, default=None, help="datastore folder (default WORKDIR/datastore)")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default WORKDIR/models)")
    parser.add_argument("--device", default=None, help="cpu or cuda for the first-run training (default: cuda if available)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="server address (default 127.0.0.1: this machine only; beyond it, set an access token)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-server", action="store_true", help="set up only; do not start the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from lib.errors import LorisError

    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    datastore = args.datastore or args.workdir / "datastore"
    models_dir = args.models or args.workdir / "models"
    try:
        setup(datastore, models_dir, args.device)
    except LorisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_server:
        return 0
    from lib.server.process import server_command

    from lib.configs.app_config import TOKEN_ENV, TOKEN_FILE_ENV
    from lib.server.http.auth import is_loopback

    if not is_loopback(args.host) and args.host != "localhost" and not (os.environ.get(TOKEN_FILE_ENV)
                                                                        or os.environ.get(TOKEN_ENV)):
        print(f"note: the server listens on {args.host} without an access token: training, label writes, models and "
              f"logs are refused to other machines; set {TOKEN_FILE_ENV} (README, Security)", flush=True)
    command = server_command(APP_DIR, datastore, {"models_dir": Path(models_dir).resolve()}, args.host, args.port)
    print(f"starting the server: {' '.join(command)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APP_DIR.parent), env.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
