"""LoRIS settings: the one place where every default of the method lives.

Defaults follow the paper and its reference code (``docs/method.md``): the
reference U-Net (a full-resolution stage and skips at every resolution,
channels 64-128-256-512-512), Adam, learning rate 1e-4, batch 4, up to 1000
epochs with early stopping patience 50 on the validation loss, no
augmentation, 256 x 256 images in ``[-1, 1]``, MSGMSD map, mean pooling of the
map in the box. Where the paper and the reference code disagree the choice is
a setting (``pooling="max"``, ``score_region="image"`` is the reference code).

Settings are parsed once into :class:`LorisSettings` (from CLI flags, a MONAI
Label request or a model's ``model.json``); :meth:`LorisSettings.validate`
raises a :class:`~lib.errors.DataError` that names the field and lists the
valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lib.errors import DataError
from lib.training.settings import ModelSettings

METRICS = ("msgmsd", "gmsd", "dd", "ssim", "l2")
"""Anomaly-map metrics (see :mod:`lib.loris.anomaly`)."""

POOLINGS = ("mean", "max")
"""Image score = pooling of the anomaly map: ``mean`` (paper) or ``max`` (reference code)."""

SCORE_REGIONS = ("box", "image")
"""Where the image score pools the map: inside the ``box`` (LoRIS's location prior) or over the whole ``image``
(the reference code for MSGMSD, and how RIAD and plain autoencoders score)."""

ARCHITECTURES = ("reference", "unet")
"""``reference``: the reference code's U-Net (full-resolution stage and skip); ``unet``: MONAI's ``UNet``
(first stage strided). See :mod:`lib.loris.network`."""

NETWORKS = {
    "reference": dict(architecture="reference", channels=(64, 128, 256, 512, 512), strides=(2, 2, 2, 2),
                      num_res_units=0),
    "unet": dict(architecture="unet", channels=(16, 32, 64, 128, 128), strides=(2, 2, 2, 2), num_res_units=1),
}
"""The network fields of each architecture at its default size: the paper's reference U-Net, and the small
MONAI ``UNet`` of earlier CPU presets (``train --architecture unet``)."""

MODES = ("loris", "autoencoder", "riad")
"""Network input: ``loris`` = the box filled with black (one mask, one pass); ``autoencoder`` = the
unmasked image; ``riad`` = RIAD's disjoint random grid masks at several cell sizes, stitched."""

NORMS = ("batch", "instance")


@dataclass
class LorisSettings(ModelSettings):
    """Everything that defines a LoRIS model and how it is trained.

    Attributes:
        image_size: side ``S`` of the square network grid; images are resized (not padded) to ``S x S``.
        architecture: one of :data:`ARCHITECTURES`.
        channels: feature channels per level, the first (full-resolution for ``reference``) first;
            one more than ``strides``.
        strides: down-sampling stride between levels (``reference``: all 2); ``S`` must be divisible
            by their product.
        num_res_units: residual units per block of the MONAI ``unet`` (0 = plain Conv-Norm-Act blocks;
            must be 0 for ``reference``).
        norm: normalization layer in the UNet (``batch`` as in the reference code).
        dropout: UNet dropout probability.
        mode: network input, one of :data:`MODES`.
        riad_cell_sizes: RIAD grid cell sizes in pixels *at 256 px* (scaled with ``image_size``).
        riad_masks: number of disjoint RIAD masks per cell size.
        metric: the metric of the image score and decision, one of :data:`METRICS` (MSGMSD: the paper's
            best image-level detection).
        pixel_metric: the metric of the served anomaly map and segmentation (DD: the paper's best
            segmentation); a request for one metric gets that metric's map and segmentation.
        pooling: image score pooling, one of :data:`POOLINGS`.
        score_region: where the score pools the map, one of :data:`SCORE_REGIONS`.
        segment_in_box: keep segmentation pixels inside the box only (the recess lives there;
            the paper does not say; set False to segment the whole image).
        max_epochs, patience: training length and early-stopping patience (epochs) on the validation loss.
        batch_size, learning_rate: Adam mini-batch size and learning rate.
        valid_fraction: share of patients put in validation when no validation set is given.
        target_fpr: false-positive rate on normal validation images used by calibration when
            validation holds no distended image (image threshold) or no mask (pixel threshold).
        normal_box_share: the pixel threshold's cap: at most this share of the box pixels of normal
            validation images may be segmented (so that a normal image's segmentation stays small, see
            :mod:`lib.loris.calibration`); 1: no cap.
        seed: seed of the split, the initialization, the shuffling and the augmentations.
        augment: random box jitter and intensity gain during training (off, as in the paper).
        box_jitter: largest box shift/resize, as a fraction of the box side.
        gain: largest relative intensity gain change (``x * U(1-gain, 1+gain)`` in ``[0, 1]``).
        msgms_c: the GMS stability constant ``c``.
        msgms_scales: number of MSGMS scales (original + successive 2x2 average poolings).
        ssim_win_size: SSIM Gaussian window size (loss and ``ssim`` map).
    """

    image_size: int = 256
    architecture: str = "reference"
    channels: tuple[int, ...] = (64, 128, 256, 512, 512)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 0
    norm: str = "batch"
    dropout: float = 0.0
    mode: str = "loris"
    riad_cell_sizes: tuple[int, ...] = (2, 4, 8, 16)
    riad_masks: int = 3
    metric: str = "msgmsd"
    pixel_metric: str = "dd"
    pooling: str = "mean"
    score_region: str = "box"
    segment_in_box: bool = True
    max_epochs: int = 1000
    patience: int = 50
    batch_size: int = 4
    learning_rate: float = 1e-4
    valid_fraction: float = 0.2
    target_fpr: float = 0.05
    normal_box_share: float = 0.05
    seed: int = 0
    augment: bool = False
    box_jitter: float = 0.05
    gain: float = 0.1
    msgms_c: float = 0.0026
    msgms_scales: int = 4
    ssim_win_size: int = 11

    QUICK: ClassVar[dict] = dict(
        image_size=128,
        architecture="reference",
        channels=(8, 16, 32, 64, 128),
        strides=(2, 2, 2, 2),
        num_res_units=0,
        max_epochs=100,
        patience=25,
        learning_rate=2e-3,
        ssim_win_size=7,
    )
    """The CPU demo preset (:meth:`quick`): 128 px, the reference U-Net's design (full-resolution stage and skip)
    with channels 8-16-32-64-128 (0.7 M parameters), Adam 2e-3, 100 epochs, patience 25. Not the paper's
    configuration; why these channels: ``docs/quick-preset.md``."""

    def validate(self) -> "LorisSettings":
        """Check every field; raise :class:`DataError` naming the field and the valid values."""

        def choice(name, value, valid):
            if value not in valid:
                raise DataError(f"settings.{name}: unknown value {value!r}; valid values are {', '.join(valid)}")

        def positive_int(name, value, minimum=1):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise DataError(f"settings.{name}: must be an integer >= {minimum}, got {value!r}")

        choice("metric", self.metric, METRICS)
        choice("pixel_metric", self.pixel_metric, METRICS)
        choice("pooling", self.pooling, POOLINGS)
        choice("score_region", self.score_region, SCORE_REGIONS)
        choice("architecture", self.architecture, ARCHITECTURES)
        choice("mode", self.mode, MODES)
        choice("norm", self.norm, NORMS)
        positive_int("image_size", self.image_size, 8)
        positive_int("num_res_units", self.num_res_units, 0)
        positive_int("max_epochs", self.max_epochs)
        positive_int("patience", self.patience)
        positive_int("batch_size", self.batch_size)
        positive_int("riad_masks", self.riad_masks, 2)
        positive_int("msgms_scales", self.msgms_scales)
        positive_int("ssim_win_size", self.ssim_win_size, 3)
        if self.ssim_win_size % 2 == 0:
            raise DataError(f"settings.ssim_win_size: must be odd, got {self.ssim_win_size}")
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise DataError(
                f"settings.channels/strides: need at least 2 channels and len(strides) == len(channels) - 1, "
                f"got channels={list(self.channels)} strides={list(self.strides)}"
            )
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (*self.channels, *self.strides, *self.riad_cell_sizes)):
            raise DataError(f"settings.channels/strides/riad_cell_sizes: must be whole numbers, got "
                            f"{list(self.channels)}, {list(self.strides)}, {list(self.riad_cell_sizes)}")
        if any(c < 1 for c in self.channels) or any(s < 1 for s in self.strides):
            raise DataError(f"settings.channels/strides: must be positive, got {list(self.channels)}, {list(self.strides)}")
        if self.architecture == "reference" and (any(s != 2 for s in self.strides) or self.num_res_units):
            raise DataError(
                f"settings.strides/num_res_units: the reference architecture halves the size at every level "
                f"(strides all 2) and has no residual units, got strides={list(self.strides)} "
                f"num_res_units={self.num_res_units}"
            )
        factor = 1
        for s in self.strides:
            factor *= s
        if self.image_size % factor:
            raise DataError(f"settings.image_size: {self.image_size} is not divisible by the product of strides ({factor})")
        if self.image_size % (2 ** (self.msgms_scales - 1)):
            raise DataError(
                f"settings.image_size: {self.image_size} is not divisible by 2^(msgms_scales-1) = {2 ** (self.msgms_scales - 1)}"
            )
        if not self.riad_cell_sizes or any(c < 1 for c in self.riad_cell_sizes):
            raise DataError(f"settings.riad_cell_sizes: need positive sizes, got {list(self.riad_cell_sizes)}")
        if not isinstance(self.normal_box_share, (int, float)) or isinstance(self.normal_box_share, bool) \
                or not 0.0 < self.normal_box_share <= 1.0:
            raise DataError(f"settings.normal_box_share: must be a number in (0, 1] (1: no cap), "
                            f"got {self.normal_box_share!r}")
        for name, lo, hi in (("dropout", 0.0, 1.0), ("valid_fraction", 0.0, 1.0), ("target_fpr", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value < hi:
                raise DataError(f"settings.{name}: must be a number in [{lo}, {hi}), got {value!r}")
        for name in ("learning_rate", "msgms_c"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise DataError(f"settings.{name}: must be a positive number, got {value!r}")
        for name in ("box_jitter", "gain"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 0.5:
                raise DataError(f"settings.{name}: must be a number in [0, 0.5), got {value!r}")
        if not isinstance(self.segment_in_box, bool) or not isinstance(self.augment, bool):
            raise DataError("settings.segment_in_box / settings.augment: must be true or false")
        if not isinstance(self.seed, int):
            raise DataError(f"settings.seed: must be an integer, got {self.seed!r}")
        return self

    def riad_cells(self) -> tuple[int, ...]:
        """RIAD cell sizes in pixels on this ``image_size`` (the 256 px sizes scaled, at least 1, unique)."""
        scaled = [max(1, int(round(c * self.image_size / 256))) for c in self.riad_cell_sizes]
        return tuple(dict.fromkeys(scaled))
