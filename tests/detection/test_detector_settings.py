"""DetectorSettings: validated once, saved with the model, read back identically."""

from __future__ import annotations

import pytest

from lib.detection.network import anchor_shapes
from lib.detection.settings import DetectorSettings
from lib.errors import DataError


def test_settings_round_trip_through_a_dict():
    settings = DetectorSettings.quick(flip=True, anchor_aspect_ratios=(3.0, 1.0))
    assert DetectorSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("image_size", 100, "multiple of 32"),
        ("monitor", "accuracy", "mean_iou, map50, map75"),
        ("optimizer", "lion", "adam, sgd"),
        ("fpn_channels", 12, "multiple of 8"),
        ("score_threshold", 1.5, "[0, 1]"),
    ],
)
def test_bad_settings_name_the_field_the_value_and_what_is_allowed(field, value, words):
    with pytest.raises(DataError) as info:
        DetectorSettings(**{field: value})
    assert field in str(info.value) and repr(value) in str(info.value) and words in str(info.value)


def test_unknown_saved_setting_lists_the_valid_ones():
    with pytest.raises(DataError, match="unknown setting.*colour.*valid settings are .*image_size"):
        DetectorSettings.from_dict({"colour": 1})


def test_anchors_are_wide_and_flat_for_normal_recesses_and_square_for_distended_ones():
    shapes = anchor_shapes(DetectorSettings(image_size=256))
    assert shapes[0][0] == pytest.approx(4 * shapes[0][1])  # 4:1
    assert shapes[-1][0] == pytest.approx(shapes[-1][1])  # 1:1
    assert all(w * h == pytest.approx(16.0 * 16.0) for w, h in shapes)  # same area, 1/16 of S per side
