"""LoRIS training: normal images only, early stopping on the validation loss, calibration, atomic save.

Plain PyTorch (the loop is twenty lines; the method's parts are MONAI's UNet
and SSIM loss and this package's preprocessing, masking and MSGMS):

1. Records are split by patient (:func:`lib.data.splits.split_train_valid`)
   unless ``valid_records`` is given. Only **normal** images with a box enter
   the loss (train and validation); distended validation images are used for
   calibration only.
2. Images are preprocessed once (:mod:`lib.loris.preprocess`) and kept in memory.
   Each epoch: shuffled mini-batches, augmentation only when asked (box jitter,
   intensity gain; the paper has none), masked input -> reconstruction ->
   ``L = MSGMS + SSIM + L2`` -> Adam.
3. Validation loss each epoch (no augmentation); the best weights are kept;
   training stops after ``patience`` epochs without improvement, at
   ``max_epochs``, or when ``should_stop()`` returns True (the loop is
   :func:`lib.training.loop.fit`, shared with the detector).
4. ``checkpoint_last.pt`` is written atomically after every epoch (``resume=True``
   continues from it); at the end the best weights are calibrated on the
   validation split for every metric (:mod:`lib.loris.calibration`) and saved
   as ``model.pt`` (atomically: a previous model stays usable until then).

Several processes (``torchrun --nproc_per_node N -m lib train``, MONAI Label's ``multi_gpu``):
data-parallel training (:mod:`lib.training.distributed`): each rank trains on its shard of the normal
training images with ``batch_size`` images per mini-batch (the effective batch is ``batch_size x
world_size``), gradients are averaged (DDP), batch norms synchronized on GPUs, the validation loss is
computed on shards and averaged, so every rank stops at the same epoch; rank 0 calibrates and writes
the model. One process trains exactly as before.

``precision`` (``float32``, ``bf16``, ``fp16``; :mod:`lib.training.precision`): the network's forward in
autocast, the loss in float32.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lib.data.imageio import read_boxed_images
from lib.data.records import Record
from lib.data.splits import split_train_valid
from lib.errors import DataError, ModelError
from lib.loris import preprocess
from lib.loris.calibration import calibrate
from lib.loris.predictor import LorisPredictor
from lib.loris.loss import LorisLoss
from lib.loris.model_files import KIND, save_model
from lib.loris.network import build_network
from lib.loris.reconstruction import reconstruct
from lib.loris.settings import LorisSettings
from lib.training import distributed
from lib.training.loop import fit, resumed_split
from lib.training.precision import Precision
from lib.training.random_states import TorchGenerator

NETWORK_FIELDS = ("image_size", "architecture", "channels", "strides", "num_res_units", "norm", "dropout", "mode")
"""Settings that define the network's weights: a resumed run must keep them."""

LOSS_TERMS = ("loss", "msgms", "ssim", "l2")


def labelled_and_boxed(records: Sequence[Record]) -> list[Record]:
    """Records that training and calibration can use: labelled and boxed."""
    return [r for r in records if r.label in ("normal", "distended") and r.box is not None]


def split_patients(records: Sequence[Record], valid_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Patient-grouped train/validation split (:func:`lib.data.splits.split_train_valid`) that keeps
    normal images in validation: when the drawn validation patients have none, one patient with only
    normal boxed images (the first in a seeded shuffle) moves from train to validation, provided train
    keeps another. Early stopping and calibration need normal validation images.
    """
    train_records, valid_records = split_train_valid(list(records), valid_fraction, seed)
    if valid_fraction == 0 or any(r.is_normal and r.box is not None for r in valid_records):
        return train_records, valid_records
    by_patient: dict[str, list[Record]] = {}
    for r in train_records:
        by_patient.setdefault(r.patient_id, []).append(r)
    candidates = sorted(p for p, rs in by_patient.items() if all(r.is_normal and r.box is not None for r in rs))
    if len(candidates) < 2:
        return train_records, valid_records
    rng = np.random.default_rng(seed)
    moved = candidates[int(rng.integers(len(candidates)))]
    return ([r for r in train_records if r.patient_id != moved],
            valid_records + [r for r in train_records if r.patient_id == moved])


def augment(x: torch.Tensor, grid_boxes: torch.Tensor, settings: LorisSettings, generator: torch.Generator):
    """Random intensity gain and box jitter for a batch (returns new tensors; the box stays non-empty).

    Gain: the image in ``[0, 1]`` times ``U(1 - gain, 1 + gain)``, clipped. Jitter: each box edge moves by up
    to ``box_jitter`` times the box side.
    """
    b, size = x.shape[0], x.shape[-1]
    if settings.gain > 0:
        g = 1.0 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * settings.gain
        x = preprocess.to_network_range((preprocess.to_unit_range(x) * g.to(x.device)).clamp(0, 1))
    if settings.box_jitter > 0:
        boxes = grid_boxes.cpu().float()
        side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)
        shift = (torch.rand(b, 4, generator=generator) * 2 - 1) * settings.box_jitter * side
        boxes = (boxes + shift).round().long().clamp(0, size)
        boxes[:, 2] = torch.maximum(boxes[:, 2], boxes[:, 0] + 1).clamp(max=size)
        boxes[:, 3] = torch.maximum(boxes[:, 3], boxes[:, 1] + 1).clamp(max=size)
        boxes[:, 0] = torch.minimum(boxes[:, 0], boxes[:, 2] - 1)
        boxes[:, 1] = torch.minimum(boxes[:, 1], boxes[:, 3] - 1)
        grid_boxes = boxes.to(grid_boxes.device)
    return x, grid_boxes


def _mean_terms(network, loss_fn, x, grid_boxes, settings, batch_size, generator=None,
                amp: Precision | None = None) -> dict[str, float]:
    sums = dict.fromkeys(LOSS_TERMS, 0.0)
    network.eval()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, bb = x[i:i + batch_size], grid_boxes[i:i + batch_size]
            with amp.autocast() if amp is not None else contextlib.nullcontext():
                recon = reconstruct(network, xb, bb, settings, generator=generator, training=True)[0]
            for k, v in loss_fn(recon.float(), xb).items():
                sums[k] += float(v) * xb.shape[0]
    return {k: v / max(x.shape[0], 1) for k, v in sums.items()}


def train(records: Sequence[Record], out_dir: str | os.PathLike, settings: LorisSettings | None = None, *,
          valid_records: Sequence[Record] | None = None, resume: bool = False, progress: bool = True,
          should_stop: Callable[[], bool] | None = None, on_epoch: Callable[[dict], None] | None = None,
          device: str | torch.device | None = None, precision: str = "float32") -> dict:
    """Train a LoRIS model on the normal images of ``records`` and save it, calibrated, in ``out_dir``.

    The loop is :func:`lib.training.loop.fit` (early stopping on the validation loss ``valid_loss``, the
    checkpoint, resume, cancel, progress, the epoch records ``on_epoch`` receives).

    Args:
        records: the dataset (all labels; only normal boxed images enter the loss).
        out_dir: the model directory (see :mod:`lib.loris.model_files`).
        settings: defaults to ``LorisSettings()`` (the paper's).
        valid_records: validation set; None = patient-grouped split of ``records`` (``valid_fraction``).
        resume: continue from ``out_dir/checkpoint_last.pt`` when it exists (the split is kept).
        progress: show a tqdm bar (losses, ETA).
        should_stop: polled between mini-batches; True ends training (the best weights are still saved).
        on_epoch: called after every epoch with its record (``train`` and ``valid`` loss terms).
        device: "cpu", "cuda", "cuda:N", or None/"auto" (several processes: each rank's own GPU).
        precision: the forward's precision while training (``float32``, ``bf16``, ``fp16``).

    Returns:
        the summary of :func:`lib.training.loop.fit` (``epochs_run, best_epoch, monitor, best_value, stopped,
        resumed, device, seconds, history, world_size, rank, rank_epochs``) plus ``model_dir, n_train, n_valid,
        n_valid_distended, valid_source`` (``valid`` or ``train``: no normal validation image), ``precision``,
        ``calibration`` (None on ranks other than 0, which write nothing).

    Raises:
        DataError: no normal boxed training image, unreadable image, bad box.
        ModelError: ``resume`` with a checkpoint of a different network.
    """
    with distributed.process_group(device) as world:
        return _train(records, out_dir, settings or LorisSettings(), valid_records, resume, progress, should_stop,
                      on_epoch, device, precision, world)


def _train(records, out_dir, settings: LorisSettings, valid_records, resume, progress, should_stop, on_epoch,
           device, precision: str, world: distributed.World) -> dict:
    out_dir = Path(out_dir)
    dev = distributed.rank_device(device, world)
    amp = Precision(precision, dev)
    started = time.monotonic()

    checkpoint = distributed.from_main(lambda: KIND.load_checkpoint(out_dir), world) if resume else None
    records = list(records)
    if valid_records is None:
        train_records, valid_records = (resumed_split(records, checkpoint)
                                        or split_patients(records, settings.valid_fraction, settings.seed))
    else:
        train_records = records
    train_records = [r for r in labelled_and_boxed(train_records) if r.is_normal]
    valid_records = labelled_and_boxed(valid_records)
    valid_normal = [r for r in valid_records if r.is_normal]
    if not train_records:
        raise DataError("no normal image with a box to train on (LoRIS learns from normal images only)")
    valid_source = "valid"
    if not valid_normal:
        # One patient, or a validation set without normal images: early-stop and calibrate on training images.
        valid_source = "train"
        valid_normal = train_records
        valid_records = train_records + [r for r in valid_records if not r.is_normal]

    train_images = read_boxed_images(train_records)
    valid_images_all = read_boxed_images(valid_records)
    normal_idx = [i for i, r in enumerate(valid_records) if r.is_normal]
    x_train, b_train = preprocess.batch(train_images, [r.box for r in train_records], settings.image_size)
    x_valid, b_valid = preprocess.batch([valid_images_all[i] for i in normal_idx],
                                        [valid_records[i].box for i in normal_idx], settings.image_size)
    x_train, b_train, x_valid, b_valid = (t.to(dev) for t in (x_train, b_train, x_valid, b_valid))

    torch.manual_seed(settings.seed)
    network, forward = distributed.data_parallel(build_network(settings).to(dev), world)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    loss_fn = LorisLoss(settings.ssim_win_size, settings.msgms_scales, settings.msgms_c).to(dev)
    generator = torch.Generator().manual_seed(settings.seed)
    n, bs = x_train.shape[0], settings.batch_size

    def train_epoch(epoch: int, stop: Callable[[], bool]) -> dict | None:
        forward.train()
        order = distributed.epoch_order(n, epoch, settings.seed, world, generator)
        if len(order) > 1 and len(order) % bs == 1:
            order = order[:-1]  # a batch of one breaks BatchNorm (the same length on every rank)
        sums, seen = dict.fromkeys(LOSS_TERMS, 0.0), 0
        for i in range(0, len(order), bs):
            if stop():
                return None
            idx = order[i:i + bs].to(dev)
            xb, bb = x_train[idx], b_train[idx]
            if settings.augment:
                xb, bb = augment(xb, bb, settings, generator)
            with amp.autocast():
                recon = reconstruct(forward, xb, bb, settings, generator=generator, training=True)[0]
            terms = loss_fn(recon.float(), xb)
            optimizer.zero_grad(set_to_none=True)
            amp.step(terms["loss"], optimizer)
            for k, v in terms.items():
                sums[k] += float(v.detach()) * xb.shape[0]
            seen += xb.shape[0]
        return {**{k: v / max(seen, 1) for k, v in sums.items()}, "images": seen}

    valid_shard = distributed.shard(x_valid.shape[0], world).to(dev)

    def validate() -> dict:
        terms = _mean_terms(network, loss_fn, x_valid[valid_shard], b_valid[valid_shard], settings, max(bs, 16),
                            torch.Generator().manual_seed(settings.seed + 1), amp)
        return {**{f"valid_{k}": v for k, v in terms.items()}, "images": len(valid_shard)}

    if checkpoint is not None:
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate
    result = fit(kind=KIND, out_dir=out_dir, settings=settings, network=network, train_epoch=train_epoch,
                 validate=validate, monitor="valid_loss", mode="min",
                 stateful={"optimizer": optimizer, "generator": TorchGenerator(generator), **amp.stateful()},
                 network_fields=NETWORK_FIELDS, checkpoint=checkpoint,
                 extra_checkpoint={"valid_images": [r.image for r in valid_records] if valid_source == "valid" else None},
                 progress=progress, should_stop=should_stop, on_epoch=on_epoch, desc="LoRIS train", device=dev,
                 world=world)
    if result.best_state is None:
        raise DataError("training was stopped before the first epoch ended; no model saved")
    summary = {"model_dir": str(out_dir), **result.summary, "n_train": len(train_records),
               "n_valid": len(valid_normal), "n_valid_distended": sum(r.label == "distended" for r in valid_records),
               "valid_source": valid_source, "precision": precision}
    if not world.is_main:
        return {**summary, "seconds": time.monotonic() - started, "calibration": None}
    network.load_state_dict(result.best_state)
    calibration = calibrate(LorisPredictor(network, settings, None, dev), valid_records, valid_images_all)
    summary["seconds"] = time.monotonic() - started
    info = {k: v for k, v in summary.items() if k != "history"}
    save_model(out_dir, settings, result.best_state, calibration,
               dict(info, train_images=[r.image for r in train_records], valid_images=[r.image for r in valid_records]))
    summary["calibration"] = calibration
    return summary

