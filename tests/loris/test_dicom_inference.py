"""DICOM ultrasound through the one pipeline: spacing in the outputs, measurements, cine loops in batches.

A tiny LoRIS model (32 px, 2 epochs) is trained once on the 64 x 64 fixture frames; what is checked
is the plumbing (geometry, frames, batches), not the model's quality.
"""

import json
import logging

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from lib.__main__ import main as cli
from lib.data.dicom import write_ultrasound_dicom
from lib.data.imageio import read_image_file, read_mask, to_uint8, write_png
from lib.errors import DataError, NoBoxError
from lib.loris.predictor import FORWARD_LOG
from lib.loris.settings import LorisSettings
from lib.loris.train import train
from lib.pipeline import Pipeline

from loris_fixtures import make_image, make_records

pytestmark = pytest.mark.slow  # trains a tiny model (a few seconds)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_infer")
    settings = LorisSettings.quick(image_size=32, channels=(8, 16, 32), strides=(2, 2), max_epochs=2, patience=50,
                                   msgms_scales=3)
    train(make_records(root / "train", 12, 2, seed=1), root / "model", settings,
          valid_records=make_records(root / "valid", 4, 3, seed=2), progress=False)
    return root / "model"


def frames(count, seed=5, distended=True):
    rng = np.random.default_rng(seed)
    out, box = [], None
    for _ in range(count):
        image, b, _mask = make_image(rng, distended)
        out.append(to_uint8(image))
        box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3]))
    return np.stack(out), box


def forwards(caplog):
    return sum(r.getMessage().startswith(FORWARD_LOG) for r in caplog.records)


def test_rgb_ultrasound_dicom_at_0_1_mm_carries_its_spacing_into_every_output(model, tmp_path, capsys):
    pixels, box = frames(1)
    dicom = write_ultrasound_dicom(tmp_path / "us.dcm", pixels[0], (0.1, 0.1), rgb=True)
    out = tmp_path / "out"
    assert cli(["infer", "--model", str(model), "--image", str(dicom), "--box", *map(str, box), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pixel_spacing_mm"] == [0.1, 0.1] and result["spacing_source"] == "ultrasound_region"
    assert (result["frame"], result["frame_count"], result["frame_scores"]) == (0, 1, None)
    header = nrrd.read_header(str(out / "anomaly_map.nrrd"))
    assert np.allclose(header["space directions"], np.diag([0.1, 0.1]))
    assert sitk.ReadImage(str(out / "anomaly_map.nrrd")).GetSpacing() == pytest.approx((0.1, 0.1))
    segmentation = sitk.ReadImage(str(out / "segmentation.nrrd"))
    assert segmentation.GetSpacing() == pytest.approx((0.1, 0.1))
    mask = read_mask(out / "mask.png")
    assert np.array_equal(sitk.GetArrayFromImage(segmentation), mask.astype(np.uint8))
    m = result["measurements"]
    assert m["unit"] == "mm" and m["area_pixels"] == result["mask_pixels"] == int(mask.sum())
    assert m["area_mm2"] == pytest.approx(mask.sum() * 0.01)
    assert m["max_thickness_mm"] == pytest.approx(mask.sum(axis=0).max() * 0.1)
    assert '"pixel_spacing_mm": [\n    0.1,\n    0.1\n  ]' in capsys.readouterr().out  # the command prints it too


def test_the_same_frame_as_png_scores_the_same_and_is_measured_in_pixels(model, tmp_path):
    pixels, box = frames(1)
    pipeline = Pipeline.load(model)
    dicom = pipeline.run_file(read_image_file(write_ultrasound_dicom(tmp_path / "us.dcm", pixels[0], (0.1, 0.1),
                                                                     rgb=True)), box).to_json()
    write_png(tmp_path / "us.png", pixels[0])
    png = pipeline.run_file(read_image_file(tmp_path / "us.png"), box).to_json()
    assert png["score"] == dicom["score"] and png["measurements"]["area_pixels"] == dicom["measurements"]["area_pixels"]
    assert png["pixel_spacing_mm"] is None and png["measurements"]["unit"] == "pixel"
    assert png["measurements"]["area_mm2"] is None and "no pixel spacing" in png["measurements"]["note"]


def test_a_three_frame_cine_names_its_most_anomalous_frame_from_one_batched_pass(model, tmp_path, caplog):
    loop, box = frames(3)
    loop[1] = loop[1] // 3 + 120  # a washed-out frame: a different score
    dicom = write_ultrasound_dicom(tmp_path / "cine.dcm", loop, (0.1, 0.1), rgb=True)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="lib.loris.predictor"):
        assert cli(["infer", "--model", str(model), "--image", str(dicom), "--box", *map(str, box),
                    "--out", str(out)]) == 0
    assert forwards(caplog) == 2  # the 3 frames in one batch, then the chosen frame's maps
    result = json.loads((out / "result.json").read_text())
    scores = result["frame_scores"]
    assert result["frame_count"] == 3 and len(scores) == 3 and len(set(scores)) == 3
    assert result["frame"] == int(np.argmax(scores))
    assert result["score"] == pytest.approx(scores[result["frame"]], rel=1e-4)
    assert result["pixel_spacing_mm"] == [0.1, 0.1]

    chosen = tmp_path / "chosen"
    assert cli(["infer", "--model", str(model), "--image", str(dicom), "--box", *map(str, box), "--out", str(chosen),
                "--frame", "1"]) == 0
    one = json.loads((chosen / "result.json").read_text())
    assert (one["frame"], one["frame_count"], one["frame_scores"]) == (1, 3, None)
    assert one["score"] == pytest.approx(scores[1], rel=1e-4)


def test_a_frame_the_loop_lacks_is_an_error_that_writes_nothing(model, tmp_path, capsys):
    loop, box = frames(3)
    dicom = write_ultrasound_dicom(tmp_path / "cine.dcm", loop, (0.1, 0.1))
    assert cli(["infer", "--model", str(model), "--image", str(dicom), "--box", *map(str, box),
                "--out", str(tmp_path / "out"), "--frame", "3"]) == 2
    assert "frame 3 does not exist; the image has 3 frame(s)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_hundred_frame_loop_takes_seven_batched_forwards_plus_one(model, tmp_path, caplog):
    loop, box = frames(100, seed=9)
    image = read_image_file(write_ultrasound_dicom(tmp_path / "long.dcm", loop, (0.2, 0.2)))
    with caplog.at_level(logging.INFO, logger="lib.loris.predictor"):
        result = Pipeline.load(model).run_file(image, box, batch_size=16)
    assert forwards(caplog) == 7 + 1
    assert len(result.frame_scores) == 100 and result.frame == int(np.argmax(result.frame_scores))


def test_a_loop_without_box_or_detector_is_refused_as_a_single_frame_is(model, tmp_path):
    loop, _box = frames(3)
    image = read_image_file(write_ultrasound_dicom(tmp_path / "cine.dcm", loop, None))
    with pytest.raises(NoBoxError, match="no recess detector"):
        Pipeline.load(model).run_file(image)
    with pytest.raises(DataError, match="box"):
        Pipeline.load(model).run_file(image, (0, 0, 100, 10))
