"""The flat layout: reading, validation (every problem named with its file), atomic writing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from format_builders import FLAT_ROWS, H, W, asymmetric_mask, gray, leftovers, make_flat, save_png, write_csv
from lib.data.flat import FlatItem, read_flat, write_flat
from lib.data.imageio import read_image, read_mask
from lib.errors import DataError


def test_read_flat_returns_one_record_per_row_with_boxes_labels_patients(flat_dir):
    records = read_flat(flat_dir)
    assert [r.image for r in records] == [row[0] for row in FLAT_ROWS]
    assert [(r.patient_id, r.label, r.box) for r in records] == [(row[1], row[2], tuple(row[3:])) for row in FLAT_ROWS]
    by_name = {r.image: r for r in records}
    assert by_name["p1_b"].mask_path == flat_dir / "masks" / "p1_b.png"
    assert all(by_name[n].mask_path is None for n in ("p1_a", "p2_a", "p2_b"))


def test_image_without_a_row_is_read_as_unlabelled(flat_dir):
    save_png(flat_dir / "images" / "new_one.png", gray(99))
    record = read_flat(flat_dir)[-1]
    assert (record.image, record.label, record.box, record.patient_id) == ("new_one", None, None, "new_one")


def test_header_bom_extension_in_name_and_label_case_are_tolerated(flat_dir):
    rows = [list(r) for r in FLAT_ROWS]
    rows[0][0], rows[0][2] = "p1_a.png", "Normal"
    write_csv(flat_dir / "labels.csv", rows)
    text = (flat_dir / "labels.csv").read_text()
    (flat_dir / "labels.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert read_flat(flat_dir)[0].image == "p1_a" and read_flat(flat_dir)[0].label == "normal"


def test_all_zero_mask_of_a_normal_image_is_the_empty_mask(flat_dir):
    save_png(flat_dir / "masks" / "p1_a.png", np.zeros((H, W), np.uint8))
    assert read_flat(flat_dir)[0].mask_path is None


def _rows_with(index: int, **changes) -> list[list]:
    rows = [list(r) for r in FLAT_ROWS]
    cols = {"image": 0, "patient_id": 1, "label": 2, "x_min": 3, "y_min": 4, "x_max": 5, "y_max": 6}
    for key, value in changes.items():
        rows[index][cols[key]] = value
    return rows


def _break_rows(rows):
    return lambda root: write_csv(root / "labels.csv", rows)


def _missing_column(root):
    write_csv(root / "labels.csv", [r[:-1] for r in FLAT_ROWS], header=("image", "patient_id", "label", "x_min", "y_min", "x_max"))


def _extra_column(root):
    write_csv(root / "labels.csv", [r + ["x"] for r in FLAT_ROWS], header=("image", "patient_id", "label", "x_min", "y_min", "x_max", "y_max", "note"))


def _unreadable_image(root):
    (root / "images" / "p2_a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")


def _truncated_image(root):
    path = root / "images" / "p2_a.png"
    Image.fromarray(gray(5, 200, 200)).save(path)
    path.write_bytes(path.read_bytes()[:200])


def _missing_image(root):
    (root / "images" / "p2_b.png").unlink()


def _mask_size_mismatch(root):
    save_png(root / "masks" / "p1_b.png", np.ones((W, H), np.uint8) * 255)  # transposed size


def _mask_on_normal(root):
    save_png(root / "masks" / "p1_a.png", asymmetric_mask().astype(np.uint8) * 255)


def _empty_mask_on_distended(root):
    save_png(root / "masks" / "p1_b.png", np.zeros((H, W), np.uint8))


def _duplicate_file_names(root):
    Image.fromarray(gray(3)).save(root / "images" / "p2_b.jpg")


def _mask_without_image(root):
    save_png(root / "masks" / "ghost.png", asymmetric_mask().astype(np.uint8) * 255)


def _no_labels_csv(root):
    (root / "labels.csv").unlink()
    save_png(root / "masks" / "x.png", np.zeros((2, 2), np.uint8))


BAD_FLAT = {
    "missing column": (_missing_column, ["labels.csv", "missing column(s) y_max"]),
    "unknown column": (_extra_column, ["labels.csv", "unknown column(s) note"]),
    "missing box": (_break_rows(_rows_with(1, x_min="", y_min="", x_max="", y_max="")), ["labels.csv:3", "p1_b", "missing box"]),
    "missing box field": (_break_rows(_rows_with(1, y_max="")), ["labels.csv:3", "missing box field(s) y_max"]),
    "box outside the image": (_break_rows(_rows_with(0, x_max=W + 1)), ["labels.csv:2", "p1_a", f"leaves the {W}x{H} image"]),
    "negative box": (_break_rows(_rows_with(0, x_min=-1)), ["labels.csv:2", "leaves the"]),
    "zero-area box": (_break_rows(_rows_with(0, x_max=5)), ["labels.csv:2", "empty or inverted"]),
    "inverted box": (_break_rows(_rows_with(0, y_min=20, y_max=4)), ["labels.csv:2", "empty or inverted"]),
    "fractional box": (_break_rows(_rows_with(0, x_min="1.5")), ["labels.csv:2", "whole pixels"]),
    "box not a number": (_break_rows(_rows_with(0, x_min="left")), ["labels.csv:2", "x_min = 'left' is not a number"]),
    "unknown label": (_break_rows(_rows_with(2, label="abnormal")), ["labels.csv:4", "p2_a", "unknown label 'abnormal'"]),
    "missing label": (_break_rows(_rows_with(2, label="")), ["labels.csv:4", "missing label"]),
    "missing patient": (_break_rows(_rows_with(2, patient_id=" ")), ["labels.csv:4", "patient_id is empty"]),
    "duplicate row": (_break_rows([list(r) for r in FLAT_ROWS] + [list(FLAT_ROWS[0])]), ["labels.csv:6", "duplicate image 'p1_a'", "line 2"]),
    "row without image file": (_break_rows([list(r) for r in FLAT_ROWS] + [["p9_z", "p9", "normal", 1, 1, 2, 2]]), ["labels.csv:6", "image file not found", "p9_z"]),
    "unreadable image": (_unreadable_image, ["images/p2_a.png", "not a readable image"]),
    "truncated image": (_truncated_image, ["images/p2_a.png", "not a readable image"]),
    "missing image file": (_missing_image, ["labels.csv:5", "image file not found", "p2_b"]),
    "mask size mismatch": (_mask_size_mismatch, ["masks/p1_b.png", f"mask is {H}x{W} but its image p1_b.png is {W}x{H}"]),
    "mask on a normal image": (_mask_on_normal, ["masks/p1_a.png", "labels 'p1_a' normal"]),
    "empty mask on a distended image": (_empty_mask_on_distended, ["masks/p1_b.png", "is empty"]),
    "same name, two extensions": (_duplicate_file_names, ["duplicate image name 'p2_b'", "p2_b.jpg", "p2_b.png"]),
    "mask without image": (_mask_without_image, ["masks/ghost.png", "mask without an image"]),
    "no labels.csv": (_no_labels_csv, ["no labels.csv"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAT))
def test_bad_flat_input_is_rejected_naming_the_file_and_problem(tmp_path, case):
    breaker, expected = BAD_FLAT[case]
    root = make_flat(tmp_path / "flat")
    breaker(root)
    with pytest.raises(DataError) as info:
        read_flat(root)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_every_problem_is_listed_in_one_error(flat_dir):
    _unreadable_image(flat_dir)
    _break_rows(_rows_with(1, label="abnormal", x_max=999))(flat_dir)
    with pytest.raises(DataError) as info:
        read_flat(flat_dir)
    message = str(info.value)
    assert "3 problems" in message
    assert "unknown label 'abnormal'" in message and "leaves the" in message and "not a readable image" in message


def test_a_long_problem_list_is_capped(flat_dir):
    rows = [list(r) for r in FLAT_ROWS] + [[f"gone{i}", "p", "normal", 1, 1, 2, 2] for i in range(60)]
    write_csv(flat_dir / "labels.csv", rows)
    with pytest.raises(DataError, match=r"60 problems[\s\S]*\.\.\. and 10 more"):
        read_flat(flat_dir)


def test_write_flat_round_trips_pixels_boxes_and_masks(tmp_path):
    image = gray(1)
    items = [
        FlatItem("n1", "p1", "normal", (1, 2, 10, 12), image.astype(np.float32) / 255.0),
        FlatItem("d1", "p1", "distended", (3, 3, 30, 20), gray(2), asymmetric_mask()),
        FlatItem("u1", "p2", None, None, gray(3)),
    ]
    records = write_flat(tmp_path / "out", items)
    assert records == read_flat(tmp_path / "out")
    assert [(r.image, r.label, r.box) for r in records] == [("n1", "normal", (1, 2, 10, 12)), ("d1", "distended", (3, 3, 30, 20)), ("u1", None, None)]
    assert np.array_equal(np.rint(read_image(records[0].image_path) * 255).astype(np.uint8), image)
    assert np.array_equal(read_mask(records[1].mask_path), asymmetric_mask())


def test_write_flat_copies_the_files_of_records(flat_dir, tmp_path):
    records = read_flat(flat_dir)
    copied = write_flat(tmp_path / "copy", records)
    assert [(r.image, r.patient_id, r.label, r.box) for r in copied] == [(r.image, r.patient_id, r.label, r.box) for r in records]
    assert all(c.image_path.read_bytes() == r.image_path.read_bytes() for c, r in zip(copied, records))


def test_write_flat_refuses_a_non_empty_folder_and_writes_nothing_when_invalid(flat_dir, tmp_path):
    with pytest.raises(DataError, match="already exists and is not empty"):
        write_flat(flat_dir, [FlatItem("x", "p", "normal", (0, 0, 1, 1), gray(0))])
    bad = [FlatItem("x", "p", "normal", (0, 0, W + 5, 1), gray(0))]
    with pytest.raises(DataError, match=f"leaves the {W}x{H} image") as info:
        write_flat(tmp_path / "new", bad)
    assert str(tmp_path / "new" / "labels.csv") in str(info.value)
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    before = sorted(p.name for p in (flat_dir / "images").iterdir())
    with pytest.raises(DataError):
        write_flat(flat_dir, bad, overwrite=True)
    assert sorted(p.name for p in (flat_dir / "images").iterdir()) == before


def test_write_flat_never_replaces_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.txt").write_text("precious")
    with pytest.raises(DataError, match="not a flat dataset"):
        write_flat(tmp_path / "home", [FlatItem("x", "p", "normal", (0, 0, 1, 1), gray(0))], overwrite=True)
    assert (tmp_path / "home" / "thesis.txt").read_text() == "precious"
