"""Box and label validation name the place and the problem."""

import pytest

from lib.data.records import validate_box, validate_label
from lib.errors import DataError


def test_valid_box_is_returned_as_ints():
    assert validate_box(["1", 2.0, 30, 40], 64, 48, "labels.csv row 2") == (1, 2, 30, 40)


@pytest.mark.parametrize(
    "box, message",
    [
        ((10, 5, 10, 20), "empty or inverted"),
        ((10, 25, 20, 20), "empty or inverted"),
        ((-1, 0, 10, 10), "leaves the 64x48 image"),
        ((0, 0, 65, 10), "leaves the 64x48 image"),
        ((0, 0, 10), "4 values"),
        ((0, 0, 1.5, 10), "whole pixels"),
        (("a", 0, 1, 10), "four numbers"),
        (None, "four numbers"),
    ],
)
def test_bad_box_is_rejected_with_place_and_reason(box, message):
    with pytest.raises(DataError, match=message) as info:
        validate_box(box, 64, 48, "labels.csv row 7")
    assert "labels.csv row 7" in str(info.value)


def test_unknown_label_lists_valid_ones():
    with pytest.raises(DataError, match="valid labels are normal, distended"):
        validate_label("effusion", "row 3")
