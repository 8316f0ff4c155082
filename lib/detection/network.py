"""The recess detector network: ``monai.apps.detection`` RetinaNet on a small MONAI ResNet + FPN.

Single class ("recess"), 2D, one grayscale channel, trained from scratch (no
pretrained weights). Built entirely from MONAI parts:

- backbone: ``monai.networks.nets.resnet.ResNet`` (basic blocks, stages
  ``c, 2c, 4c, 8c``), with feature maps of stages 1-3 (strides 4, 8, 16) fed
  to ``monai.networks.blocks.backbone_fpn_utils.BackboneWithFPN`` plus a
  ``LastLevelMaxPool`` level (stride 32). This is exactly what
  ``resnet_fpn_feature_extractor`` assembles, except that helper fixes the FPN
  width to 256 channels, far too heavy for the CPU this project trains on;
  here the width is the ``fpn_channels`` setting.
- ``RetinaNet`` heads, ``AnchorGeneratorWithAnchorShape`` anchors,
- ``RetinaNetDetector`` with the ATSS matcher, the hard-negative sampler, a
  GIoU (or smooth-L1) box loss and NMS box selection.
"""

from __future__ import annotations

import math

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.losses.giou_loss import BoxGIoULoss
from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
from monai.networks.blocks.feature_pyramid_network import LastLevelMaxPool
from monai.networks.nets import resnet

from lib.detection.settings import DetectorSettings

CLASSES = ("recess",)
RETURNED_LAYERS = (1, 2, 3)
"""ResNet stages fed to the FPN: strides 4, 8, 16; the extra max-pool level adds stride 32."""
LEVEL_SCALES = (1, 2, 4, 8)
"""Anchor size multiplier of each FPN level (finest first), matching the level strides 4, 8, 16, 32."""


def anchor_shapes(settings: DetectorSettings) -> list[tuple[float, float]]:
    """Anchor ``(width, height)`` shapes of the finest level, in network pixels.

    Each aspect ratio ``r = width / height`` keeps the area of a square of side
    ``anchor_size * S``: ``width = side * sqrt(r)``, ``height = side / sqrt(r)``.
    """
    side = settings.anchor_size * settings.image_size
    return [(side * math.sqrt(r), side / math.sqrt(r)) for r in settings.anchor_aspect_ratios]


def build_network(settings: DetectorSettings) -> RetinaNet:
    """The trainable part: ResNet + FPN feature extractor and RetinaNet heads, for ``(B, 1, S, S)`` inputs."""
    c = settings.base_channels
    backbone = resnet.ResNet(
        block="basic",
        layers=[settings.blocks_per_stage] * 4,
        block_inplanes=[c, 2 * c, 4 * c, 8 * c],
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        feed_forward=False,
    )
    feature_extractor = BackboneWithFPN(
        backbone,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(RETURNED_LAYERS)},
        in_channels_list=[c * 2 ** (k - 1) for k in RETURNED_LAYERS],
        out_channels=settings.fpn_channels,
        spatial_dims=2,
        extra_blocks=LastLevelMaxPool(2),
    )
    # conv1 (stride 2) and the max-pool (stride 2) before stage 1, then one halving per later stage,
    # and one more for the extra level: inputs must divide by 2 * 2 * 2**max(RETURNED_LAYERS) = 32.
    size_divisible = 2 * 2 * 2 ** max(RETURNED_LAYERS)
    return RetinaNet(
        spatial_dims=2,
        num_classes=len(CLASSES),
        num_anchors=len(settings.anchor_aspect_ratios),
        feature_extractor=feature_extractor,
        size_divisible=size_divisible,
    )


def build_detector(settings: DetectorSettings, network: RetinaNet | None = None) -> RetinaNetDetector:
    """A ``RetinaNetDetector`` configured for training and inference.

    Args:
        settings: the detector settings (anchors, matcher, sampler, loss, NMS).
        network: an existing network (e.g. with loaded weights); a new one is built when None.

    The detector's own box selector keeps every candidate above a small floor
    (0.01) so that callers can apply their own ``score_threshold`` and metrics
    can rank low-confidence boxes too.
    """
    network = network if network is not None else build_network(settings)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=LEVEL_SCALES, base_anchor_shapes=anchor_shapes(settings))
    detector = RetinaNetDetector(network, anchors)
    detector.set_atss_matcher(num_candidates=settings.atss_candidates, center_in_gt=False)
    detector.set_hard_negative_sampler(
        batch_size_per_image=settings.sampler_per_image,
        positive_fraction=settings.sampler_positive_fraction,
        min_neg=settings.sampler_min_negatives,
        pool_size=settings.sampler_pool_size,
    )
    if settings.box_loss == "giou":
        detector.set_box_regression_loss(BoxGIoULoss(reduction="mean"), encode_gt=False, decode_pred=True)
    else:
        detector.set_box_regression_loss(torch.nn.SmoothL1Loss(beta=1.0 / 9, reduction="mean"), encode_gt=True, decode_pred=False)
    detector.set_box_selector_parameters(
        score_thresh=0.01,
        topk_candidates_per_level=100,
        nms_thresh=settings.nms_threshold,
        detections_per_img=10,
        apply_sigmoid=True,
    )
    return detector
