"""Network-input masks: LoRIS's single box mask, and RIAD's disjoint grid masks.

LoRIS hides the recess box: every pixel of the box is set to the minimum of
the network range (``-1``, black), the rest of the image is left as is; the
network reconstructs the whole image. RIAD (the predecessor, Zavrtanik et al.
2021) instead hides random grid cells: for a cell size ``k`` the grid cells are
dealt at random into ``n`` disjoint masks that together cover the image; each
masked copy is inpainted and only the inpainted (hidden) pixels are kept, so
stitching the ``n`` outputs gives one full reconstruction per cell size.

The array math exists once (:func:`box_mask`, :func:`fill_box`,
:func:`riad_masks`); :class:`MaskBox` / :class:`MaskBoxd` are the MONAI-style
array and dictionary transforms over it.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from lib.loris.preprocess import NETWORK_RANGE

FILL_VALUE = NETWORK_RANGE[0]
"""Value written inside the box: the minimum of the network's intensity range (black)."""


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool masks ``(B, 1, H, W)``, True inside each ``(x_min, y_min, x_max, y_max)`` box (max exclusive).

    Args:
        boxes: ``(B, 4)`` integer boxes on the ``H x W`` grid.
    """
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return inside[:, None]


def fill_box(x: torch.Tensor, boxes: torch.Tensor, value: float = FILL_VALUE) -> torch.Tensor:
    """A copy of ``x`` ``(B, C, H, W)`` with each image's box set to ``value`` (all channels)."""
    inside = box_mask(boxes.to(x.device), x.shape[-2], x.shape[-1])
    return x.masked_fill(inside, value)


def riad_masks(size: int, cell: int, n_masks: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """RIAD's disjoint random grid masks for an ``size x size`` image.

    The image is cut in ``cell x cell`` cells (the last row/column of cells may be
    cut short); the cells are shuffled and dealt round-robin into ``n_masks`` groups.

    Returns:
        bool ``(n_masks, 1, size, size)``, True where a mask *hides* the pixel; the
        masks are disjoint and their union is the whole image.
    """
    cells_per_side = -(-size // cell)
    n_cells = cells_per_side * cells_per_side
    order = torch.randperm(n_cells, generator=generator)
    group = torch.empty(n_cells, dtype=torch.int64)
    group[order] = torch.arange(n_cells) % n_masks
    grid = group.view(cells_per_side, cells_per_side)
    pixel_group = grid.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:size, :size]
    return (pixel_group[None] == torch.arange(n_masks).view(-1, 1, 1))[:, None]


class MaskBox(Transform):
    """Array transform: fill the box of a channel-first image ``(C, H, W)`` with black (``-1``).

    Args:
        value: fill value (default: the minimum of the network range).
    """

    def __init__(self, value: float = FILL_VALUE) -> None:
        self.value = value

    def __call__(self, img: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
        img = torch.as_tensor(img)
        box_t = torch.as_tensor(list(box), dtype=torch.int64).view(1, 4)
        return fill_box(img[None], box_t, self.value)[0]


class MaskBoxd(MapTransform):
    """Dictionary wrapper of :class:`MaskBox`: masks ``keys`` with the box stored under ``box_key``.

    Args:
        keys: image keys to mask (channel-first ``(C, H, W)``).
        box_key: key of the ``(x_min, y_min, x_max, y_max)`` box on the image grid.
        value: fill value.
        allow_missing_keys: as in MONAI.
    """

    def __init__(self, keys: KeysCollection, box_key: str = "box", value: float = FILL_VALUE, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.box_key = box_key
        self.masker = MaskBox(value)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.masker(d[key], d[self.box_key])
        return d
