"""LorisSettings: defaults in one place, validated, JSON round trip."""

import pytest

from lib.errors import DataError
from lib.loris.settings import LorisSettings


def test_defaults_are_the_papers():
    s = LorisSettings()
    assert (s.image_size, s.batch_size, s.learning_rate, s.max_epochs, s.patience) == (256, 4, 1e-4, 1000, 50)
    assert (s.metric, s.pooling, s.mode, s.target_fpr, s.msgms_c, s.msgms_scales) == ("msgmsd", "mean", "loris", 0.05, 0.0026, 4)


def test_quick_preset_is_small_and_overridable():
    s = LorisSettings.quick(max_epochs=3)
    assert s.image_size == 128 and s.max_epochs == 3 and len(s.channels) == len(s.strides) + 1


def test_dict_round_trip():
    s = LorisSettings.quick(metric="dd", pooling="max")
    d = s.to_dict()
    assert isinstance(d["channels"], list)
    assert LorisSettings.from_dict(d) == s


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metric": "psnr"}, "valid values are msgmsd, gmsd, dd, ssim, l2"),
        ({"pooling": "median"}, "valid values are mean, max"),
        ({"mode": "patchcore"}, "valid values are loris, autoencoder, riad"),
        ({"image_size": 100}, "divisible"),
        ({"strides": (2, 2)}, "len\\(strides\\)"),
        ({"target_fpr": 1.5}, "target_fpr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_values_name_the_field_and_the_choices(change, message):
    with pytest.raises(DataError, match=message):
        LorisSettings.quick(**change)


def test_unknown_keys_are_listed():
    with pytest.raises(DataError, match="unknown setting\\(s\\) epochs; known settings are"):
        LorisSettings.from_dict({"epochs": 3})


def test_riad_cell_sizes_scale_with_the_image():
    assert LorisSettings(mode="riad").riad_cells() == (2, 4, 8, 16)
    assert LorisSettings.quick(image_size=128).riad_cells() == (1, 2, 4, 8)
