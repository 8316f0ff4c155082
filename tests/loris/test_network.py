"""The networks: the paper preset is the reference code's U-Net, with its full-resolution stage and skip."""

import pytest
import torch

from lib.loris.network import InferenceNetwork, ReferenceUNet, build_network, parameter_count
from lib.loris.settings import NETWORKS, LorisSettings


def test_the_paper_preset_is_the_reference_unet_of_about_29_million_parameters():
    settings = LorisSettings()
    network = build_network(settings)
    assert settings.architecture == "reference" and settings.channels == (64, 128, 256, 512, 512)
    assert isinstance(network.unet, ReferenceUNet)
    assert 20e6 <= parameter_count(network) <= 40e6  # 28.8 M with one channel in and out


def test_the_reference_unet_has_a_full_resolution_stage_and_skip():
    network = ReferenceUNet(channels=(4, 8, 16))
    sizes = {}
    hooks = [stage.register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(k, tuple(o.shape[-3:])))
             for k, stage in enumerate(network.encoder)]
    decoder_inputs = []
    hooks.append(network.decoder[-1].register_forward_pre_hook(lambda m, i: decoder_inputs.append(i[0].shape)))
    out = network(torch.zeros(1, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == {0: (4, 32, 32), 1: (8, 16, 16), 2: (16, 8, 8)}  # level 0 works at the input's resolution
    # the last decoder stage sees the upsampled features concatenated with level 0's full-resolution ones
    assert tuple(decoder_inputs[0]) == (1, 8, 32, 32) and out.shape == (1, 1, 32, 32)


def test_the_quick_preset_uses_the_same_design_and_unet_is_still_available():
    quick = build_network(LorisSettings.quick())
    assert isinstance(quick.unet, ReferenceUNet) and parameter_count(quick) < 1e6
    unet = build_network(LorisSettings.quick(**NETWORKS["unet"]))
    assert not isinstance(unet.unet, ReferenceUNet)


@pytest.mark.parametrize("architecture", ["reference", "unet"])
def test_the_served_copy_gives_the_same_output(architecture):
    settings = LorisSettings.quick(**{**NETWORKS[architecture], "channels": (4, 8, 16), "strides": (2, 2)},
                                   image_size=32)
    torch.manual_seed(1)
    network = build_network(settings)
    network.train()
    network(torch.rand(4, 1, 32, 32) * 2 - 1)  # batch-norm statistics that are not the identity
    network.eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(InferenceNetwork(network)(x), network(x), atol=1e-5, rtol=1e-4)
