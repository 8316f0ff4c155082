"""The synthetic sample-data generator, its dataset summary and the ``sample-data`` command.

Small frames (64 x 48 to 96 x 64) and few patients keep the whole file to a few seconds.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from lib.__main__ import main as cli_main
from lib.data import synthetic
from lib.data.flat import read_flat
from lib.data.summary import auroc, box_darkness_score, format_summary, summarize
from lib.data.synthetic import DEFAULT_IMAGE_SIZE, generate, parse_image_size, render_preview, write_sample_data
from lib.errors import DataError

SMALL = (64, 48)
COLUMNS = ["image", "patient_id", "label", "x_min", "y_min", "x_max", "y_max"]


@pytest.fixture(scope="module")
def moderate():
    """24 patients of 96 x 64 frames (about 120 frames, a quarter distended)."""
    return list(generate(patients=24, seed=11, image_size=(96, 64)))


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    a = list(generate(patients=3, seed=5, image_size=SMALL))
    b = list(generate(patients=3, seed=5, image_size=SMALL))
    c = list(generate(patients=3, seed=6, image_size=SMALL))
    assert [x.name for x in a] == [x.name for x in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image)
        assert x.box == y.box and x.label == y.label and x.patient_id == y.patient_id
        assert (x.mask is None) == (y.mask is None)
        assert x.mask is None or np.array_equal(x.mask, y.mask)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c))


def test_written_layout_has_the_documented_columns_files_and_values(tmp_path):
    out = tmp_path / "sample"
    records = write_sample_data(out, patients=3, seed=2, image_size=SMALL)
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == COLUMNS
    assert len(rows) - 1 == len(records) >= 3 * 4
    for image, patient_id, label, *box in rows[1:]:
        assert label in ("normal", "distended")
        with Image.open(out / "images" / f"{image}.png") as img:
            assert img.mode == "L" and img.size == SMALL
        mask_file = out / "masks" / f"{image}.png"
        assert mask_file.exists() == (label == "distended")
        if label == "distended":
            mask = np.asarray(Image.open(mask_file))
            assert mask.shape == (SMALL[1], SMALL[0]) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
        x0, y0, x1, y1 = (int(v) for v in box)
        assert 0 <= x0 < x1 <= SMALL[0] and 0 <= y0 < y1 <= SMALL[1]
    # the dataset reader of the flat layout accepts it as written
    assert [(r.image, r.label, r.box) for r in read_flat(out)] == [(r.image, r.label, r.box) for r in records]


def test_about_a_quarter_of_the_frames_are_distended_in_whole_patients():
    items = list(generate(patients=12, seed=3, image_size=SMALL))
    fraction = sum(x.label == "distended" for x in items) / len(items)
    assert abs(fraction - 0.25) <= 0.5 / len(items) + 1e-9  # rounded to whole frames
    by_patient: dict[str, set] = {}
    for x in items:
        by_patient.setdefault(x.patient_id, set()).add(x.label)
    assert sum(labels == {"normal", "distended"} for labels in by_patient.values()) <= 1  # at most one split patient
    assert all(4 <= sum(x.patient_id == p for x in items) <= 6 for p in by_patient)
    half = list(generate(patients=6, seed=3, image_size=SMALL, distended_fraction=0.5))
    assert abs(sum(x.label == "distended" for x in half) / len(half) - 0.5) <= 0.5 / len(half) + 1e-9


def test_masks_only_for_distended_frames_and_boxes_cover_them(moderate):
    height, width = moderate[0].image.shape
    for x in moderate:
        assert x.image.dtype == np.uint8 and x.image.shape == (height, width)
        x0, y0, x1, y1 = x.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        if x.label == "normal":
            assert x.mask is None
            continue
        assert x.mask.dtype == bool and x.mask.shape == (height, width) and x.mask.any()
        inside = x.mask[y0:y1, x0:x1].sum() / x.mask.sum()
        assert inside >= 0.9, f"{x.name}: box covers {inside:.0%} of the mask"


def test_distended_boxes_are_taller_and_box_darkness_does_not_separate_perfectly(moderate):
    labels = [x.label for x in moderate]
    heights = {c: np.median([x.box[3] - x.box[1] for x in moderate if x.label == c]) for c in ("normal", "distended")}
    assert heights["distended"] > heights["normal"]
    darkness = [box_darkness_score(x.image / 255.0, x.box) for x in moderate]
    value = auroc(labels, darkness)
    assert 0.5 < value < 1.0  # informative, but borderline cases overlap
    assert any(x.borderline and x.label == "normal" for x in moderate)
    assert any(x.borderline and x.label == "distended" for x in moderate)


def test_recess_looks_darker_than_its_surroundings(moderate):
    # the fluid is darker than the tissue in its box: the image carries the class, not only the box
    for x in (x for x in moderate if x.mask is not None):
        x0, y0, x1, y1 = x.box
        inside = x.image[x.mask].mean()
        ring = x.image[y0:y1, x0:x1][~x.mask[y0:y1, x0:x1]].mean()
        assert inside < ring, x.name


def test_default_frame_is_not_square_and_has_a_black_scanner_margin():
    assert DEFAULT_IMAGE_SIZE == (640, 480)
    frame = next(iter(generate(patients=1, seed=0)))
    assert frame.image.shape == (480, 640)
    assert frame.image[:, :5].max() <= 5 and frame.image[-3:, :].max() <= 5  # black border outside the field of view
    x0, y0, x1, y1 = frame.box
    assert frame.image[y0:y1, x0:x1].std() > 10  # speckled tissue, not a flat fill


@pytest.mark.parametrize("text", ["640", "640x", "x480", "abcxdef", "0x480", "640x10", "-640x480"])
def test_bad_image_size_is_a_clear_error(text):
    with pytest.raises(DataError, match="--image-size"):
        parse_image_size(text)


def test_image_size_parses_width_then_height():
    assert parse_image_size("800x600") == (800, 600)
    assert parse_image_size("64X96") == (64, 96)


def test_summary_counts_and_reports_box_leakage(tmp_path):
    records = write_sample_data(tmp_path / "s", patients=4, seed=1, image_size=SMALL)
    summary = summarize(records)
    assert summary["images"] == len(records)
    assert summary["labels"]["distended"] + summary["labels"]["normal"] == len(records)
    assert summary["patients"] == 4 and summary["image_sizes"] == {"64x48": len(records)}
    assert summary["masks"] == summary["labels"]["distended"]
    for key in ("box_shape_auroc", "box_intensity_auroc", "box_height_auroc", "box_width_auroc"):
        assert 0.0 <= summary[key] <= 1.0
    text = format_summary(summary)
    assert "box-shape AUROC" in text and "box-intensity AUROC" in text


def test_summary_of_one_class_has_no_auroc(tmp_path):
    records = write_sample_data(tmp_path / "s", patients=1, seed=1, image_size=SMALL, distended_fraction=0.0)
    summary = summarize(records)
    assert summary["box_shape_auroc"] is None and summary["box_intensity_auroc"] is None
    assert "n/a" in format_summary(summary)


def test_sample_data_command_writes_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["sample-data", "--out", str(out), "--patients", "2", "--seed", "4", "--image-size", "64x48"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "box-shape AUROC" in printed and str(out) in printed
    assert (out / "labels.csv").is_file() and len(list((out / "images").glob("*.png"))) >= 8


def test_sample_data_command_rejects_bad_arguments(tmp_path, capsys):
    assert cli_main(["sample-data", "--out", str(tmp_path / "a"), "--image-size", "big"]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert cli_main(["sample-data", "--out", str(tmp_path / "b"), "--distended-fraction", "1.5"]) == 2
    assert "--distended-fraction" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unrelated_folder_is_never_replaced(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a flat dataset"):
        write_sample_data(out, patients=1, image_size=SMALL)
    assert (out / "thesis.txt").read_text() == "keep me"
    write_sample_data(tmp_path / "s", patients=1, image_size=SMALL)
    again = write_sample_data(tmp_path / "s", patients=2, image_size=SMALL)  # a sample data set is replaced
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == len(again)


def test_a_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic._render

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_render", failing)
    with pytest.raises(RuntimeError):
        write_sample_data(tmp_path / "s", patients=2, image_size=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_preview_picture_is_written(tmp_path):
    path = render_preview(tmp_path / "preview.png", image_size=(96, 64), patients=4, columns=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 50


def test_dicom_sample_frames_carry_their_calibration_and_leave_the_overlays_outside(tmp_path):
    import pydicom

    from lib.data.imageio import read_image, read_image_file

    png = {r.image: r for r in write_sample_data(tmp_path / "png", patients=2, seed=3, image_size=(320, 240))}
    dicom = write_sample_data(tmp_path / "dcm", patients=2, seed=3, image_size=(320, 240), image_format="dicom")
    frames = {x.name: x for x in generate(patients=2, seed=3, image_size=(320, 240))}
    assert [r.image_path.suffix for r in dicom] == [".dcm"] * len(dicom) and set(png) == {r.image for r in dicom}
    studies = {}
    for r in dicom:
        ds = pydicom.dcmread(str(r.image_path))
        assert ds.Modality == "US" and ds.PhotometricInterpretation == "RGB"
        studies.setdefault(r.patient_id, set()).add(ds.StudyInstanceUID)
        image, item = read_image_file(r.image_path), frames[r.image]
        assert image.pixel_spacing_mm == pytest.approx((item.pixel_mm, item.pixel_mm))
        x0, y0, x1, y1 = item.imaging_region
        inside = np.zeros(image.frames[0].shape, bool)
        inside[y0:y1, x0:x1] = True
        gray = read_image(png[r.image].image_path)
        assert np.array_equal(image.frames[0][inside], gray[inside]) and not image.frames[0][~inside].any()
        assert gray[~inside].any()  # the PNG keeps the burned-in labels and scale that the DICOM region leaves out
        assert r.box == png[r.image].box
    assert all(len(uids) == 1 for uids in studies.values()) and len(studies) == 2  # one study per patient


def test_cine_loops_are_written_with_their_table(tmp_path):
    from lib.data.imageio import read_image_file

    assert cli_main(["sample-data", "--out", str(tmp_path / "s"), "--patients", "2", "--image-size", "96x64",
                     "--format", "dicom", "--cine-frames", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s" / "cine" / "loops.csv")))
    assert [r["loop"] for r in rows] == ["p001_cine", "p002_cine"] and {r["frames"] for r in rows} == {"3"}
    assert any(r["label"] == "distended" and r["most_distended_frame"] for r in rows)
    for row in rows:
        loop = read_image_file(tmp_path / "s" / "cine" / f"{row['loop']}.dcm")
        assert loop.frame_count == 3 and loop.pixel_spacing_mm == pytest.approx((float(row["pixel_mm"]),) * 2)
        assert not np.array_equal(loop.frames[0], loop.frames[2])  # the probe moves
        x0, y0, x1, y1 = (int(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64
    assert read_flat(tmp_path / "s")  # the flat data set beside the loops reads back
    assert cli_main(["sample-data", "--out", str(tmp_path / "t"), "--cine-frames", "1"]) == 2
