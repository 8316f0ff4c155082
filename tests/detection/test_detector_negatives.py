"""Frames without a recess and the confidence floor fitted between them and real recesses."""

from __future__ import annotations

import numpy as np
import pytest

from lib.detection.calibrate import choose_floor, negative_frames
from lib.detection.negatives import KINDS, erase_recess, negative_frame, speckle_frame, superficial_view


def _frame():
    """Layered tissue (horizontal bands) with a dark recess line at rows 60-64, columns 70-190."""
    rng = np.random.default_rng(0)
    rows = 0.55 + 0.15 * np.sin(np.arange(120) / 3.0)[:, None]
    image = np.clip(rows + 0.05 * rng.standard_normal((120, 260)), 0, 1).astype(np.float32)
    image[60:65, 70:190] = 0.02
    return image, (66, 52, 194, 73)


def test_erasing_the_recess_leaves_no_dark_line_and_keeps_the_rest_of_the_frame():
    image, box = _frame()
    erased = erase_recess(image, box)
    assert erased.shape == image.shape and erased.dtype == np.float32
    assert image[60:65, 70:190].mean() < 0.05
    assert erased[60:65, 70:190].mean() > 0.3  # tissue now, not a dark line
    assert np.array_equal(erased[:52], image[:52])  # above the box: untouched (it is the source)
    # widened by a quarter of the box width (32 px) on each side, plus the 8-px cross-fade
    assert np.array_equal(erased[:, :66 - 32 - 8], image[:, :66 - 32 - 8])
    assert np.array_equal(erased[:, 194 + 32 + 8 :], image[:, 194 + 32 + 8 :]) and np.array_equal(erased[90:], image[90:])
    image[60:65, 40:66] = 0.02  # the recess goes on beyond the box: erased too
    assert erase_recess(image, box)[60:65, 40:66].mean() > 0.3


def test_erasing_near_the_top_mirrors_the_tissue_below():
    image, _ = _frame()
    image[2:6, 70:190] = 0.02
    erased = erase_recess(image, (66, 0, 194, 10), widen=0.0)
    assert erased[2:6, 70:190].mean() > 0.3
    assert np.array_equal(erased[20:], image[20:])


def test_superficial_view_and_speckle_fill_the_frame_without_the_recess():
    image, box = _frame()
    top = superficial_view(image, box)
    assert top.shape == image.shape and top.min() > 0.2  # only the tissue above the line, stretched
    speckle = speckle_frame(np.random.default_rng(0), (120, 260))
    assert speckle.shape == (120, 260) and 0.0 <= speckle.min() and speckle.max() <= 1.0 and speckle.std() > 0.02


def test_every_kind_of_negative_is_made_one_per_image():
    image, box = _frame()
    frames = negative_frames([image, image], [box, box], seed=0)
    assert set(frames) == set(KINDS) and all(len(v) == 2 for v in frames.values())
    with pytest.raises(ValueError, match="valid kinds are"):
        negative_frame("elbow", np.random.default_rng(0), image, box)


def test_floor_sits_between_separated_confidences():
    floor = choose_floor([0.6, 0.7, 0.9], [0.01, 0.05, 0.1])
    assert 0.1 < floor < 0.6
    # in the middle in logit space: as far (in odds) from the highest negative as from the lowest positive
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(floor) / odds(0.1) == pytest.approx(odds(0.6) / odds(floor))


def test_floor_with_overlap_keeps_the_best_balanced_accuracy_and_prefers_finding():
    positives = [0.3, 0.5, 0.6, 0.8]
    negatives = [0.05, 0.1, 0.4]
    floor = choose_floor(positives, negatives)
    # 0.1 < floor <= 0.3 finds every recess and rejects 2 of 3 negatives (balanced accuracy 1.67);
    # 0.4 < floor <= 0.5 rejects every negative but misses one recess of 4 (1.75): that one wins
    assert 0.4 < floor < 0.5
    assert choose_floor([0.3, 0.5], [0.3, 0.5]) <= 0.3  # no separation at all: the lowest floor
    assert choose_floor([0.4], []) < 0.4
