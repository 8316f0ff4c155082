"""The recess detector network: a small MONAI ResNet + FPN with a one-box ("centre heatmap") head.

An image holds exactly one recess, so the network does not enumerate anchors
and suppress duplicates as a multi-object detector must; it answers one
question per cell of a stride-4 grid: "is this the centre of the recess, and
if so where are its four edges?"

- backbone: ``monai.networks.nets.resnet.ResNet`` (basic blocks, stages ``c, 2c, 4c, 8c`` at strides
  4, 8, 16, 32) whose four stages feed ``monai.networks.blocks.backbone_fpn_utils.BackboneWithFPN``;
  the FPN's finest level (stride 4, ``fpn_channels`` channels) carries the coarse levels' context
  (a receptive field wider than the recess) at a quarter of the input resolution;
- two heads of MONAI ``Convolution`` blocks (3x3 conv, GroupNorm, ReLU) and a 1x1 convolution:
  ``heatmap`` (one logit per cell: the cell is the recess centre) and ``edges`` (per cell the log
  distances, in cells, from the cell centre to the box's left, top, right and bottom edges; FCOS-style,
  so sub-cell positions need no separate offset).

:func:`decode` turns the two maps into one box and one confidence per image.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import Convolution
from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
from monai.networks.nets import resnet
from torch import nn

from lib.detection.settings import DetectorSettings

OUTPUT_STRIDE = 4
"""Input pixels per cell of the heatmap and edge maps (the FPN's finest level)."""
HEAT_PRIOR = 0.01
"""Initial probability of every heatmap cell (RetinaNet/CenterNet focal-loss initialisation)."""
MAX_LOG_DISTANCE = 8.0
"""Clamp of the predicted log distances (e^8 cells is far beyond any image)."""


class RecessNet(nn.Module):
    """``(B, 1, H', W')`` image -> ``(heatmap logits (B, 1, H'/4, W'/4), log edge distances (B, 4, H'/4, W'/4))``."""

    def __init__(self, settings: DetectorSettings):
        super().__init__()
        c, f = settings.base_channels, settings.fpn_channels
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
        self.features = BackboneWithFPN(
            backbone,
            return_layers={f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
            in_channels_list=[c, 2 * c, 4 * c, 8 * c],
            out_channels=f,
            spatial_dims=2,
        )
        norm = ("group", {"num_groups": 4})
        self.heatmap = nn.Sequential(Convolution(2, f, f, kernel_size=3, act="relu", norm=norm),
                                     nn.Conv2d(f, 1, kernel_size=1))
        self.edges = nn.Sequential(Convolution(2, f, f, kernel_size=3, act="relu", norm=norm),
                                   nn.Conv2d(f, 4, kernel_size=1))
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEAT_PRIOR) / HEAT_PRIOR))
        nn.init.normal_(self.edges[-1].weight, std=0.01)
        nn.init.constant_(self.edges[-1].bias, math.log(4.0))

    def init_edges(self, half_width: float, half_height: float) -> None:
        """Start every cell's proposal at a box of the given half sizes (input pixels), e.g. the training
        boxes' median, instead of a 4-cell square."""
        bias = self.edges[-1].bias
        with torch.no_grad():
            bias.copy_(torch.tensor([half_width, half_height, half_width, half_height]).div(OUTPUT_STRIDE).log())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = self.features(images)["0"]
        return self.heatmap(level), self.edges(level).clamp(max=MAX_LOG_DISTANCE)


def build_network(settings: DetectorSettings) -> RecessNet:
    """A new (randomly initialised) network for the settings."""
    return RecessNet(settings)


def cell_centres(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates ``(x (1, w), y (h, 1))`` of the centres of a ``h x w`` output grid."""
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * OUTPUT_STRIDE
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * OUTPUT_STRIDE
    return xs[None, :], ys[:, None]


def cell_boxes(edges: torch.Tensor) -> torch.Tensor:
    """Log edge distances ``(B, 4, h, w)`` -> the box each cell proposes, ``(B, 4, h, w)`` in input pixels
    ``(x_min, y_min, x_max, y_max)``."""
    distances = torch.exp(edges) * OUTPUT_STRIDE
    x, y = cell_centres(edges.shape[2], edges.shape[3], edges.device)
    return torch.stack([x - distances[:, 0], y - distances[:, 1], x + distances[:, 2], y + distances[:, 3]], dim=1)


def decode(heat_logits: torch.Tensor, edges: torch.Tensor, window: int = 3,
           vote: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One box and one confidence per image.

    The peak cell of the heatmap is the recess centre; the box is the average of the boxes proposed by
    the cells within ``window`` cells of the peak, weighted by their heatmap probability. With ``vote``
    > 0 each edge is then re-estimated by the cells inside that box, each weighted by
    ``exp(-d / (vote * side))`` where ``d`` is its predicted distance to that edge: cells near an edge see
    it at the finest scale.

    Returns:
        ``(boxes (B, 4) in input pixels, confidences (B,) in [0, 1])``; the confidence is the peak's
        heatmap probability.
    """
    b, _, h, w = heat_logits.shape
    probs = torch.sigmoid(heat_logits[:, 0])
    boxes = cell_boxes(edges)
    peak = probs.reshape(b, -1).argmax(dim=1)
    x, y = cell_centres(h, w, edges.device)
    out = []
    for i in range(b):
        r, c = divmod(int(peak[i]), w)
        r0, r1, c0, c1 = max(r - window, 0), min(r + window + 1, h), max(c - window, 0), min(c + window + 1, w)
        weights = probs[i, r0:r1, c0:c1]
        box = (boxes[i, :, r0:r1, c0:c1] * weights).sum(dim=(1, 2)) / weights.sum().clamp(min=1e-12)
        if vote > 0:
            inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
            inside[r, c] = True
            cells = boxes[i][:, inside]  # (4, n)
            cx, cy = x.expand(h, w)[inside], y.expand(h, w)[inside]
            distance = torch.stack([cx - cells[0], cy - cells[1], cells[2] - cx, cells[3] - cy])
            side = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2).clamp(min=1.0)[:, None]
            box = (torch.softmax(-distance.clamp(min=0) / (vote * side), dim=1) * cells).sum(dim=1)
        out.append(box)
    return torch.stack(out), probs.reshape(b, -1).max(dim=1).values
