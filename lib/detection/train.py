"""Training the recess detector on normal images only, on the training spine both models share.

- Only *normal* images with a box are trained on: a detector that saw distended
  recesses would learn what the anomaly looks like and leak it into LoRIS.
  (Its augmentations include a synthetic swelling of the normal recess,
  :func:`lib.detection.augment.bulge`, so that a distended recess, taller
  and darker, is still boxed.)
- Validation is patient-grouped (:func:`lib.data.splits.split_train_valid`) unless
  ``valid_records`` is given; its metrics (MONAI's COCO metric,
  :mod:`lib.detection.metrics`) are recorded every epoch.
- The loop is :func:`lib.training.loop.fit` (epochs counted from 1, the epoch records
  ``on_epoch`` receives, checkpoint and resume, cancel, progress, device choice, the
  summary). Schedule ``"cosine"`` (default): the learning rate decays to zero over
  ``max_epochs`` and the model of the last epoch is kept (``keep="last"``): on a
  handful of validation patients the epoch with the best validation score is mostly
  luck (measured in ``lib/detection/README.md``). Schedule ``"plateau"``: constant
  learning rate (optionally reduced on plateaus), early stopping on
  ``settings.monitor`` (ties broken by the mean IoU), the best epoch is kept.
- ``checkpoint_last.pt`` after every epoch makes training resumable: it holds the
  optimizer, the scheduler and every random generator (the epoch order, the
  augmentations, PyTorch's), so a resumed training trains what the uninterrupted
  one would have. At the end the confidence floor is calibrated on the validation
  images (:mod:`lib.detection.calibrate`) and the model folder's ``model.pt`` is
  written atomically (:mod:`lib.detection.model_files`).

Several processes (``torchrun --nproc_per_node N -m lib train-detector``, MONAI Label's
``multi_gpu``): data-parallel training (:mod:`lib.training.distributed`). Each rank
trains on its shard of the normal training images with ``batch_size`` images per
step (the effective batch is ``batch_size x world_size``) and its own augmentation
draws, gradients are averaged (DDP), batch norms synchronized on GPUs; every rank
validates on every validation image (mAP is not a mean over images), so all stop at
the same epoch; rank 0 calibrates and writes the model. A single process makes no
collective calls: the same seed gives the same draws in the same order and the same
weights, bit for bit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lib.data.imageio import read_boxed_images
from lib.data.records import Record
from lib.data.splits import split_train_valid
from lib.detection.augment import BoxAugmenter
from lib.detection.calibrate import calibrate
from lib.detection.infer import RecessDetector
from lib.detection.losses import detector_loss
from lib.detection.metrics import box_metrics
from lib.detection.model_files import KIND, save_model
from lib.detection.network import build_network
from lib.detection.preprocess import network_box
from lib.detection.settings import DetectorSettings
from lib.errors import DataError
from lib.training import distributed
from lib.training.loop import fit, resumed_split
from lib.training.random_states import NumpyGenerator, TorchGlobal

NETWORK_FIELDS = ("image_size", "image_aspect", "base_channels", "blocks_per_stage", "fpn_channels")
"""Settings that shape the network: a resumed run must keep them."""


def _boxed_normals(records: list[Record]) -> list[Record]:
    return [r for r in records if r.label == "normal" and r.box is not None]


def _make_optimizer(settings: DetectorSettings, params) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.learning_rate, momentum=0.9, weight_decay=settings.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _make_scheduler(settings: DetectorSettings, optimizer):
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.max_epochs)
    if settings.plateau_factor < 1.0:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=settings.plateau_factor,
                                                          patience=settings.plateau_patience)
    return None


def _new_network(settings: DetectorSettings, train_set: list[Record], train_images: list[np.ndarray]):
    """A fresh network whose proposals start at the median training box (in input pixels)."""
    torch.manual_seed(settings.seed)
    network = build_network(settings)
    shape = settings.input_shape
    boxes = np.array([network_box(r.box, (im.shape[1], im.shape[0]), shape) for r, im in zip(train_set, train_images)])
    network.init_edges(float(np.median(boxes[:, 2] - boxes[:, 0])) / 2, float(np.median(boxes[:, 3] - boxes[:, 1])) / 2)
    return network


def _validate(network, settings: DetectorSettings, images: list[np.ndarray], records: list[Record], device,
              score_threshold: float = 0.0) -> dict:
    """Metrics of every image's best box (the confidence floor is calibrated only after training)."""
    predictions = RecessDetector(network, settings, device).detect_batch(images, min_confidence=0.0)
    return box_metrics(predictions, [r.box for r in records], score_threshold)


def train_detector(
    records: list[Record],
    out_dir: str | os.PathLike,
    settings: DetectorSettings | None = None,
    *,
    valid_records: list[Record] | None = None,
    resume: bool = False,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Train the recess detector, calibrate its confidence floor and write its model folder.

    Args:
        records: the dataset (any labels; only normal images with a box are trained on). When
            ``valid_records`` is None they are split by patient (``settings.valid_fraction``).
        out_dir: the model folder (see :mod:`lib.detection.model_files`); created if needed.
        settings: :class:`DetectorSettings`; defaults when None.
        valid_records: an explicit validation set (e.g. a cross-validation fold's); its normal boxed
            images are validated on every epoch and calibrate the confidence floor, and the final report
            also covers its distended ones.
        resume: continue from ``out_dir/checkpoint_last.pt`` when it exists (same network settings required;
            the validation images of the first run are kept); otherwise start from scratch.
        progress: show a tqdm progress bar (one step per epoch).
        should_stop: polled between mini-batches; True ends training (the interrupted epoch is dropped, the kept
            epoch so far is calibrated and saved).
        on_epoch: called after every epoch with :func:`lib.training.loop.fit`'s record: ``{"epoch" (from 1),
            "max_epochs", "train": {"loss", "heatmap_loss", "box_loss", "learning_rate" (the rate this epoch
            trained with), "images"}, "valid" (the validation metrics of that epoch, every image's best box
            counted: :func:`lib.detection.metrics.box_metrics`), "monitor", "value", "best_value", "best_epoch"
            (the epoch kept so far), "seconds"}``.
        device: "cpu", "cuda", "cuda:N", or None/"auto" (CUDA when available; several processes: each rank's
            own GPU).

    Returns:
        the summary of :func:`lib.training.loop.fit` (``epochs_run, best_epoch`` (the kept epoch, from 1),
        ``monitor, best_value, stopped`` (``early_stopping`` | ``max_epochs`` | ``cancelled``), ``resumed, device,
        seconds, history, world_size, rank, rank_epochs, gpu_peak_memory_mb``) plus ``model_dir, n_train, n_valid,
        valid_source`` (``valid``, or ``train``: no normal validation image, the training images validate),
        ``validation`` (normal validation images, kept model), ``validation_all`` (all boxed validation images,
        normal and distended, kept model, calibrated floor; None when the training images validated),
        ``calibration`` (:func:`lib.detection.calibrate.calibrate`; None on ranks other than 0, which write
        nothing).

    Raises:
        DataError: no normal image with a recess box to train on, a box that leaves its image, or training
            stopped before its first epoch ended.
        ModelError: ``resume`` with a checkpoint of another network.
    """
    with distributed.process_group(device) as world:
        return _train(list(records), Path(out_dir), settings or DetectorSettings(), valid_records, resume, progress,
                      should_stop, on_epoch, device, world)


def _train(records, out_dir: Path, settings: DetectorSettings, valid_records, resume, progress, should_stop,
           on_epoch, device, world: distributed.World) -> dict:
    started = time.monotonic()
    dev = distributed.rank_device(device, world)
    checkpoint = distributed.from_main(lambda: KIND.load_checkpoint(out_dir), world) if resume else None

    if valid_records is None:
        train_records, valid_records = (resumed_split(records, checkpoint)
                                        or split_train_valid(records, settings.valid_fraction, settings.seed))
    else:
        train_records = records
    valid_source = "valid"
    train_set = _boxed_normals(train_records)
    if not train_set:
        n_normal = sum(r.label == "normal" for r in train_records)
        raise DataError(
            f"no normal image with a recess box to train the detector on ({len(train_records)} training records, "
            f"{n_normal} normal, {sum(r.box is not None for r in train_records)} with a box)"
        )
    valid_all = [r for r in valid_records if r.box is not None]
    valid_set = _boxed_normals(valid_all)
    train_images = read_boxed_images(train_set)
    if valid_set:
        valid_images = read_boxed_images(valid_set)
    else:
        valid_set, valid_images, valid_source = train_set, train_images, "train"

    # the head reads the FPN's finest level only: the coarse levels' output convolutions get no gradient
    network, forward = distributed.data_parallel(_new_network(settings, train_set, train_images).to(dev), world,
                                                 find_unused_parameters=True)
    optimizer = _make_optimizer(settings, network.parameters())
    scheduler = _make_scheduler(settings, optimizer)
    rng = np.random.default_rng(settings.seed)
    augmenter = BoxAugmenter(settings, seed=settings.seed)
    if checkpoint is not None and checkpoint["settings"].get("schedule") != settings.schedule:
        checkpoint = {**checkpoint, "scheduler": None}  # another schedule's state: this one starts afresh

    def train_epoch(epoch: int, stop: Callable[[], bool]) -> dict | None:
        forward.train()
        if world.distributed:  # this rank's shard of the epoch's permutation, its own augmentation draws
            order = distributed.epoch_shard(len(train_set), epoch, settings.seed, world).numpy()
            seed = distributed.epoch_seed(settings.seed, epoch, world.rank)
            rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
            augmenter.reseed(seed)
        else:
            order = rng.permutation(len(train_set))
        learning_rate = optimizer.param_groups[0]["lr"]
        sums, batches, seen = np.zeros(2), 0, 0
        for b in range(0, len(order), settings.batch_size):
            if stop():
                return None
            views = [
                (augmenter.negative(train_images[i], train_set[i].box), None)
                if rng.random() < settings.negative_fraction else augmenter(train_images[i], train_set[i].box)
                for i in order[b : b + settings.batch_size]
            ]
            images = torch.stack([v[0] for v in views]).to(dev)
            losses = detector_loss(*forward(images), [v[1] for v in views], settings.heatmap_sigma,
                                   settings.box_weight)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            sums += [float(losses["heatmap"].detach()), float(losses["box"].detach())]
            batches += 1
            seen += len(views)
        heatmap_loss, box_loss = (sums / max(batches, 1)).tolist()
        return {"loss": heatmap_loss + settings.box_weight * box_loss, "heatmap_loss": heatmap_loss,
                "box_loss": box_loss, "learning_rate": learning_rate, "images": seen}

    def validate() -> dict:
        return _validate(network, settings, valid_images, valid_set, dev)

    result = fit(kind=KIND, out_dir=out_dir, settings=settings, network=network, train_epoch=train_epoch,
                 validate=validate, monitor=settings.monitor, mode="max", tie_break="mean_iou",
                 keep="last" if settings.schedule == "cosine" else "best", scheduler=scheduler,
                 stateful={"optimizer": optimizer, "rng": NumpyGenerator(rng), "augmenter": augmenter,
                           "torch_rng": TorchGlobal()},
                 network_fields=NETWORK_FIELDS, checkpoint=checkpoint,
                 extra_checkpoint={"valid_images": [r.image for r in valid_records]
                                   if valid_source == "valid" else None},
                 progress=progress, should_stop=should_stop, on_epoch=on_epoch, desc="detector", device=dev,
                 world=world)
    if result.best_state is None:
        raise DataError("detector training was stopped before the first epoch ended; no model saved")
    kept = next(r for r in result.summary["history"] if r["epoch"] == result.summary["best_epoch"])
    summary = {"model_dir": str(out_dir), **result.summary, "n_train": len(train_set), "n_valid": len(valid_set),
               "valid_source": valid_source, "validation": kept["valid"], "validation_all": None,
               "calibration": None}
    if not world.is_main:
        return {**summary, "seconds": time.monotonic() - started}

    network.load_state_dict(result.best_state)
    calibration = calibrate(RecessDetector(network, settings, dev), valid_images, [r.box for r in valid_set],
                            seed=settings.seed)
    summary["calibration"] = calibration
    threshold = RecessDetector(network, settings, dev, {"calibration": calibration}).score_threshold
    if valid_all and valid_source == "valid":
        others = [r for r in valid_all if r.label != "normal"]
        images_all = valid_images + read_boxed_images(others)
        summary["validation_all"] = _validate(network, settings, images_all, valid_set + others, dev, threshold)
    summary["seconds"] = time.monotonic() - started
    save_model(out_dir, settings, result.best_state, epoch=summary["best_epoch"], monitor=settings.monitor,
               validation=kept["valid"], calibration=calibration,
               training={k: v for k, v in summary.items() if k != "history"})
    return summary
