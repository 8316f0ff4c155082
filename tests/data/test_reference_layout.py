"""The paper's reference layout: records, precomputed folds, YOLO boxes, patient ids, validation."""

from __future__ import annotations

import numpy as np
import pytest

from format_builders import H, W, asymmetric_mask, make_reference, save_png
from lib.data.datastore import read_datastore, write_datastore
from lib.data.imageio import read_mask
from lib.data.reference import box_to_yolo, load_reference, patient_id_of, yolo_to_box
from lib.errors import DataError


def test_reference_layout_gives_each_image_once_and_its_folds(reference_dir):
    records, folds = load_reference(reference_dir)
    by_name = {r.image: r for r in records}
    assert sorted(by_name) == ["p1_a", "p1_b", "p2_a", "p2_b"]
    assert {n: (r.label, r.box, r.patient_id) for n, r in by_name.items()} == {
        "p1_a": ("normal", (5, 4, 30, 16), "p1"),
        "p1_b": ("distended", (2, 1, 20, 14), "p1"),
        "p2_a": ("normal", (0, 0, W, H), "p2"),
        "p2_b": ("normal", (7, 3, 19, 22), "p2"),
    }
    assert np.array_equal(read_mask(by_name["p1_b"].mask_path), asymmetric_mask())
    assert [f.index for f in folds] == [0, 1]
    names = lambda rs: sorted(r.image for r in rs)  # noqa: E731
    assert (names(folds[0].train), names(folds[0].valid), names(folds[0].test)) == (["p1_a", "p1_b"], ["p2_b"], ["p2_a"])
    assert (names(folds[1].train), names(folds[1].valid), names(folds[1].test)) == (["p2_a", "p2_b"], [], ["p1_a", "p1_b"])
    assert folds[1].test[0] is by_name[folds[1].test[0].image]  # the same records, not copies


def test_one_fold_folder_or_its_sqr_folder_is_also_accepted(reference_dir):
    for root in (reference_dir / "anomaly_1", reference_dir / "anomaly_1" / "sqr"):
        records, folds = load_reference(root)
        assert len(records) == 4 and [f.index for f in folds] == [1]


def test_reference_layout_imports_into_a_datastore(reference_dir, tmp_path):
    records, _ = load_reference(reference_dir)
    back = {r.image: r for r in write_datastore(records, tmp_path / "ds")}
    assert {n: (r.label, r.box, r.patient_id) for n, r in back.items()} == {r.image: (r.label, r.box, r.patient_id) for r in records}
    assert np.array_equal(read_mask(back["p1_b"].mask_path), asymmetric_mask())
    assert read_datastore(tmp_path / "ds") == list(back.values())


@pytest.mark.parametrize("box", [(0, 0, W, H), (3, 5, 17, 23), (1, 1, 2, 2), (39, 23, 40, 24)])
@pytest.mark.parametrize("decimals", [4, 6])
def test_pixel_boxes_survive_yolo_with_few_decimals(box, decimals):
    yolo = [round(v, decimals) for v in box_to_yolo(box, W, H)]
    assert yolo_to_box(yolo, W, H, "t") == box


def test_fractional_yolo_boxes_are_rounded_outward():
    # x from 10.3 to 20.6 px, y from 4.5 to 9.2 px on a 40 x 24 image
    cx, w = (10.3 + 20.6) / 2 / W, (20.6 - 10.3) / W
    cy, h = (4.5 + 9.2) / 2 / H, (9.2 - 4.5) / H
    assert yolo_to_box((cx, cy, w, h), W, H, "t") == (10, 4, 21, 10)


def test_patient_id_rule_is_the_prefix_before_underscore_or_dash_and_configurable():
    assert patient_id_of("p012_3") == "p012"
    assert patient_id_of("P7-left_2") == "P7"
    assert patient_id_of("single") == "single"
    assert patient_id_of("knee_p4_img2", r"_(p\d+)_") == "p4"
    assert patient_id_of("nomatch", r"_(p\d+)_") == "nomatch"


def _rewrite_box(root, name, text):
    for fold in ("anomaly_0", "anomaly_1"):
        (root / fold / "sqr" / "boxes" / f"{name}.txt").write_text(text)


def _move(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)


BAD_REFERENCE = {
    "missing box file": (lambda r: (r / "anomaly_0/sqr/boxes/p2_a.txt").unlink(), ["anomaly_0/sqr/boxes/p2_a.txt", "missing box file"]),
    "empty box file": (lambda r: _rewrite_box(r, "p2_a", "\n"), ["boxes/p2_a.txt", "empty box file"]),
    "zero-area box": (lambda r: _rewrite_box(r, "p2_a", "0 0.5 0.5 0.0 0.2\n"), ["boxes/p2_a.txt", "zero or negative size"]),
    "box outside the image": (lambda r: _rewrite_box(r, "p2_a", "0 0.9 0.5 0.4 0.2\n"), ["boxes/p2_a.txt:1", "leaves the image"]),
    "pixel box instead of yolo": (lambda r: _rewrite_box(r, "p2_a", "0 20 12 10 10\n"), ["boxes/p2_a.txt:1", "fractions of the image size"]),
    "malformed line": (lambda r: _rewrite_box(r, "p2_a", "0 0.5 0.5 0.2\n"), ["boxes/p2_a.txt:1", "5 numbers"]),
    "two boxes": (lambda r: _rewrite_box(r, "p2_a", "0 0.5 0.5 0.2 0.2\n0 0.2 0.2 0.1 0.1\n"), ["boxes/p2_a.txt", "2 different boxes"]),
    "mask of a normal image": (
        lambda r: save_png(r / "anomaly_0/sqr/ground_truth/distended/p2_a.png", asymmetric_mask().astype(np.uint8) * 255),
        ["ground_truth/distended/p2_a.png", "normal (nd) image"],
    ),
    "mask size mismatch": (
        lambda r: save_png(r / "anomaly_0/sqr/ground_truth/distended/p1_b.png", np.full((H, H), 255, np.uint8)),
        ["ground_truth/distended/p1_b.png", f"mask is {H}x{H} but its image p1_b.png is {W}x{H}"],
    ),
    "unreadable image": (lambda r: (r / "anomaly_0/sqr/test/nd/p2_a.png").write_bytes(b"garbage"), ["anomaly_0/sqr/test/nd/p2_a.png", "not a readable image"]),
    "class differs between folds": (
        lambda r: _move(r / "anomaly_1/sqr/train/nd/p2_a.png", r / "anomaly_1/sqr/train/distended/p2_a.png"),
        ["anomaly_1/sqr/train/distended/p2_a.png", "distended here but normal"],
    ),
    "box differs between folds": (
        lambda r: (r / "anomaly_1/sqr/boxes/p2_a.txt").write_text("0 0.5 0.5 0.5 0.5\n"),
        ["anomaly_1/sqr/boxes/p2_a.txt", "anomaly_0/sqr/boxes/p2_a.txt"],
    ),
    "image in two splits of a fold": (
        lambda r: save_png(r / "anomaly_0/sqr/valid/nd/p1_a.png", np.zeros((H, W), np.uint8)),
        ["anomaly_0/sqr/valid/nd/p1_a.png", "one split and class per fold"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REFERENCE))
def test_bad_reference_input_is_rejected_naming_the_file_and_problem(tmp_path, case):
    breaker, expected = BAD_REFERENCE[case]
    root = make_reference(tmp_path / "reference")
    breaker(root)
    with pytest.raises(DataError) as info:
        load_reference(root)
    for part in expected:
        assert part in str(info.value), f"{part!r} not in {str(info.value)!r}"


def test_a_folder_without_fold_folders_is_not_the_reference_layout(tmp_path):
    with pytest.raises(DataError, match="no anomaly_<fold>/sqr folders"):
        load_reference(tmp_path)
