"""The LoRIS training loss ``L = L_MSGMS + L_SSIM + L_2`` over the whole image.

``L_MSGMS`` is :func:`lib.loris.msgms.msgms_loss` (mean over 4 scales of
``1 - GMS``, each scale pooled, then 3x3 median-filtered, then compared, as in
the reference code); ``L_SSIM`` is MONAI's ``SSIMLoss`` (``1 - SSIM``,
Gaussian window, data range 2 for ``[-1, 1]``); ``L_2`` is the mean squared
error. The three terms are returned separately for logging.
"""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn

from lib.loris.msgms import GMS_C, SCALES, msgms_loss
from lib.loris.preprocess import NETWORK_RANGE


class LorisLoss(nn.Module):
    """``forward(reconstruction, original)`` with ``(B, 1, H, W)`` tensors in ``[-1, 1]`` -> dict of scalars.

    Keys: ``loss`` (the sum, to back-propagate), ``msgms``, ``ssim``, ``l2``.

    Args:
        ssim_win_size: SSIM Gaussian window (odd; must not exceed the image side).
        msgms_scales, msgms_c: MSGMS scales and constant ``c``.
    """

    def __init__(self, ssim_win_size: int = 11, msgms_scales: int = SCALES, msgms_c: float = GMS_C) -> None:
        super().__init__()
        self.ssim = SSIMLoss(spatial_dims=2, data_range=NETWORK_RANGE[1] - NETWORK_RANGE[0], win_size=ssim_win_size)
        self.msgms_scales = msgms_scales
        self.msgms_c = msgms_c

    def forward(self, reconstruction: torch.Tensor, original: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {
            "msgms": msgms_loss(original, reconstruction, self.msgms_scales, self.msgms_c),
            "ssim": self.ssim(reconstruction, original),
            "l2": torch.mean((reconstruction - original) ** 2),
        }
        terms["loss"] = terms["msgms"] + terms["ssim"] + terms["l2"]
        return terms
