"""Training targets and losses of the one-box head (:mod:`lib.detection.network`).

- Heatmap: an elongated Gaussian around the cell that holds the box centre (exactly 1 there), with a
  standard deviation of ``heatmap_sigma`` times the box's width along x and its height along y; the
  penalty-reduced focal loss of CenterNet (Zhou et al., 2019), normalised by the number of boxes.
  A frame without a recess has an all-zero target: every cell learns "not a centre".
- Box: every cell inside the box (and near its centre: Gaussian target at least :data:`BOX_CELLS`)
  proposes the whole box, so that cells near an edge learn to place it from what they see (the decoding's
  edge vote uses them); the loss is ``1 - GIoU`` (``monai.data.box_utils.box_pair_giou``) plus the L1
  error of the four edges, measured in box widths along x and box heights along y (so a thin box's height
  counts as much as its length), averaged over each box's cells, then over the boxes of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.data.box_utils import box_pair_giou

from lib.detection.network import OUTPUT_STRIDE, cell_boxes, cell_centres

BOX_CELLS = 0.3
"""Cells whose heatmap target is at least this are trained to propose the box."""


def heatmap_targets(boxes: Sequence, grid: tuple[int, int], sigma_fraction: float, device=None) -> torch.Tensor:
    """Gaussian centre targets ``(B, 1, h, w)`` for one box (input pixels) or None per image."""
    h, w = grid
    x, y = cell_centres(h, w, device)
    out = torch.zeros((len(boxes), 1, h, w), device=device)
    for i, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        col = min(max(int((x0 + x1) / 2 // OUTPUT_STRIDE), 0), w - 1)
        row = min(max(int((y0 + y1) / 2 // OUTPUT_STRIDE), 0), h - 1)
        sx = max(sigma_fraction * (x1 - x0), 0.5 * OUTPUT_STRIDE)
        sy = max(sigma_fraction * (y1 - y0), 0.5 * OUTPUT_STRIDE)
        cx, cy = (col + 0.5) * OUTPUT_STRIDE, (row + 0.5) * OUTPUT_STRIDE
        out[i, 0] = torch.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))
        out[i, 0, row, col] = 1.0
    return out


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed and divided by the number of peaks."""
    pos = target >= 1.0
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = (log_p * (1 - p) ** 2)[pos].sum()
    neg_loss = (log_not_p * p**2 * (1 - target) ** 4)[~pos].sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)


def box_loss(edges: torch.Tensor, boxes: Sequence, target: torch.Tensor) -> torch.Tensor:
    """``1 - GIoU`` + relative L1 of the boxes proposed by the cells inside each box (see module doc)."""
    proposed = cell_boxes(edges)  # (B, 4, h, w)
    x, y = cell_centres(edges.shape[2], edges.shape[3], edges.device)
    preds, truths, weights = [], [], []
    for i, box in enumerate(boxes):
        if box is None:
            continue
        cells = (target[i, 0] >= BOX_CELLS) | ((x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3]))
        preds.append(proposed[i][:, cells].T)
        truths.append(torch.tensor([box], dtype=proposed.dtype, device=proposed.device).expand(int(cells.sum()), 4))
        weights.append(torch.full_like(target[i, 0][cells], 1.0 / float(cells.sum())))
    if not preds:
        return edges.sum() * 0.0
    pred, truth, weight = torch.cat(preds), torch.cat(truths), torch.cat(weights)
    giou = box_pair_giou(pred, truth)
    size = (truth[:, 2:] - truth[:, :2]).clamp(min=1.0).repeat(1, 2)
    l1 = ((pred - truth).abs() / size).mean(dim=1)
    return (weight * (1.0 - giou + l1)).sum() / len(preds)


def detector_loss(heat_logits: torch.Tensor, edges: torch.Tensor, boxes: Sequence, sigma_fraction: float,
                  box_weight: float) -> dict[str, torch.Tensor]:
    """The training loss of a batch: ``{"loss", "heatmap", "box"}`` (``loss = heatmap + box_weight * box``).

    Args:
        heat_logits, edges: the network's outputs for the batch.
        boxes: per image the box in input pixels, or None for a frame without a recess.
    """
    target = heatmap_targets(boxes, heat_logits.shape[2:], sigma_fraction, heat_logits.device)
    heat = focal_loss(heat_logits, target)
    box = box_loss(edges, boxes, target)
    return {"loss": heat + box_weight * box, "heatmap": heat, "box": box}
