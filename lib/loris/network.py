"""The LoRIS reconstruction network: MONAI's 2D ``UNet``, one channel in and out, ``tanh`` output.

The reference code uses a Keras U-Net (Conv-BN-ReLU, strided convolutions,
transposed-convolution decoder, skip connections, ``tanh``); MONAI's ``UNet``
has the same shape (strided convolutions down, transposed convolutions up,
skip connections) with configurable channels, strides and residual units.
``tanh`` matches the network intensity range ``[-1, 1]``.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

from lib.loris.settings import LorisSettings

_NORMS = {"batch": "BATCH", "instance": "INSTANCE"}


class LorisNetwork(nn.Module):
    """``(B, 1, S, S)`` in ``[-1, 1]`` (masked image) -> ``(B, 1, S, S)`` in ``(-1, 1)`` (reconstruction)."""

    def __init__(self, settings: LorisSettings) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=settings.channels,
            strides=settings.strides,
            num_res_units=settings.num_res_units,
            norm=_NORMS[settings.norm],
            dropout=settings.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.unet(x))


def build_network(settings: LorisSettings) -> LorisNetwork:
    """A freshly initialized network for ``settings``."""
    return LorisNetwork(settings)
