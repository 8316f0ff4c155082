"""The training loop both models share: epochs, early stopping, checkpoint and resume, progress, summary.

A model's training function (:func:`lib.loris.train.train`,
:func:`lib.detection.train.train_detector`) prepares its data, network and
optimizer, and hands :func:`fit` two functions: ``train_epoch`` (one pass over the
training images) and ``validate`` (the validation metrics, the ``monitor`` among
them). :func:`fit` runs the epochs and returns the best weights; the model then
calibrates them and writes its folder (:class:`~lib.training.model_folder.ModelKind`).

The same for every model:

- epochs are counted from 1; ``on_epoch`` receives ``{"epoch", "max_epochs", "train": {...},
  "valid": {...}, "monitor", "value", "best_value", "best_epoch", "seconds"}`` after each;
- early stopping on ``monitor`` (``mode`` ``min`` or ``max``) after ``patience`` epochs
  without improvement; the best weights are kept (``tie_break``: a second metric decides between
  epochs whose ``monitor`` is equal); or, with ``keep="last"`` (a schedule that decays the learning
  rate to its end), every epoch runs and the last one's weights are kept;
- a learning-rate ``scheduler`` is stepped once per epoch, after validation (``ReduceLROnPlateau``
  with the ``monitor`` value), and checkpointed with the rest;
- ``checkpoint_last.pt`` is written atomically after every epoch; a training resumed from it
  (``checkpoint``) continues where it stopped, when its network settings are the same (else
  :class:`~lib.errors.ModelError`);
- ``should_stop()`` is polled between mini-batches (``train_epoch`` calls it): True ends
  training, the interrupted epoch is dropped, the best weights so far are kept;
- the device is ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"``/None (CUDA when available);
- the summary has the same keys: ``epochs_run``, ``best_epoch``, ``monitor``, ``best_value``,
  ``stopped`` (``early_stopping`` | ``max_epochs`` | ``cancelled``), ``resumed``, ``device``,
  ``seconds``, ``history``, ``world_size``, ``rank``, ``rank_epochs``, ``gpu_peak_memory_mb`` (the most
  memory PyTorch held on this rank's GPU during training; None on the CPU).

Several processes (``torchrun``, MONAI Label's ``multi_gpu``): :mod:`lib.training.distributed` says what
``fit`` does then (the same epoch records and stopping epoch on every rank, rank 0 alone writing) and
what a model's training function must do to get data-parallel training.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from lib.errors import ModelError
from lib.training import distributed
from lib.training.devices import resolve_device
from lib.training.distributed import World
from lib.training.model_folder import ModelKind

__all__ = ["EarlyStopping", "Fit", "fit", "resolve_device", "resumed_split"]


class EarlyStopping:
    """Track the best value of a monitored metric; ``patience`` epochs without improvement stop training."""

    def __init__(self, patience: int, mode: str = "min") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.patience, self.mode = patience, mode
        self.best_value: float | None = None
        self.best_tie: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def step(self, value: float, epoch: int, tie: float | None = None) -> bool:
        """Record ``value`` of ``epoch``; True when it is the best so far. Ties keep the earlier epoch, unless
        ``tie`` (a second metric, better in the same direction) is better than the kept epoch's."""
        better = self.best_value is None or self._better(value, self.best_value) or (
            value == self.best_value and tie is not None and self.best_tie is not None
            and self._better(tie, self.best_tie))
        if better and not (isinstance(value, float) and math.isnan(value)):
            self.take(value, epoch, tie)
            return True
        self.bad_epochs += 1
        return False

    def take(self, value: float, epoch: int, tie: float | None = None) -> None:
        """Keep ``epoch`` whatever its value (a schedule that keeps the last epoch)."""
        self.best_value, self.best_epoch, self.best_tie, self.bad_epochs = value, epoch, tie, 0

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_tie": self.best_tie}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch, self.bad_epochs = state["best_value"], state["best_epoch"], state["bad_epochs"]
        self.best_tie = state.get("best_tie")


@dataclass
class Fit:
    """What :func:`fit` returns.

    Attributes:
        best_state: the network's state dict at the best epoch (on the CPU); None when no epoch finished.
        summary: the shared summary keys (module docstring).
    """

    best_state: dict | None
    summary: dict


def fit(*, kind: ModelKind, out_dir: str | os.PathLike, settings, network: torch.nn.Module,
        train_epoch: Callable[[int, Callable[[], bool]], dict | None], validate: Callable[[], dict],
        monitor: str, mode: str = "min", stateful: dict | None = None, network_fields: tuple[str, ...] = (),
        best_state: Callable[[], dict] | None = None, extra_checkpoint: dict | None = None,
        checkpoint: dict | None = None, progress: bool = True, should_stop: Callable[[], bool] | None = None,
        on_epoch: Callable[[dict], None] | None = None, desc: str = "train", device=None,
        world: World | None = None, keep: str = "best", tie_break: str | None = None, scheduler=None) -> Fit:
    """Run the epochs of one training (see the module docstring).

    Args:
        kind: the model's folder format (checkpoint file).
        out_dir: the model folder.
        settings: the model's settings (``max_epochs``, ``patience``; saved in the checkpoint).
        network: the network being trained (its state is checkpointed).
        train_epoch: ``train_epoch(epoch, should_stop)`` trains one epoch and returns its mean loss terms
            (``{"loss": ..., ...}``), or None when ``should_stop`` ended it early.
        validate: returns the validation metrics of the current weights, ``monitor`` among them.
        monitor, mode: the early-stopping metric and whether lower (``min``) or higher (``max``) is better.
        stateful: ``{name: object with state_dict() / load_state_dict()}`` (optimizer, schedulers, random
            generators...): saved and restored with the checkpoint.
        network_fields: settings that shape the network; a checkpoint that differs in one cannot be resumed.
        best_state: the state dict to keep for the best epoch (default: ``network``'s; e.g. an averaged copy).
        extra_checkpoint: more JSON-ready data saved in every checkpoint (e.g. the validation image names).
        checkpoint: the checkpoint to resume from (``kind.load_checkpoint(out_dir)`` when resuming), or None.
        progress, should_stop, on_epoch, desc, device: see the module docstring.
        world: the processes training together (:func:`lib.training.distributed.process_group`); default: the
            process group joined, or this process alone.
        keep: ``"best"`` (early stopping, the best epoch kept) or ``"last"`` (no early stopping, every epoch runs
            and the last is kept; ``best_epoch``/``best_value`` then name the kept, last, epoch).
        tie_break: a validation metric (better in the same ``mode``) that decides between epochs whose ``monitor``
            is equal (e.g. a mAP still at zero); None keeps the earlier epoch.
        scheduler: a learning-rate scheduler stepped after each epoch's validation (``ReduceLROnPlateau``:
            ``step(monitor value)``, built with the same ``mode``); saved and restored as the checkpoint's
            ``"scheduler"`` (a checkpoint whose ``"scheduler"`` is None leaves it as it is).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be best or last, got {keep!r}")
    world = world or distributed.current()
    out_dir = Path(out_dir)
    started = time.monotonic()
    gpu = torch.device(device) if device is not None and torch.device(device).type == "cuda" else None
    if gpu is not None:
        torch.cuda.reset_peak_memory_stats(gpu)
    stateful = dict(stateful or {})
    if scheduler is not None:
        stateful["scheduler"] = scheduler
    stopper = EarlyStopping(settings.patience, mode)
    best_state = best_state or network.state_dict
    kept, history, epoch = None, [], 0
    if checkpoint is not None:
        saved = type(settings).from_dict(checkpoint["settings"], where=f"{out_dir}: checkpoint settings")
        changed = [f for f in network_fields if getattr(saved, f) != getattr(settings, f)]
        if changed:
            raise ModelError(f"{out_dir}: cannot resume, the checkpoint's network differs in {', '.join(changed)}; "
                             "train without --resume or with the same settings")
        network.load_state_dict(checkpoint["network"])
        for name, obj in stateful.items():
            if checkpoint.get(name) is not None:
                obj.load_state_dict(checkpoint[name])
        stopper.load_state_dict(checkpoint["early_stopping"])
        epoch, history, kept = checkpoint["epoch"], list(checkpoint["history"]), checkpoint["best_state"]

    def stop_requested() -> bool:
        if should_stop is None:
            return False
        return distributed.any_rank(bool(should_stop()), world)

    stopped = "max_epochs"
    bar = tqdm(total=settings.max_epochs, initial=epoch, disable=not (progress and world.is_main), desc=desc,
               unit="epoch", dynamic_ncols=True)
    try:
        while epoch < settings.max_epochs:
            if keep == "best" and stopper.should_stop:
                stopped = "early_stopping"
                break
            t0 = time.monotonic()
            train = distributed.average(train_epoch(epoch + 1, stop_requested), world)
            if train is None:
                stopped = "cancelled"
                break
            epoch += 1
            distributed.broadcast_buffers(network, world)
            valid = distributed.average(validate(), world)
            value = float(valid[monitor])
            tie = float(valid[tie_break]) if tie_break is not None else None
            if keep == "last":
                stopper.take(value, epoch, tie)
            if keep == "last" or stopper.step(value, epoch, tie):
                kept = {k: v.detach().cpu().clone() for k, v in best_state().items()}
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(value)
            elif scheduler is not None:
                scheduler.step()
            record = {"epoch": epoch, "max_epochs": settings.max_epochs, "train": train, "valid": valid,
                      "monitor": monitor, "value": value, "best_value": stopper.best_value,
                      "best_epoch": stopper.best_epoch, "seconds": time.monotonic() - t0}
            history.append(record)
            if world.is_main:
                kind.save_checkpoint(out_dir, {
                    "settings": settings.to_dict(), "epoch": epoch, "network": network.state_dict(),
                    **{name: obj.state_dict() for name, obj in stateful.items()},
                    "early_stopping": stopper.state_dict(), "best_state": kept, "history": history,
                    **(extra_checkpoint or {}),
                })
            bar.update(1)
            shown = {"loss": f"{train.get('loss', float('nan')):.4f}", monitor: f"{value:.4f}"}
            if keep == "best":  # with keep="last" the kept epoch is always this one: nothing to add
                shown["best"] = f"{stopper.best_value:.4f}@{stopper.best_epoch}"
            bar.set_postfix(**shown)
            if on_epoch is not None and world.is_main:
                on_epoch(dict(record))
        else:
            if keep == "best" and stopper.should_stop:
                stopped = "early_stopping"
    finally:
        bar.close()
    summary = {"epochs_run": epoch, "best_epoch": stopper.best_epoch, "monitor": monitor,
               "best_value": stopper.best_value, "stopped": stopped, "resumed": checkpoint is not None,
               "device": str(device) if device is not None else None,
               "seconds": time.monotonic() - started, "history": history,
               "world_size": world.world_size, "rank": world.rank, "rank_epochs": distributed.gather(epoch, world),
               "gpu_peak_memory_mb": torch.cuda.max_memory_allocated(gpu) / 2 ** 20 if gpu is not None else None}
    return Fit(kept, summary)


def resumed_split(records: list, checkpoint: dict | None) -> tuple[list, list] | None:
    """``(train, valid)``: ``records`` split as the training that wrote ``checkpoint`` split them (its
    ``valid_images``, the names of its validation images, saved through ``extra_checkpoint``); None when there is
    no checkpoint or it recorded no split. A resumed training thus keeps its validation images even when the data
    set has grown since."""
    if checkpoint is None or checkpoint.get("valid_images") is None:
        return None
    names = set(checkpoint["valid_images"])
    return [r for r in records if r.image not in names], [r for r in records if r.image in names]
