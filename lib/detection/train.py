"""Training the recess detector on normal images only, with the habits of LoRIS training.

- Only *normal* images with a box are trained on: a detector that saw distended
  recesses would learn what the anomaly looks like and leak it into LoRIS.
  (Its augmentations include a synthetic swelling of the normal recess,
  :func:`lib.detection.augment.bulge`, so that a distended recess, taller
  and darker, is still boxed.)
- Validation is patient-grouped (:func:`lib.data.splits.split_train_valid`) unless
  ``valid_records`` is given; its metrics (MONAI's COCO metric,
  :mod:`lib.detection.metrics`) are recorded every epoch.
- Schedule ``"cosine"`` (default): the learning rate decays to zero over
  ``max_epochs`` and the model of the last epoch is kept. On a handful of
  validation patients the epoch with the best validation score is mostly
  luck (measured in ``lib/detection/README.md``). Schedule ``"plateau"``:
  constant learning rate (optionally reduced on plateaus), early stopping on
  ``settings.monitor``, the best epoch is kept.
- The kept checkpoint (weights + settings) is written atomically; ``last.pt``
  after every epoch makes training resumable. At the end the confidence floor
  is calibrated on the validation images (:mod:`lib.detection.calibrate`) and
  stored with the model.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.data.imageio import read_boxed_images
from lib.data.records import Record
from lib.data.splits import split_train_valid
from lib.detection.augment import BoxAugmenter
from lib.detection.calibrate import calibrate
from lib.detection.infer import RecessDetector
from lib.detection.losses import detector_loss
from lib.detection.metrics import box_metrics
from lib.detection.model_files import load_best, load_last, save_best, save_last, write_info
from lib.detection.network import build_network
from lib.detection.preprocess import network_box
from lib.detection.settings import DetectorSettings
from lib.errors import DataError, ModelError

ARCHITECTURE_FIELDS = ("image_size", "image_aspect", "base_channels", "blocks_per_stage", "fpn_channels")
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


def _rank(metrics: dict, monitor: str) -> tuple[float, float]:
    # Ties of the monitored metric (e.g. mAP@75 at zero in the first epochs) are broken by the mean IoU.
    return (metrics[monitor], metrics["mean_iou"])


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
    """Train the recess detector, calibrate its confidence floor and write its model directory.

    Args:
        records: the dataset (any labels; only normal images with a box are trained on). When
            ``valid_records`` is None they are split by patient (``settings.valid_fraction``).
        out_dir: model directory (see :mod:`lib.detection.model_files`); created if needed.
        settings: :class:`DetectorSettings`; defaults when None.
        valid_records: an explicit validation set (e.g. a cross-validation fold's); its normal boxed
            images are validated on every epoch and calibrate the confidence floor, and the final report
            also covers its distended ones.
        resume: continue from ``out_dir/last.pt`` when it exists (same architecture settings required);
            otherwise start from scratch.
        progress: show a tqdm progress bar (one step per epoch).
        should_stop: called between batches; returning True ends training after saving what is kept so far.
        on_epoch: called after every epoch with ``{"epoch", "loss", "heatmap_loss", "box_loss", "learning_rate",
            "valid", "best_epoch", "best", "seconds"}`` (``valid``: the validation metrics of that epoch, every
            image's best box counted; ``learning_rate``: the one the next epoch will use; ``best_epoch``: the
            epoch kept so far).
        device: torch device; CUDA when available if None.

    Returns:
        a summary: ``{"model_dir", "epochs_run", "best_epoch" (the kept epoch), "monitor", "best_value",
        "stopped" ("early_stopping" | "max_epochs" | "should_stop"), "n_train", "n_valid", "valid_source"
        ("held-out patients" | "given" | "training images (no held-out patients)"), "validation" (normal
        validation images, kept model), "validation_all" (all boxed validation images, normal and distended,
        kept model, calibrated floor), "calibration" (:func:`lib.detection.calibrate.calibrate`), "seconds"}``.

    Raises:
        DataError: no normal image with a box to train on, or a box that leaves its image.
        ModelError: ``resume`` with a ``last.pt`` of another architecture.
    """
    settings = settings or DetectorSettings()
    started = time.time()
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if valid_records is None:
        train_records, valid_records = split_train_valid(list(records), settings.valid_fraction, settings.seed)
        valid_source = "held-out patients"
    else:
        train_records = list(records)
        valid_source = "given"
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
        valid_set, valid_images, valid_source = train_set, train_images, "training images (no held-out patients)"

    network = _new_network(settings, train_set, train_images).to(device)
    optimizer = _make_optimizer(settings, network.parameters())
    scheduler = _make_scheduler(settings, optimizer)
    keep_last = settings.schedule == "cosine"
    rng = np.random.default_rng(settings.seed)
    augmenter = BoxAugmenter(settings, seed=settings.seed)
    start_epoch, best_epoch, best_rank, bad_epochs, history = 0, None, None, 0, []
    best_state, best_valid = None, None

    last = load_last(out_dir) if resume else None
    if last is not None:
        saved = DetectorSettings.from_dict(last["settings"], where=f"{out_dir / 'last.pt'}: settings")
        changed = [f for f in ARCHITECTURE_FIELDS if getattr(saved, f) != getattr(settings, f)]
        if changed:
            raise ModelError(
                f"{out_dir}: cannot resume, the saved run has different {', '.join(changed)} "
                f"({', '.join(f'{f}={getattr(saved, f)!r}' for f in changed)}); train without --resume or "
                f"use the same settings"
            )
        network.load_state_dict(last["network"])
        optimizer.load_state_dict(last["optimizer"])
        if scheduler is not None and last.get("scheduler") and saved.schedule == settings.schedule:
            scheduler.load_state_dict(last["scheduler"])
        start_epoch, bad_epochs, history = last["epoch"] + 1, last["bad_epochs"], list(last["history"])
        best_epoch = last["best_epoch"]
        best_rank = tuple(last["best_rank"]) if last["best_rank"] is not None else None
        rng.bit_generator.state = last["rng"]
        torch.set_rng_state(last["torch_rng"])
        augmenter = BoxAugmenter(settings, seed=settings.seed + start_epoch)
        if best_epoch is not None:
            best = load_best(out_dir)
            best_state, best_valid = best["network"], best["validation"]

    stopped = "max_epochs"
    bar = tqdm(total=settings.max_epochs, initial=start_epoch, disable=not progress, desc="detector", unit="epoch")
    for epoch in range(start_epoch, settings.max_epochs):
        if not keep_last and bad_epochs >= settings.patience:
            stopped = "early_stopping"
            break
        tic = time.time()
        network.train()
        order = rng.permutation(len(train_set))
        sums, batches, interrupted = np.zeros(2), 0, False
        for b in range(0, len(order), settings.batch_size):
            if should_stop is not None and should_stop():
                interrupted = True
                break
            views = [
                (augmenter.negative(train_images[i], train_set[i].box), None)
                if rng.random() < settings.negative_fraction else augmenter(train_images[i], train_set[i].box)
                for i in order[b : b + settings.batch_size]
            ]
            images = torch.stack([v[0] for v in views]).to(device)
            losses = detector_loss(*network(images), [v[1] for v in views], settings.heatmap_sigma,
                                   settings.box_weight)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            sums += [float(losses["heatmap"].detach()), float(losses["box"].detach())]
            batches += 1
        if interrupted:
            stopped = "should_stop"
            break

        valid = _validate(network, settings, valid_images, valid_set, device)
        rank = _rank(valid, settings.monitor)
        if keep_last or best_rank is None or rank > best_rank:
            best_rank, best_epoch, bad_epochs = rank, epoch, 0
            best_state = copy.deepcopy(network.state_dict())
            best_valid = valid
            save_best(out_dir, settings=settings.to_dict(), network_state=best_state, epoch=epoch,
                      monitor=settings.monitor, validation=valid)
        else:
            bad_epochs += 1
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(rank[0])
        elif scheduler is not None:
            scheduler.step()
        heatmap_loss, box_loss = (sums / max(batches, 1)).tolist()
        record = {"epoch": epoch, "loss": heatmap_loss + settings.box_weight * box_loss,
                  "heatmap_loss": heatmap_loss, "box_loss": box_loss,
                  "learning_rate": optimizer.param_groups[0]["lr"],
                  "valid": valid, "best_epoch": best_epoch, "best": best_valid[settings.monitor],
                  "seconds": time.time() - tic}
        history.append(record)
        save_last(out_dir, {
            "settings": settings.to_dict(), "network": network.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            "epoch": epoch, "bad_epochs": bad_epochs, "best_epoch": best_epoch,
            "best_rank": list(best_rank), "history": history, "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        })
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", **{settings.monitor: f"{valid[settings.monitor]:.3f}"},
                        kept=f"{record['best']:.3f}@{best_epoch}")
        if on_epoch is not None:
            on_epoch(record)
    else:
        if not keep_last and bad_epochs >= settings.patience:
            stopped = "early_stopping"
    bar.close()

    summary = {
        "model_dir": str(out_dir),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "monitor": settings.monitor,
        "best_value": best_valid[settings.monitor] if best_valid else None,
        "stopped": stopped,
        "n_train": len(train_set),
        "n_valid": len(valid_set),
        "valid_source": valid_source,
        "validation": best_valid,
        "validation_all": None,
        "calibration": None,
        "seconds": None,
    }
    if best_state is not None:
        network.load_state_dict(best_state)
        calibration = calibrate(RecessDetector(network, settings, device), valid_images,
                                [r.box for r in valid_set], seed=settings.seed)
        summary["calibration"] = calibration
        save_best(out_dir, settings=settings.to_dict(), network_state=best_state, epoch=best_epoch,
                  monitor=settings.monitor, validation=best_valid, calibration=calibration)
        threshold = RecessDetector(network, settings, device, {"calibration": calibration}).score_threshold
        if valid_all and valid_source != "training images (no held-out patients)":
            others = [r for r in valid_all if r.label != "normal"]
            images_all = valid_images + read_boxed_images(others)
            summary["validation_all"] = _validate(network, settings, images_all, valid_set + others, device,
                                                  threshold)
        summary["seconds"] = time.time() - started
        write_info(out_dir, {"settings": settings.to_dict(), "epoch": best_epoch, "monitor": settings.monitor,
                             "validation": best_valid, "calibration": calibration, "training": summary})
    summary["seconds"] = time.time() - started
    return summary
