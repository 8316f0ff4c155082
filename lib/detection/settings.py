"""DetectorSettings: every default of the recess detector, in one visible place.

Parsed once into a typed object, validated at construction (errors name the
field, the bad value and the valid choices), saved with the model and read
back from it, so that inference rebuilds exactly the trained network. The
shared methods (``quick``, ``replace``, ``to_dict``, ``from_dict``) come from
:class:`lib.training.settings.ModelSettings`, the base of both models' settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from lib.errors import DataError
from lib.training.settings import ModelSettings

MONITORS = ("mean_iou", "map50", "map75")
"""Validation metrics early stopping can follow (all "higher is better")."""

OPTIMIZERS = ("adam", "sgd")

SCHEDULES = ("cosine", "plateau")

STRIDE = 32
"""The network input's sides must divide by this (the coarsest backbone stage)."""


@dataclass
class DetectorSettings(ModelSettings):
    """Settings of the single-box recess detector (see :mod:`lib.detection.network`).

    Geometry:
        image_size: width ``S`` of the network input in pixels, a multiple of 32. Images are resized (not
            padded) to ``S x S_h``.
        image_aspect: height / width of the network input; its height ``S_h`` is ``S * image_aspect`` rounded
            to a multiple of 32 (at least 32). 0.75 keeps the 4:3 shape of the 640 x 480 frames scanners
            export, so a recess is not squashed: ``256`` gives a 256 x 192 input.

    Network (a small MONAI ResNet + FPN, trained from scratch, and a one-box head at stride 4):
        base_channels: channels of the first ResNet stage; stages have ``c, 2c, 4c, 8c``.
        blocks_per_stage: basic residual blocks in each of the four ResNet stages.
        fpn_channels: channels of the FPN and of the head (multiple of 4: GroupNorm(4) in the head).

    Targets, losses and decoding (:mod:`lib.detection.losses`, :func:`lib.detection.network.decode`):
        heatmap_sigma: the centre heatmap's Gaussian has, along each axis, a standard deviation of this
            fraction of the box side (an elongated Gaussian for an elongated box).
        box_weight: weight of the box loss (GIoU + L1 of the edges) against the heatmap's focal loss.
        edge_vote: each edge of the answer is re-estimated by the cells inside the box, weighted by
            ``exp(-distance to that edge / (edge_vote * box side))``; 0 keeps the centre cells' box.

    Training (normal images only):
        max_epochs: number of epochs (``cosine``) or their maximum (``plateau``).
        schedule: ``"cosine"``: the learning rate decays to 0 over ``max_epochs`` and the last epoch's model is
            kept; ``"plateau"``: constant learning rate (see ``plateau_*``), early stopping after ``patience``
            epochs without improvement of the validation ``monitor``, the best epoch's model is kept.
        patience, monitor: early stopping of the ``plateau`` schedule (``monitor`` is higher-is-better and
            is also what the training summary reports).
        batch_size, learning_rate, weight_decay, optimizer.
        plateau_patience, plateau_factor: (``plateau`` schedule) the learning rate is multiplied by
            ``plateau_factor`` after ``plateau_patience`` epochs without validation improvement; factor 1
            disables it.
        valid_fraction: share of patients held out for validation when no validation set is given.
        seed: for the split, the initialisation and the augmentations.

    Augmentation (keeps the box exact: geometry is applied to image and box together):
        augment: switch everything below off at once.
        scale_range: zoom factor drawn uniformly in ``[1 - r, 1 + r]`` (>1 zooms in).
        stretch_range: an extra vertical zoom drawn in ``[1 - r, 1 + r]`` (taller or flatter recesses:
            distended recesses, never trained on, are taller).
        translate_fraction: shift of the crop window, as a fraction of the image side.
        flip: horizontal flip with probability 0.5. Off by default: in a longitudinal knee scan the
            proximal/distal direction is an acquisition convention, so flipping is only valid for a
            dataset that mixes both conventions.
        gain_range: intensity gain drawn in ``[1 - g, 1 + g]``; gamma_range: gamma drawn in ``[1 - r, 1 + r]``;
        noise_std: std of additive Gaussian noise (image in [0, 1]).
        negative_fraction: share of training samples replaced by a frame without a recess and no box
            (:mod:`lib.detection.negatives`: the training image with its recess erased, or a uniform or
            speckle frame), so that the detector learns to answer "nothing found".
        bulge_fraction, bulge_swell: share of training samples whose recess is swollen into a lens of fluid
            (:func:`lib.detection.augment.bulge`: the line stretched into a lens growing by up to
            ``bulge_swell`` box heights on each side, the tissue around pushed away, the lens darkened; the box
            follows), so that a distended recess, never trained on, is still boxed whole.

    Inference:
        score_threshold: a box is reported only when its confidence reaches this value; below it the answer
            is "nothing found". None (the default): the confidence floor calibrated on the validation images
            at the end of training (:mod:`lib.detection.calibrate`). (``replace`` ignores None values, as for
            every model's settings: build from ``to_dict()`` to go back to the calibrated floor.)
        flip_test: also run the horizontally flipped image and average the two boxes (test-time
            augmentation; twice the inference cost). Useful only for a model trained with ``flip``.
    """

    image_size: int = 256
    image_aspect: float = 0.75
    base_channels: int = 16
    blocks_per_stage: int = 1
    fpn_channels: int = 32

    heatmap_sigma: float = 1.0 / 6.0
    box_weight: float = 1.0
    edge_vote: float = 0.3

    max_epochs: int = 160
    schedule: str = "cosine"
    patience: int = 30
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    plateau_patience: int = 8
    plateau_factor: float = 1.0
    valid_fraction: float = 0.2
    seed: int = 0
    monitor: str = "mean_iou"

    augment: bool = True
    scale_range: float = 0.15
    stretch_range: float = 0.2
    translate_fraction: float = 0.08
    flip: bool = False
    gain_range: float = 0.2
    gamma_range: float = 0.25
    noise_std: float = 0.02
    negative_fraction: float = 0.15
    bulge_fraction: float = 0.3
    bulge_swell: float = 0.6

    score_threshold: float | None = None
    flip_test: bool = False

    QUICK: ClassVar[dict] = dict(max_epochs=80)
    """The CPU preset (:meth:`quick`): the same network, input and recipe, half the epochs. About two minutes of
    one core for 75 training images of 640 x 480 (measured in ``lib/detection/README.md``)."""

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the network input in pixels."""
        height = max(STRIDE, int(math.floor(self.image_size * self.image_aspect / STRIDE + 0.5)) * STRIDE)
        return height, self.image_size

    def validate(self) -> "DetectorSettings":
        """Raise :class:`DataError` naming the first bad field, its value and what is allowed; return ``self``."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise DataError(f"detector setting {name}={getattr(self, name)!r}: {what}")

        def number(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        need(isinstance(self.image_size, int) and self.image_size >= STRIDE and self.image_size % STRIDE == 0,
             "image_size", "must be a positive multiple of 32 (e.g. 128, 256)")
        need(number("image_aspect") and 0.25 <= self.image_aspect <= 4.0, "image_aspect",
             "must be a height / width ratio in [0.25, 4]")
        need(isinstance(self.base_channels, int) and self.base_channels >= 4, "base_channels", "must be at least 4")
        need(isinstance(self.blocks_per_stage, int) and self.blocks_per_stage >= 1, "blocks_per_stage",
             "must be at least 1")
        need(isinstance(self.fpn_channels, int) and self.fpn_channels >= 4 and self.fpn_channels % 4 == 0,
             "fpn_channels", "must be a positive multiple of 4")
        need(number("heatmap_sigma") and 0.02 <= self.heatmap_sigma <= 1.0, "heatmap_sigma",
             "must be a fraction of the box side in [0.02, 1]")
        need(number("box_weight") and self.box_weight > 0, "box_weight", "must be positive")
        need(number("edge_vote") and 0.0 <= self.edge_vote <= 10.0, "edge_vote",
             "must be a fraction of the box side in [0, 10] (0: no vote)")
        need(isinstance(self.max_epochs, int) and self.max_epochs >= 1, "max_epochs", "must be at least 1")
        need(isinstance(self.patience, int) and self.patience >= 1, "patience", "must be at least 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be at least 1")
        need(number("learning_rate") and self.learning_rate > 0, "learning_rate", "must be positive")
        need(number("weight_decay") and self.weight_decay >= 0, "weight_decay", "must be zero or positive")
        need(isinstance(self.plateau_patience, int) and self.plateau_patience >= 1, "plateau_patience",
             "must be at least 1")
        need(number("plateau_factor") and 0.0 < self.plateau_factor <= 1.0, "plateau_factor",
             "must be in (0, 1] (1 disables the decay)")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"valid choices are {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"valid choices are {', '.join(SCHEDULES)}")
        need(number("valid_fraction") and 0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")
        need(self.monitor in MONITORS, "monitor", f"valid choices are {', '.join(MONITORS)}")
        need(number("scale_range") and 0.0 <= self.scale_range < 0.5, "scale_range", "must be in [0, 0.5)")
        need(number("stretch_range") and 0.0 <= self.stretch_range < 0.5, "stretch_range", "must be in [0, 0.5)")
        need(number("translate_fraction") and 0.0 <= self.translate_fraction < 0.5, "translate_fraction",
             "must be in [0, 0.5)")
        need(number("gain_range") and 0.0 <= self.gain_range < 1.0, "gain_range", "must be in [0, 1)")
        need(number("gamma_range") and 0.0 <= self.gamma_range < 1.0, "gamma_range", "must be in [0, 1)")
        need(number("noise_std") and self.noise_std >= 0, "noise_std", "must be zero or positive")
        need(number("negative_fraction") and 0.0 <= self.negative_fraction < 1.0, "negative_fraction",
             "must be in [0, 1)")
        need(number("bulge_fraction") and 0.0 <= self.bulge_fraction < 1.0, "bulge_fraction", "must be in [0, 1)")
        need(number("bulge_swell") and 0.05 <= self.bulge_swell <= 2.0, "bulge_swell",
             "must be a fraction of the box height in [0.05, 2]")
        need(self.score_threshold is None or (number("score_threshold") and 0.0 <= self.score_threshold <= 1.0),
             "score_threshold", "must be a confidence in [0, 1], or None for the calibrated floor")
        need(isinstance(self.flip_test, bool), "flip_test", "must be true or false")
        return self
