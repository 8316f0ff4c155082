"""Uniform boxes have one size for the dataset, keep the annotated centre and stay inside the image."""

from pathlib import Path

import numpy as np
import pytest

from lib.data.records import Record
from lib.errors import DataError
from lib.evaluation.baselines import box_intensity_map, box_intensity_score, box_shape_score
from lib.evaluation.boxes import UniformBoxSize, check_box_mode, uniform_box, uniform_box_size, uniform_records


def _records():
    boxes = [(10, 40, 50, 46), (20, 30, 70, 60), (5, 45, 45, 50), (60, 0, 100, 20), (0, 80, 30, 100)]
    return [Record(f"i{k}", Path(f"i{k}.png"), f"p{k}", "normal", b) for k, b in enumerate(boxes)]


SIZES = {f"i{k}": (100, 100) for k in range(5)}


def test_uniform_size_is_the_height_percentile_and_the_median_width():
    size = uniform_box_size(_records(), 90.0, sizes=SIZES)
    heights = [6, 30, 5, 20, 20]
    widths = [40, 50, 40, 40, 30]
    assert size.height_fraction == pytest.approx(np.percentile(heights, 90) / 100)
    assert size.width_fraction == pytest.approx(np.median(widths) / 100)


def test_uniform_boxes_have_one_size_unless_clipped_and_stay_in_the_image():
    records = _records()
    size = uniform_box_size(records, 90.0, sizes=SIZES)
    bw, bh = size.pixels(100, 100)
    out = uniform_records(records, size, sizes=SIZES)
    for before, after in zip(records, out):
        x0, y0, x1, y1 = after.box
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100
        clipped = x0 == 0 or y0 == 0 or x1 == 100 or y1 == 100
        if not clipped:
            assert (x1 - x0, y1 - y0) == (bw, bh)
        # the centre stays where the annotation was (within a pixel, before clipping)
        cx = (before.box[0] + before.box[2]) / 2
        assert x0 <= cx <= x1
    # interior boxes: exactly one size
    interior = [r.box for r in out if 0 < r.box[0] and 0 < r.box[1] and r.box[2] < 100 and r.box[3] < 100]
    assert len({(b[2] - b[0], b[3] - b[1]) for b in interior}) == 1
    # the box at the top edge is clipped, not shifted
    top = out[3].box
    assert top[1] == 0 and top[3] - top[1] < bh


def test_uniform_box_is_centred_exactly():
    size = UniformBoxSize(width_fraction=0.2, height_fraction=0.1)
    assert uniform_box((40, 40, 60, 42), 100, 100, size) == (40, 36, 60, 46)


def test_uniform_size_needs_boxes_and_a_valid_percentile():
    unboxed = [Record("a", Path("a.png"), "p", "normal", None)]
    with pytest.raises(DataError, match="annotated boxes"):
        uniform_box_size(unboxed, sizes={"a": (10, 10)})
    with pytest.raises(DataError, match="percentile"):
        uniform_box_size(_records(), 120, sizes=SIZES)
    with pytest.raises(DataError, match="valid box modes"):
        check_box_mode("auto")


def test_box_baselines_read_darkness_and_shape():
    image = np.ones((10, 10), np.float32)
    image[2:4, 2:6] = 0.25
    box = (2, 2, 6, 4)
    assert box_intensity_score(image, box) == pytest.approx(0.75)
    darkness = box_intensity_map(image, box)
    assert darkness[3, 3] == pytest.approx(0.75) and darkness[0, 0] == 0.0
    assert box_shape_score(box) == pytest.approx(0.5)
