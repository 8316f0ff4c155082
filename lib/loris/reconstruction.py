"""From a network batch to reconstructions, for the three input modes of :data:`lib.loris.settings.MODES`.

- ``loris``: the box filled with black, one forward pass, one reconstruction.
- ``autoencoder``: the unmasked image, one forward pass (the no-mask baseline).
- ``riad``: for each grid cell size, the image is multiplied by each of the
  ``riad_masks`` disjoint random masks (hidden cells set to 0, as RIAD's
  ``image * mask``), each masked copy is inpainted, and only the inpainted
  (hidden) pixels of each output are kept and stitched together: one full
  reconstruction per cell size. Training draws one cell size per batch (as
  RIAD); inference uses every size, and the anomaly maps of the sizes are
  averaged (see :func:`lib.loris.predictor.LorisPredictor.network_outputs`).
"""

from __future__ import annotations

import torch

from lib.loris.masking import fill_box, riad_masks
from lib.loris.settings import LorisSettings


def riad_stitch(network: torch.nn.Module, x: torch.Tensor, cell: int, n_masks: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """RIAD reconstruction of ``x`` ``(B, 1, S, S)`` at one cell size: ``sum_i net(x * keep_i) * hide_i``.

    The ``n_masks`` masked copies of the batch go through the network in one forward pass.
    """
    b, _, h, w = x.shape
    hide = riad_masks(h, cell, n_masks, generator).to(x.device)  # (n, 1, S, S), disjoint, union = image
    hide = hide[:, None].expand(n_masks, b, 1, h, w)  # (n, B, 1, S, S)
    masked = (x[None] * (~hide)).reshape(n_masks * b, 1, h, w)
    out = network(masked).reshape(n_masks, b, 1, h, w)
    return (out * hide).sum(dim=0)


def reconstruct(network: torch.nn.Module, x: torch.Tensor, grid_boxes: torch.Tensor, settings: LorisSettings, *,
                generator: torch.Generator | None = None, training: bool = False) -> list[torch.Tensor]:
    """Reconstructions of a batch ``x`` ``(B, 1, S, S)`` in ``[-1, 1]`` with boxes ``(B, 4)`` on the grid.

    Returns:
        a list of ``(B, 1, S, S)`` reconstructions: one for ``loris`` and ``autoencoder``; for ``riad``
        one per cell size at inference, one for a random cell size when ``training``.
    """
    if settings.mode == "loris":
        return [network(fill_box(x, grid_boxes))]
    if settings.mode == "autoencoder":
        return [network(x)]
    cells = settings.riad_cells()
    if training:
        pick = int(torch.randint(len(cells), (1,), generator=generator))
        cells = (cells[pick],)
    return [riad_stitch(network, x, c, settings.riad_masks, generator) for c in cells]
