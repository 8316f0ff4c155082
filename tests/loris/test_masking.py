"""Network-input masks: LoRIS's black box, RIAD's disjoint grid masks."""

import numpy as np
import torch

from lib.loris.masking import MaskBox, MaskBoxd, box_mask, fill_box, riad_masks
from lib.loris.reconstruction import reconstruct, riad_stitch
from lib.loris.settings import LorisSettings


def test_masked_input_is_black_exactly_inside_the_box():
    x = torch.rand(2, 1, 12, 10) * 2 - 1
    boxes = torch.tensor([[2, 3, 7, 9], [0, 0, 1, 1]])
    out = fill_box(x, boxes)
    inside = np.zeros((2, 1, 12, 10), dtype=bool)
    inside[0, 0, 3:9, 2:7] = True
    inside[1, 0, 0:1, 0:1] = True
    assert torch.all(out[torch.from_numpy(inside)] == -1.0)
    assert torch.equal(out[torch.from_numpy(~inside)], x[torch.from_numpy(~inside)])
    assert not torch.equal(out, x) and x.min() > -1.0  # the input itself is untouched


def test_box_mask_counts_max_as_exclusive():
    m = box_mask(torch.tensor([[1, 2, 4, 3]]), 5, 6)
    assert m.shape == (1, 1, 5, 6)
    assert int(m.sum()) == 3 and bool(m[0, 0, 2, 1]) and not bool(m[0, 0, 3, 1]) and not bool(m[0, 0, 2, 4])


def test_array_and_dictionary_transforms_agree():
    img = torch.rand(1, 8, 8)
    a = MaskBox()(img, (1, 1, 5, 4))
    d = MaskBoxd(keys="image", box_key="box")({"image": img, "box": (1, 1, 5, 4), "other": 3})
    assert torch.equal(a, d["image"]) and d["other"] == 3
    assert torch.all(a[:, 1:4, 1:5] == -1) and a.shape == img.shape


def test_riad_masks_are_disjoint_and_cover_the_image():
    for cell in (1, 2, 3, 4):
        m = riad_masks(16, cell, 3, torch.Generator().manual_seed(0))
        assert m.shape == (3, 1, 16, 16)
        assert torch.all(m.sum(dim=0) == 1)
        # each cell is hidden by one mask only: constant inside the cell
        group = m.float().argmax(dim=0)[0]
        blocks = group[: 16 // cell * cell, : 16 // cell * cell].reshape(16 // cell, cell, 16 // cell, cell)
        assert torch.all(blocks == blocks[:, :1, :, :1])


def test_riad_stitch_takes_every_pixel_from_a_pass_where_it_was_hidden():
    # The "network" adds 10 to visible pixels' value and 100 where the input is 0 (hidden): stitched output is
    # 100 everywhere only if each pixel comes from the pass that hid it.
    def net(t):
        return torch.where(t == 0, torch.full_like(t, 100.0), t + 10)

    x = torch.rand(2, 1, 16, 16) + 0.5
    out = riad_stitch(net, x, 4, 3, torch.Generator().manual_seed(1))
    assert torch.all(out == 100.0)


def test_reconstruct_gives_one_output_per_riad_cell_size_at_inference():
    s = LorisSettings.quick(mode="riad", image_size=64)
    net = torch.nn.Identity()
    x = torch.rand(1, 1, 64, 64)
    outs = reconstruct(net, x, torch.tensor([[0, 0, 8, 8]]), s, generator=torch.Generator().manual_seed(0))
    assert len(outs) == len(s.riad_cells()) == 3  # 2,4,8,16 at 256 px -> 1,1,2,4 at 64 px -> 1,2,4
    assert len(reconstruct(net, x, torch.tensor([[0, 0, 8, 8]]), s, training=True)) == 1
    lor = reconstruct(net, x, torch.tensor([[0, 0, 8, 8]]), LorisSettings.quick())[0]
    assert torch.all(lor[..., :8, :8] == -1) and torch.equal(lor[..., 8:, :], x[..., 8:, :])
