"""The LoRIS reconstruction network: MONAI's 2D ``UNet``, one channel in and out, ``tanh`` output.

The reference code uses a Keras U-Net (Conv-BN-ReLU, strided convolutions,
transposed-convolution decoder, skip connections, ``tanh``); MONAI's ``UNet``
has the same shape (strided convolutions down, transposed convolutions up,
skip connections) with configurable channels, strides and residual units.
``tanh`` matches the network intensity range ``[-1, 1]``.
"""

from __future__ import annotations

import copy

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


class InferenceNetwork(nn.Module):
    """A frozen copy of a :class:`LorisNetwork` for inference: same outputs, faster on CPU.

    - every BatchNorm that follows a (transposed) convolution is folded into it (eval statistics), so
      the normalization costs nothing;
    - weights and activations are channels-last (NHWC), the layout oneDNN's CPU convolutions run
      fastest in (``python -m lib bench``, 2-core CPU, 256 px: about 1.5x at batch 16 and several
      times at batch 1).

    Outputs equal the source network's in eval mode up to float32 rounding (about 1e-5 on ``[-1, 1]``;
    ``tests/loris/test_inference_speed.py`` pins the tolerance). Input and output: ``(B, 1, S, S)``,
    contiguous. The source network is not modified (a deep copy is folded).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.net = fold_batch_norms(copy.deepcopy(network).eval()).to(memory_format=torch.channels_last)
        self.net.requires_grad_(False)
        super().train(False)  # reports eval mode, as its contents are (exporters restore the mode they found)

    def train(self, mode: bool = True) -> "InferenceNetwork":
        if mode:
            raise RuntimeError("InferenceNetwork is for inference only (batch norms are folded)")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold each ``Convolution``'s eval-mode BatchNorm into its (transposed) convolution, in place.

    MONAI's ``Convolution`` is ``conv`` followed by ``adn`` (norm, dropout, activation); the norm becomes
    an ``Identity`` and the convolution gets the folded weights and bias. Returns ``network``.
    """
    for module in network.modules():
        adn = getattr(module, "adn", None) if isinstance(module, Convolution) else None
        norm = getattr(adn, "N", None)
        if (
            isinstance(norm, nn.modules.batchnorm._BatchNorm)
            and next(iter(adn._modules)) == "N"  # the norm comes right after the convolution
            and norm.running_mean is not None
            and not norm.training
        ):
            transposed = isinstance(module.conv, nn.modules.conv._ConvTransposeNd)
            module.conv = fuse_conv_bn_eval(module.conv, norm, transpose=transposed)
            adn.N = nn.Identity()
    return network
