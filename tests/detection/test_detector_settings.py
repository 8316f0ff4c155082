"""DetectorSettings: validated once, saved with the model, read back identically."""

from __future__ import annotations

import pytest

from lib.detection.settings import DetectorSettings
from lib.errors import DataError


def test_settings_round_trip_through_a_dict():
    settings = DetectorSettings.quick(flip=True, flip_test=True, score_threshold=0.25, schedule="plateau")
    assert DetectorSettings.from_dict(settings.to_dict()) == settings
    assert DetectorSettings.from_dict(DetectorSettings().to_dict()).score_threshold is None


def test_quick_preset_is_the_same_recipe_with_fewer_epochs():
    quick, full = DetectorSettings.quick(), DetectorSettings()
    assert quick.max_epochs < full.max_epochs
    assert {k: v for k, v in quick.to_dict().items() if k != "max_epochs"} == \
        {k: v for k, v in full.to_dict().items() if k != "max_epochs"}


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("image_size", 100, "multiple of 32"),
        ("image_aspect", 0.1, "[0.25, 4]"),
        ("monitor", "accuracy", "mean_iou, map50, map75"),
        ("optimizer", "lion", "adam, sgd"),
        ("schedule", "linear", "cosine, plateau"),
        ("fpn_channels", 10, "multiple of 4"),
        ("score_threshold", 1.5, "[0, 1]"),
        ("bulge_swell", 3.0, "[0.05, 2]"),
        ("edge_vote", -1.0, "[0, 10]"),
    ],
)
def test_bad_settings_name_the_field_the_value_and_what_is_allowed(field, value, words):
    with pytest.raises(DataError) as info:
        DetectorSettings(**{field: value})
    assert field in str(info.value) and repr(value) in str(info.value) and words in str(info.value)


def test_unknown_saved_setting_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown setting.*colour.*known settings are .*image_size"):
        DetectorSettings.from_dict({"colour": 1})


def test_detector_settings_share_the_model_settings_base():
    from lib.training.settings import ModelSettings

    assert isinstance(DetectorSettings(), ModelSettings)
    assert DetectorSettings.quick(seed=3) == DetectorSettings(max_epochs=80, seed=3)


def test_replace_validates_the_copy():
    assert DetectorSettings().replace(max_epochs=3).max_epochs == 3
    with pytest.raises(DataError, match="max_epochs"):
        DetectorSettings().replace(max_epochs=0)
