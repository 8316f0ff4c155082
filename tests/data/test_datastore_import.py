"""MONAI Label datastore: flat -> datastore -> read back equal; what monailabel's LocalDatastore sees; atomicity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from format_builders import FLAT_ROWS, H, W, asymmetric_mask, gray, leftovers, make_flat, save_png, write_csv
from lib.data.datastore import DATASTORE_CONFIG, default_extensions, open_local_datastore, read_datastore, write_datastore
from lib.data.flat import read_flat
from lib.data.imageio import read_image, read_mask
from lib.data.records import Record
from lib.errors import DataError


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_flat_to_datastore_reads_back_equal(flat_dir, tmp_path):
    source = read_flat(flat_dir)
    written = write_datastore(source, tmp_path / "ds")
    assert written == read_datastore(tmp_path / "ds")
    by_name = {r.image: r for r in written}
    assert sorted(by_name) == sorted(r.image for r in source)
    for r in source:
        back = by_name[r.image]
        assert (back.patient_id, back.label, back.box) == (r.patient_id, r.label, r.box)
        assert back.image_path == tmp_path / "ds" / f"{r.image}.png"
        assert np.array_equal(read_image(back.image_path), read_image(r.image_path))
        assert (back.mask_path is None) == (r.mask_path is None)
        if r.mask_path is not None:
            assert np.array_equal(read_mask(back.mask_path), read_mask(r.mask_path))


def test_final_labels_are_uint8_zero_one_masks_of_the_image_size(flat_dir, tmp_path):
    write_datastore(read_flat(flat_dir), tmp_path / "ds")
    for row in FLAT_ROWS:
        label = Image.open(tmp_path / "ds" / "labels" / "final" / f"{row[0]}.png")
        assert label.mode == "L" and label.size == (W, H)
        values = set(np.unique(np.asarray(label)).tolist())
        assert values == ({0, 1} if row[2] == "distended" else {0})


def test_an_asymmetric_mask_survives_import_pixel_for_pixel(flat_dir, tmp_path):
    write_datastore(read_flat(flat_dir), tmp_path / "ds")
    label = _pixels(tmp_path / "ds" / "labels" / "final" / "p1_b.png")
    assert label.shape == (H, W)
    assert np.array_equal(label, asymmetric_mask().astype(np.uint8))
    assert label[11, 14] == 1 and label[14, 11] == 0  # the foot points right (x), not down (y)


def test_monailabel_local_datastore_sees_images_labels_and_info(flat_dir, tmp_path):
    assert "*.png" in default_extensions()
    write_datastore(read_flat(flat_dir), tmp_path / "ds")
    store = open_local_datastore(tmp_path / "ds")
    names = [row[0] for row in FLAT_ROWS]
    assert sorted(store.list_images()) == sorted(names)
    assert sorted(store.get_labeled_images()) == sorted(names)
    assert len(store.datalist()) == len(names)
    info = store.get_label_info("p1_b", "final")
    assert (info["label"], info["box"], info["patient_id"]) == ("distended", [2, 1, 20, 14], "p1")
    assert store.get_image_info("p2_a")["patient_id"] == "p2"
    assert store.get_label_uri("p1_b", "final").endswith("labels/final/p1_b.png")


def test_a_server_reconciling_the_datastore_changes_nothing_we_read(flat_dir, tmp_path):
    from monailabel.datastore.local import LocalDatastore

    records = write_datastore(read_flat(flat_dir), tmp_path / "ds")
    # as `monailabel start_server --studies` builds it (read-write, default file patterns)
    store = LocalDatastore(str(tmp_path / "ds"), extensions=default_extensions(), auto_reload=False)
    assert store.status()["completed"] == len(records)
    assert read_datastore(tmp_path / "ds") == records


def test_unlabelled_images_get_no_final_label_and_keep_patient_and_box(tmp_path):
    save_png(tmp_path / "u.png", gray(0))
    records = [Record("u1", tmp_path / "u.png", "p7"), Record("u2", tmp_path / "u.png", "p8", box=(1, 2, 3, 4))]
    back = write_datastore(records, tmp_path / "ds")
    assert [(r.image, r.patient_id, r.label, r.box, r.mask_path) for r in back] == [
        ("u1", "p7", None, None, None),
        ("u2", "p8", None, (1, 2, 3, 4), None),
    ]
    assert sorted(open_local_datastore(tmp_path / "ds").get_unlabeled_images()) == ["u1", "u2"]


def test_distended_image_without_mask_reads_back_without_mask(tmp_path):
    save_png(tmp_path / "d.png", gray(0))
    back = write_datastore([Record("d", tmp_path / "d.png", "p", "distended", (1, 1, 9, 9))], tmp_path / "ds")
    assert back[0].label == "distended" and back[0].mask_path is None
    assert not _pixels(tmp_path / "ds" / "labels" / "final" / "d.png").any()


def test_rgb_png_is_imported_as_8bit_grayscale(tmp_path):
    rgb = np.stack([gray(1), gray(2), gray(3)], axis=-1)
    save_png(tmp_path / "rgb.png", rgb)
    back = write_datastore([Record("rgb", tmp_path / "rgb.png", "p", "normal", (0, 0, 4, 4))], tmp_path / "ds")
    stored = Image.open(back[0].image_path)
    assert stored.mode == "L" and stored.size == (W, H)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(np.asarray(stored).astype(np.float64) - luma).max() <= 0.5 + 1e-6


def test_jpeg_is_imported_as_png(tmp_path):
    Image.fromarray(gray(4)).save(tmp_path / "j.jpg", quality=95)
    back = write_datastore([Record("j", tmp_path / "j.jpg", "p", "normal", (0, 0, 4, 4))], tmp_path / "ds")
    assert back[0].image_path.suffix == ".png"
    assert np.array_equal(_pixels(back[0].image_path), np.asarray(Image.open(tmp_path / "j.jpg")))


def test_dicom_frame_is_imported_as_png_with_its_pixels(tmp_path):
    import SimpleITK as sitk

    frame = gray(5)
    sitk.WriteImage(sitk.GetImageFromArray(frame), str(tmp_path / "us.dcm"))
    root = make_flat(tmp_path / "flat")
    shutil.copyfile(tmp_path / "us.dcm", root / "images" / "scan_1.dcm")
    write_csv(root / "labels.csv", [list(r) for r in FLAT_ROWS] + [["scan_1", "p3", "normal", 1, 2, 30, 20]])
    back = {r.image: r for r in write_datastore(read_flat(root), tmp_path / "ds")}
    assert _pixels(back["scan_1"].image_path).shape == (H, W)
    assert np.array_equal(_pixels(back["scan_1"].image_path), frame)
    assert back["scan_1"].box == (1, 2, 30, 20)


def test_rgb_dicom_frame_is_imported_as_grayscale(tmp_path):
    import SimpleITK as sitk

    rgb = np.stack([gray(6), gray(7), gray(8)], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.dcm"))
    back = write_datastore([Record("rgb_dcm", tmp_path / "rgb.dcm", "p", "normal", (0, 0, 4, 4))], tmp_path / "ds")
    stored = Image.open(back[0].image_path)
    assert stored.mode == "L" and stored.size == (W, H)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(np.asarray(stored).astype(np.float64) - luma).max() <= 0.5 + 1e-3


def test_an_existing_datastore_needs_merge_or_overwrite(flat_dir, tmp_path):
    records = read_flat(flat_dir)
    write_datastore(records[:2], tmp_path / "ds")
    with pytest.raises(DataError, match="already exists there; use --merge .* or --overwrite"):
        write_datastore(records[2:], tmp_path / "ds")
    merged = write_datastore(records[2:], tmp_path / "ds", mode="merge")
    assert sorted(r.image for r in merged) == sorted(r.image for r in records)
    with pytest.raises(DataError, match="'p2_a' is already in the datastore"):
        write_datastore(records[2:3], tmp_path / "ds", mode="merge")
    replaced = write_datastore(records[:1], tmp_path / "ds", mode="overwrite")
    assert [r.image for r in replaced] == [records[0].image]
    assert sorted(p.name for p in (tmp_path / "ds").glob("*.png")) == [f"{records[0].image}.png"]
    assert leftovers(tmp_path) == []


def test_a_folder_that_is_not_a_datastore_is_never_written_into(flat_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    for mode in ("create", "merge", "overwrite"):
        with pytest.raises(DataError, match="not a MONAI Label datastore"):
            write_datastore(read_flat(flat_dir), tmp_path / "notes", mode=mode)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_bad_records_write_nothing(flat_dir, tmp_path):
    records = read_flat(flat_dir)
    save_png(tmp_path / "small_mask.png", np.ones((5, 5), np.uint8))
    bad = [*records, Record("bad", records[0].image_path, "p", "distended", (0, 0, 5, 5), tmp_path / "small_mask.png")]
    with pytest.raises(DataError, match=r"small_mask.png: mask is 5x5 but its image p1_a.png is 40x24"):
        write_datastore(bad, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    # the same for an existing datastore being merged into: it stays as it was
    write_datastore(records[:1], tmp_path / "ds")
    before = (tmp_path / "ds" / DATASTORE_CONFIG).read_text()
    with pytest.raises(DataError):
        write_datastore(bad[1:], tmp_path / "ds", mode="merge")
    assert (tmp_path / "ds" / DATASTORE_CONFIG).read_text() == before
    assert sorted(p.name for p in (tmp_path / "ds").glob("*.png")) == ["p1_a.png"]


def test_names_monailabel_would_mangle_are_rejected(tmp_path):
    save_png(tmp_path / "x.png", gray(0))
    with pytest.raises(DataError, match="MONAI Label would read the name 'a.png.b' as 'a.b'"):
        write_datastore([Record("a.png.b", tmp_path / "x.png", "p")], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_reading_picks_up_unindexed_images_and_rejects_bad_label_info(flat_dir, tmp_path):
    write_datastore(read_flat(flat_dir), tmp_path / "ds")
    save_png(tmp_path / "ds" / "dropped_in.png", gray(9))
    dropped = {r.image: r for r in read_datastore(tmp_path / "ds")}["dropped_in"]
    assert (dropped.label, dropped.box, dropped.patient_id) == (None, None, "dropped_in")
    index = json.loads((tmp_path / "ds" / DATASTORE_CONFIG).read_text())
    index["objects"]["p1_a"]["labels"]["final"]["info"]["label"] = "weird"
    index["objects"]["p2_a"]["labels"]["final"]["info"]["box"] = [0, 0, W + 1, H]
    (tmp_path / "ds" / DATASTORE_CONFIG).write_text(json.dumps(index))
    with pytest.raises(DataError) as info:
        read_datastore(tmp_path / "ds")
    assert "'p1_a'" in str(info.value) and "unknown label 'weird'" in str(info.value)
    assert "'p2_a'" in str(info.value) and "leaves the 40x24 image" in str(info.value)
