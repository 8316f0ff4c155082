"""DetectorSettings: every default of the recess detector, in one visible place.

Parsed once into a typed object, validated at construction (errors name the
field, the bad value and the valid choices), saved with the model and read
back from it, so that inference rebuilds exactly the trained network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lib.errors import DataError

MONITORS = ("mean_iou", "map50", "map75")
"""Validation metrics early stopping can follow (all "higher is better")."""

OPTIMIZERS = ("adam", "sgd")


@dataclass
class DetectorSettings:
    """Settings of the RetinaNet recess detector.

    Geometry:
        image_size: side ``S`` of the square network input; images are resized (not padded) to ``S x S``.
            Must be a multiple of 32 (the coarsest feature map is ``S / 32``).

    Network (``monai.apps.detection`` RetinaNet on a small MONAI ResNet + FPN, trained from scratch):
        base_channels: channels of the first ResNet stage; stages have ``c, 2c, 4c, 8c``.
        blocks_per_stage: basic residual blocks in each of the four ResNet stages.
        fpn_channels: channels of every FPN level and of the heads (multiple of 8: GroupNorm(8) in the heads).
        anchor_size: side of a square anchor of the finest level, as a fraction of ``S``. Levels are at
            strides 4, 8, 16, 32 and their anchors are 1x, 2x, 4x, 8x this size.
        anchor_aspect_ratios: anchor width / height. Normal recesses are wide, flat boxes (4:1, 2:1);
            distended ones are taller (1:1). Each ratio keeps the area of the square anchor.

    Training (normal images only):
        max_epochs, patience: early stopping on the validation ``monitor`` (higher is better).
        batch_size, learning_rate, weight_decay, optimizer.
        plateau_patience, plateau_factor: the learning rate is multiplied by ``plateau_factor`` after
            ``plateau_patience`` epochs without validation improvement (``ReduceLROnPlateau``); factor 1 (the
            default) disables it: on the sample data (fold 0, quick preset) a factor 0.3 after 4 epochs stopped
            earlier and did not improve the held-out mean IoU (0.571 vs 0.579).
        valid_fraction: share of patients held out for validation when no validation set is given.
        seed: for the split, the initialisation and the augmentations.
        atss_candidates: ATSS matcher candidates per level (``monai`` ``ATSSMatcher(num_candidates)``).
        sampler_per_image, sampler_positive_fraction, sampler_min_negatives, sampler_pool_size:
            hard-negative sampler (``monai`` ``HardNegativeSampler``).
        box_loss: ``"giou"`` (``monai`` ``BoxGIoULoss`` on decoded boxes) or ``"smooth_l1"`` (on encoded deltas).

    Augmentation (keeps the box exact: geometry is applied to image and box together):
        augment: switch everything below off at once.
        scale_range: zoom factor drawn uniformly in ``[1 - r, 1 + r]`` (>1 zooms in).
        translate_fraction: shift of the crop window, as a fraction of the image side.
        flip: horizontal flip with probability 0.5. Off by default: in a longitudinal knee scan the
            proximal/distal direction is an acquisition convention, so flipping is only valid for a
            dataset that mixes both conventions.
        gain_range: intensity gain drawn in ``[1 - g, 1 + g]``; gamma_range: gamma drawn in ``[1 - r, 1 + r]``;
        noise_std: std of additive Gaussian noise (image in [0, 1]).
        negative_fraction: share of training samples replaced by a recess-free image (a uniform level with
            or without speckle-like noise) with no box, so that the detector learns to answer "nothing
            found" rather than to place a box on any image.

    Inference:
        score_threshold: a box is reported only when its confidence reaches this value; below it the
            answer is "nothing found".
        nms_threshold: IoU of non-maximum suppression among candidate boxes.
    """

    image_size: int = 256
    base_channels: int = 16
    blocks_per_stage: int = 1
    fpn_channels: int = 32
    anchor_size: float = 1.0 / 16.0
    anchor_aspect_ratios: tuple[float, ...] = (4.0, 2.0, 1.0)

    max_epochs: int = 200
    patience: int = 25
    batch_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    plateau_patience: int = 8
    plateau_factor: float = 1.0
    valid_fraction: float = 0.2
    seed: int = 0
    monitor: str = "mean_iou"
    atss_candidates: int = 4
    sampler_per_image: int = 64
    sampler_positive_fraction: float = 0.3
    sampler_min_negatives: int = 16
    sampler_pool_size: float = 20.0
    box_loss: str = "giou"

    augment: bool = True
    scale_range: float = 0.15
    translate_fraction: float = 0.08
    flip: bool = False
    gain_range: float = 0.2
    gamma_range: float = 0.25
    noise_std: float = 0.02
    negative_fraction: float = 0.2

    score_threshold: float = 0.3
    nms_threshold: float = 0.3

    def __post_init__(self) -> None:
        self.anchor_aspect_ratios = tuple(float(r) for r in self.anchor_aspect_ratios)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DataError` naming the first bad field, its value and what is allowed."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise DataError(f"detector setting {name}={getattr(self, name)!r}: {what}")

        need(isinstance(self.image_size, int) and self.image_size >= 32 and self.image_size % 32 == 0,
             "image_size", "must be a positive multiple of 32 (e.g. 128, 256)")
        need(self.base_channels >= 4, "base_channels", "must be at least 4")
        need(self.blocks_per_stage >= 1, "blocks_per_stage", "must be at least 1")
        need(self.fpn_channels >= 8 and self.fpn_channels % 8 == 0, "fpn_channels", "must be a positive multiple of 8")
        need(0.0 < self.anchor_size <= 0.5, "anchor_size", "must be a fraction of the image side in (0, 0.5]")
        need(len(self.anchor_aspect_ratios) >= 1 and all(r > 0 for r in self.anchor_aspect_ratios),
             "anchor_aspect_ratios", "must be one or more positive width/height ratios")
        need(self.max_epochs >= 1, "max_epochs", "must be at least 1")
        need(self.patience >= 1, "patience", "must be at least 1")
        need(self.batch_size >= 1, "batch_size", "must be at least 1")
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(self.weight_decay >= 0, "weight_decay", "must be zero or positive")
        need(self.plateau_patience >= 1, "plateau_patience", "must be at least 1")
        need(0.0 < self.plateau_factor <= 1.0, "plateau_factor", "must be in (0, 1] (1 disables the decay)")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"valid choices are {', '.join(OPTIMIZERS)}")
        need(0.0 <= self.valid_fraction < 1.0, "valid_fraction", "must be in [0, 1)")
        need(self.monitor in MONITORS, "monitor", f"valid choices are {', '.join(MONITORS)}")
        need(self.atss_candidates >= 1, "atss_candidates", "must be at least 1")
        need(self.sampler_per_image >= 2, "sampler_per_image", "must be at least 2")
        need(0.0 < self.sampler_positive_fraction < 1.0, "sampler_positive_fraction", "must be in (0, 1)")
        need(self.sampler_min_negatives >= 0, "sampler_min_negatives", "must be zero or positive")
        need(self.sampler_pool_size >= 1, "sampler_pool_size", "must be at least 1")
        need(self.box_loss in ("giou", "smooth_l1"), "box_loss", "valid choices are giou, smooth_l1")
        need(0.0 <= self.scale_range < 0.5, "scale_range", "must be in [0, 0.5)")
        need(0.0 <= self.translate_fraction < 0.5, "translate_fraction", "must be in [0, 0.5)")
        need(0.0 <= self.gain_range < 1.0, "gain_range", "must be in [0, 1)")
        need(0.0 <= self.gamma_range < 1.0, "gamma_range", "must be in [0, 1)")
        need(self.noise_std >= 0, "noise_std", "must be zero or positive")
        need(0.0 <= self.negative_fraction < 1.0, "negative_fraction", "must be in [0, 1)")
        need(0.0 <= self.score_threshold <= 1.0, "score_threshold", "must be a confidence in [0, 1]")
        need(0.0 < self.nms_threshold <= 1.0, "nms_threshold", "must be an IoU in (0, 1]")

    @classmethod
    def quick(cls, **overrides) -> "DetectorSettings":
        """A CPU preset: 128 px input, short schedule. Minutes on two cores for a few hundred images."""
        values = dict(image_size=128, max_epochs=40, patience=10, plateau_patience=4, batch_size=8)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["anchor_aspect_ratios"] = list(self.anchor_aspect_ratios)
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "detector settings") -> "DetectorSettings":
        """Build from a dict (a saved model, a request); unknown keys are an error that lists the valid ones."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object of settings, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise DataError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid settings are {', '.join(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DataError(f"{where}: {exc}") from None
