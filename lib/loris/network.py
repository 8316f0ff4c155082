"""The LoRIS reconstruction networks: one channel in and out, ``tanh`` output in ``(-1, 1)``.

Two architectures (``LorisSettings.architecture``), both built from MONAI blocks:

- ``reference`` (the ``paper`` preset): the U-Net of the LoRIS reference code
  (``models/tf_unet.py``; ``docs/method.md``). Encoder: a **full-resolution** stage
  (3x3 stride-1 convolution, then a 3x3 convolution), then one stage per further level,
  each entered by a 4x4 stride-2 convolution and followed by a 3x3 convolution. Decoder:
  at each level a 4x4 stride-2 transposed convolution, concatenated with the encoder stage
  of the same size (skips at every resolution, the full one included), then two 3x3
  convolutions; a final 3x3 convolution to one channel. Every convolution but the
  transposed ones and the last is Conv-BatchNorm-ReLU. With the reference's channels
  ``64-128-256-512-512`` it has about 28.8 M parameters; the full-resolution stage and its
  skip carry fine detail (speckle) straight to the output.
- ``unet``: MONAI's ``UNet`` (strided 3x3 convolutions down, transposed convolutions up,
  residual units); its first stage is already strided, so it has no full-resolution stage
  and no full-resolution skip. Kept for small CPU models and older model folders.
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


def _conv(in_channels: int, out_channels: int, norm: str, dropout: float, kernel_size: int = 3,
          strides: int = 1) -> Convolution:
    """Conv-Norm-(Dropout)-ReLU; 4x4 stride-2 convolutions pad by 1 so that they halve the size exactly."""
    padding = 1 if kernel_size in (3, 4) else None
    return Convolution(2, in_channels, out_channels, strides=strides, kernel_size=kernel_size, padding=padding,
                       act="RELU", norm=_NORMS[norm], dropout=dropout or None, adn_ordering="NDA")


class ReferenceUNet(nn.Module):
    """The reference code's U-Net: ``(B, 1, S, S)`` -> ``(B, 1, S, S)`` (before ``tanh``).

    Args:
        channels: channels of each level, the full-resolution stage first (reference: 64, 128, 256,
            512, 512); level ``k`` works at ``S / 2**k``.
        norm, dropout: as in :class:`~lib.loris.settings.LorisSettings`.
    """

    def __init__(self, channels=(64, 128, 256, 512, 512), norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.encoder = nn.ModuleList()
        previous = 1
        for level, c in enumerate(channels):
            entry = _conv(previous, c, norm, dropout) if level == 0 else _conv(previous, c, norm, dropout, 4, 2)
            self.encoder.append(nn.Sequential(entry, _conv(c, c, norm, dropout)))
            previous = c
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for c in reversed(channels[:-1]):
            self.up.append(Convolution(2, previous, c, strides=2, kernel_size=4, padding=1, output_padding=0,
                                       is_transposed=True, conv_only=True))
            self.decoder.append(nn.Sequential(_conv(2 * c, c, norm, dropout), _conv(c, c, norm, dropout)))
            previous = c
        self.head = Convolution(2, previous, 1, kernel_size=3, padding=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class LorisNetwork(nn.Module):
    """``(B, 1, S, S)`` in ``[-1, 1]`` (masked image) -> ``(B, 1, S, S)`` in ``(-1, 1)`` (reconstruction)."""

    def __init__(self, settings: LorisSettings) -> None:
        super().__init__()
        if settings.architecture == "reference":
            self.unet = ReferenceUNet(settings.channels, settings.norm, settings.dropout)
        else:
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


def parameter_count(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


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
