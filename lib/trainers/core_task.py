"""What the ``loris`` and ``recess_detection`` trainers share: MONAI Label's train task around the method's own training.

MONAI Label runs ``POST /train/<model>`` in a background process through
:class:`~monailabel.tasks.train.basic_train.BasicTrainTask` (``/train`` status and
its last log lines, ``DELETE /train`` to stop, one training at a time: a second
request while one runs is refused with HTTP 429 "Train Task is Already Running",
or queued with ``?enqueue=true``; MONAI Label also queues one that arrives before
the first run's process has started; ``train_stats`` in ``/info``). Its ignite ``SupervisedTrainer`` pipeline is not
used: :meth:`CoreTrainTask.train` calls the method's training function
(:func:`lib.loris.train.train`, :func:`lib.detection.train.train_detector`), so
there is exactly one training implementation.

Request params (MONAI Label's own keys, merged over the declared defaults that
``/info`` shows under ``trainers.<model>.config``):

=======================  ==============================  ==========================================
key                      method setting                  notes
=======================  ==============================  ==========================================
``max_epochs``           ``max_epochs``
``early_stop_patience``  ``patience``                    0 or less: no early stopping
``train_batch_size``     ``batch_size``
``val_split``            ``valid_fraction``              share of patients held out for validation
``learning_rate``        ``learning_rate``
``quick``                base preset                     true: the CPU preset (``Settings.quick()``),
                                                         false: the paper's settings
``precision``            the forward's precision         ``float32`` (default), ``bf16``, ``fp16``
                                                         (GPU autocast; trainers that declare it)
``multi_gpu``, ``gpus``  (MONAI Label's)                 one training process per GPU, see below
=======================  ==============================  ==========================================

The declared defaults are those of the app's ``train_preset`` (``quick`` unless
``--conf train_preset paper``). A request that switches ``quick`` away from that
preset takes the other preset's values for every key it leaves at the declared
default (clients such as MONAI Label's Slicer plugin send the whole config back).

Data: the datastore's labelled images, read with :func:`lib.data.datastore.read_datastore`
(class, box and patient id from the final label info); the method's training
uses the normal boxed images for the loss and the rest as its docs say.

Publishing: training writes into a temporary folder beside the model directory,
which replaces the model directory only when training succeeded
(:func:`lib.data.atomic.atomic_dir`). A crash or ``DELETE /train`` (a kill) leaves
the previous model serving; stale temporary folders are removed by the next
training. The infer tasks reload the new model on their next request.

Multi-GPU: with ``"multi_gpu": true`` and at least two visible GPUs (``gpus``:
``all`` or a list such as ``"0,1"``), MONAI Label's :class:`BasicTrainTask` spawns one
process per GPU (:func:`torch.multiprocessing.spawn`) and calls :meth:`CoreTrainTask.train`
with its rank. A trainer whose method trains data-parallel (:attr:`CoreTrainTask.data_parallel`:
LoRIS and the recess detector, through :mod:`lib.training.distributed`) joins the NCCL process group
(``MASTER_ADDR``/``MASTER_PORT`` from MONAI Label's train subprocess; the request's
``distributed_backend``/``distributed_url`` when given, as MONAI Label sets on Windows), and
every rank trains on its share of the images on GPU ``rank``; rank 0 alone publishes the
model and ``train_stats.json``, which MONAI Label then reports. ``train_batch_size`` is per
GPU. A trainer that does not train data-parallel trains on rank 0 alone; the other ranks
return at once. With fewer than two GPUs MONAI Label trains in one process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.utils.others.generic import device_list

from lib.data.atomic import atomic_dir, write_json
from lib.data.datastore import read_datastore
from lib.data.records import Record
from lib.errors import DataError
from lib.training import distributed

logger = logging.getLogger(__name__)

REQUEST_KEYS = {
    "max_epochs": "max_epochs",
    "early_stop_patience": "patience",
    "train_batch_size": "batch_size",
    "val_split": "valid_fraction",
    "learning_rate": "learning_rate",
}
STATS_FILE = "train_stats.json"


def _flag(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise DataError(f"train param {key}: expected true or false, got {value!r}")


def _number(value, key: str, kind):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise DataError(f"train param {key}: expected a number, got {value!r}") from None
    if kind is int and float(value) != number:
        raise DataError(f"train param {key}: expected a whole number, got {value!r}")
    return number


class CoreTrainTask(BasicTrainTask):
    """A :class:`BasicTrainTask` whose training is the method's own function (see the module docstring).

    Subclasses define :meth:`preset` (the settings of a preset) and :meth:`run` (train into a folder).
    """

    data_parallel = False
    """True when :meth:`run` trains data-parallel over a process group (:mod:`lib.training.distributed`): with
    ``multi_gpu`` every rank then trains; otherwise rank 0 trains alone."""

    precisions: tuple[str, ...] = ("float32",)
    """The ``precision`` values the method's training takes (:mod:`lib.training.precision`); :meth:`run`
    receives ``precision=`` when the request asks for another than float32."""

    def __init__(self, model_dir: Path, description: str, quick_default: bool = True):
        self.target = Path(model_dir)
        super().__init__(str(self.target.parent), description=description, stats_path=str(self.target / STATS_FILE))
        self.quick_default = quick_default
        self._config = {**self.declared(quick_default), "device": device_list(), "multi_gpu": False, "gpus": "all"}
        if len(self.precisions) > 1:
            self._config["precision"] = "float32"

    # --- what subclasses provide --------------------------------------------------------------------------
    @abstractmethod
    def preset(self, quick: bool):
        """The method's settings object of the quick (CPU) or paper preset."""

    @abstractmethod
    def run(self, records: list[Record], out_dir: Path, settings, device: str) -> dict:
        """Train on ``records`` into ``out_dir`` and return the method's summary."""

    # --- request -> settings ------------------------------------------------------------------------------
    def declared(self, quick: bool) -> dict:
        """The ``/train`` params a preset declares."""
        s = self.preset(quick)
        return {
            "max_epochs": s.max_epochs,
            "early_stop_patience": s.patience,
            "train_batch_size": s.batch_size,
            "val_split": s.valid_fraction,
            "learning_rate": s.learning_rate,
            "quick": quick,
        }

    def settings_for(self, request: dict):
        """Merge a train request over the declared defaults into the method's settings (validated).

        Raises:
            DataError: a param of the wrong type or out of range (the settings' own checks).
        """
        quick = _flag(request.get("quick", self.quick_default), "quick")
        declared = self.declared(self.quick_default)
        changes: dict[str, Any] = {}
        for key, field in REQUEST_KEYS.items():
            if key not in request:
                continue
            value = request[key]
            if quick != self.quick_default and value == declared[key]:
                continue  # left at the declared default: the requested preset's value applies
            changes[field] = _number(value, key, float if field in ("valid_fraction", "learning_rate") else int)
        base = self.preset(quick)
        if changes.get("patience", 1) <= 0:
            changes["patience"] = changes.get("max_epochs", base.max_epochs)
        try:
            return base.replace(**changes)
        except TypeError as exc:
            raise DataError(f"train params: {exc}") from None

    # --- MONAI Label hooks -------------------------------------------------------------------------------
    def pre_process(self, request, datastore: Datastore):
        """The datastore's labelled images as records (picklable, so MONAI Label's DDP spawn works)."""
        records = read_datastore(datastore._datastore_path)
        return [r for r in records if r.label is not None]

    def precision_for(self, request: dict) -> str:
        """The request's ``precision`` (default float32), one this trainer takes (else DataError)."""
        precision = request.get("precision", "float32")
        if precision not in self.precisions:
            raise DataError(f"train param precision: {precision!r} is not one of {', '.join(self.precisions)} "
                            f"(the {self.target.name} trainer)")
        return precision

    def train(self, rank, world_size, request, datalist):
        """One rank's training (MONAI Label calls it once, or once per spawned GPU process with ``multi_gpu``)."""
        settings = self.settings_for(request)
        precision = self.precision_for(request)
        device = str(request.get("device", "cpu"))
        spawned = bool(request.get("multi_gpu")) and world_size > 1
        if not spawned:
            return self.publish(list(datalist), settings, device, request.get("run_id"), precision) if rank == 0 else {}
        if not self.data_parallel:
            if rank != 0:
                return {}
            logger.info(f"{self.target.name}: trains on one GPU (rank 0); its training is not data-parallel")
            return self.publish(list(datalist), settings, device, request.get("run_id"), precision)
        gpus = request.get("gpus", "all")
        gpu = rank if gpus in (None, "", "all") else [int(g) for g in str(gpus).split(",")][rank]
        with distributed.process_group(device, rank=rank, world_size=world_size, local_rank=gpu,
                                       backend=request.get("distributed_backend"),
                                       init_method=request.get("distributed_url") or "env://") as world:
            logger.info(f"{self.target.name}: {world.describe()} on {distributed.rank_device(device, world)}")
            if world.is_main:
                return self.publish(list(datalist), settings, device, request.get("run_id"), precision)
            self._run(list(datalist), self.target, settings, device, precision)  # rank != 0 writes nothing
            return {}

    def _run(self, records, out_dir: Path, settings, device: str, precision: str) -> dict:
        options = {"precision": precision} if precision != "float32" else {}
        return self.run(records, out_dir, settings, device, **options)

    def publish(self, records: list[Record], settings, device: str = "cpu", run_id: str | None = None,
                precision: str = "float32") -> dict:
        """Train on ``records`` into a temporary folder and swap it in as the model directory; return the stats.

        Also writes ``train_stats.json`` (what ``/info`` shows as ``train_stats``) into the new model directory.
        In a data-parallel training only rank 0 calls it.
        """
        started = time.time()
        logger.info(f"{self.target.name}: training on {len(records)} labelled images with {settings}")
        for stale in self.target.parent.glob(f".{self.target.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_dir(self.target) as tmp:
            summary = self._run(records, tmp, settings, device, precision)
            stats = {
                "model": self.target.name,
                "run_id": run_id,
                "start_ts": int(started),
                "total_time": round(time.time() - started, 1),
                "n_images": len(records),
                "settings": settings.to_dict(),
                "precision": precision,
                "world_size": summary.get("world_size", 1),
                "summary": json.loads(json.dumps(summary, default=str)),
            }
            write_json(tmp / STATS_FILE, stats)
        logger.info(f"{self.target.name}: published {self.target} in {stats['total_time']} s")
        return stats

    def cleanup(self, request):
        pass  # nothing cached outside the (atomically published) model directory

    # BasicTrainTask's ignite pipeline hooks: unused, training is the method's own function
    def network(self, context):
        raise NotImplementedError("trained by the method's own training function; see CoreTrainTask.train")

    optimizer = loss_function = train_pre_transforms = train_post_transforms = val_inferer = network

    def on_epoch(self, record: dict) -> None:
        """Log one line per epoch (:func:`lib.training.loop.fit`'s record): MONAI Label shows the last lines in
        ``GET /train/``, and the Slicer module reads ``epoch`` and ``max_epochs`` from them."""
        shown = {k: record[k] for k in ("epoch", "max_epochs", "monitor") if k in record}
        shown.update({k: round(record[k], 5) for k in ("value", "best_value") if record.get(k) is not None})
        shown["best_epoch"] = record.get("best_epoch")
        if isinstance(record.get("train"), dict) and "loss" in record["train"]:
            shown["train_loss"] = round(record["train"]["loss"], 5)
        logger.info(f"{self.target.name}: {shown}")
