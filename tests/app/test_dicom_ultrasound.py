"""Scanner DICOM through the real server's local datastore: spacing, measurements, cine loops, frame labels."""

import io
import json

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from monailabel.client import MONAILabelClient

from lib.data.datastore import read_datastore
from lib.data.dicom import write_ultrasound_dicom
from tests.app.helpers import TIMEOUT, infer_json, put_label, snapshot

pytestmark = pytest.mark.server

W, H = 96, 64
BOX = [30, 20, 70, 44]


def _dicom_bytes(tmp_path, name, pixels, spacing=(0.1, 0.1), region=None):
    return write_ultrasound_dicom(tmp_path / f"{name}.dcm", pixels, spacing, region, rgb=True).read_bytes()


def _frame(server, seed=0):
    from lib.data.imageio import read_image, to_uint8

    base = to_uint8(read_image(server.datastore / f"{server.sample_image_id}.png"))
    noise = np.random.default_rng(seed).integers(0, 30, base.shape)
    return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def upload(server, tmp_path):
    """Upload DICOM images under fresh ids; they are removed again after the test."""
    added = []

    def put(image_id, pixels, spacing=(0.1, 0.1), region=None):
        data = _dicom_bytes(tmp_path, image_id, pixels, spacing, region)
        response = requests.put(f"{server.url}/datastore/image", params={"image": image_id},
                                files={"file": (f"{image_id}.dcm", data, "application/dicom")},
                                data={"params": json.dumps({"patient_id": "dicom-test"})}, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        added.append(image_id)
        return image_id

    yield put
    for image_id in added:
        requests.delete(f"{server.url}/datastore/image", params={"id": image_id}, timeout=TIMEOUT)


def test_uploaded_ultrasound_dicom_keeps_its_calibration_in_the_image_info(server, upload):
    image_id = upload("us_calibrated", _frame(server))
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": image_id}, timeout=TIMEOUT).json()
    assert info["pixel_spacing_mm"] == [0.1, 0.1] and info["spacing_source"] == "ultrasound_region"
    assert info["frame_count"] == 1
    assert (server.datastore / f"{image_id}.dcm").is_file()  # stored as uploaded, calibration included
    refused = requests.put(f"{server.url}/datastore/image/info", params={"image": image_id},
                           data={"info": json.dumps({"pixel_spacing_mm": [1, 1]})}, timeout=TIMEOUT)
    assert refused.status_code == 400 and "pixel_spacing_mm is read from the image file" in refused.json()["detail"]


def test_loris_on_a_calibrated_dicom_answers_in_millimetres_with_a_map_in_millimetres(server, upload, tmp_path):
    image_id = upload("us_map", _frame(server))
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    map_path, params = client.infer("loris_anomaly_map", image_id, {"box": BOX})
    assert params["pixel_spacing_mm"] == [0.1, 0.1] and params["frame"] == 0 and params["frame_count"] == 1
    amap = sitk.ReadImage(map_path)
    assert amap.GetSpacing() == pytest.approx((0.1, 0.1)) and amap.GetSize() == (W, H)
    m = params["measurements"]
    assert m["unit"] == "mm" and m["area_mm2"] == pytest.approx(m["area_pixels"] * 0.01)
    assert m["max_thickness_mm"] == pytest.approx(m["max_thickness_pixels"] * 0.1)


def test_the_command_line_and_the_server_give_the_same_json_for_a_dicom(server, upload, tmp_path):
    from lib.__main__ import main

    image_id = upload("us_same", _frame(server, 3))
    served = infer_json(server.url, "loris", image_id, {"box": BOX})
    assert served.status_code == 200, served.text
    served = served.json()
    assert main(["infer", "--model", str(server.models_dir / "loris"), "--image",
                 str(server.datastore / f"{image_id}.dcm"), "--box", *map(str, BOX), "--out", str(tmp_path / "o")]) == 0
    written = json.loads((tmp_path / "o" / "result.json").read_text())
    for key in ("score", "distended", "box", "pixel_spacing_mm", "spacing_source", "measurements", "frame",
                "frame_count", "frame_scores", "image_size"):
        assert written[key] == served[key], key


def test_a_cine_loop_is_scored_whole_or_at_a_chosen_frame(server, upload):
    loop = np.stack([_frame(server, seed) for seed in range(3)])
    loop[2] = loop[2] // 4  # a dark frame scores differently
    image_id = upload("us_cine", loop)
    whole = infer_json(server.url, "loris", image_id, {"box": BOX})
    assert whole.status_code == 200, whole.text
    whole = whole.json()
    assert whole["frame_count"] == 3 and len(whole["frame_scores"]) == 3
    assert whole["frame"] == int(np.argmax(whole["frame_scores"]))
    one = infer_json(server.url, "loris", image_id, {"box": BOX, "frame": 2}).json()
    assert one["frame"] == 2 and one["frame_scores"] is None
    assert one["score"] == pytest.approx(whole["frame_scores"][2], rel=1e-4)
    detected = infer_json(server.url, "recess_detection", image_id, {"frame": 1}).json()
    assert detected["frame"] == 1 and detected["frame_count"] == 3
    for frame, message in ((3, "frame 3 does not exist; the image has 3 frame(s)"),
                           ("1", "params.frame: expected a whole number"), (True, "expected a whole number"),
                           (1.5, "expected a whole number")):
        response = infer_json(server.url, "loris", image_id, {"box": BOX, "frame": frame})
        assert response.status_code == 400 and message in response.json()["detail"], (frame, response.text)


def test_a_label_of_a_cine_loop_names_its_frame_and_training_reads_that_frame(server, upload):
    loop = np.stack([_frame(server, seed) for seed in range(3)])
    image_id = upload("us_cine_label", loop)
    mask = np.zeros((H, W), np.uint8)
    mask[25:35, 40:60] = 1
    before = snapshot(server.datastore)
    missing = put_label(server.url, image_id, mask, {"label": "distended", "box": BOX})
    assert missing.status_code == 400 and "params.frame: the image is a cine loop of 3 frames" in missing.text
    wrong = put_label(server.url, image_id, mask, {"label": "distended", "box": BOX, "frame": 3})
    assert wrong.status_code == 400 and "frame 3 does not exist" in wrong.text
    assert snapshot(server.datastore) == before  # nothing half-written
    saved = put_label(server.url, image_id, mask, {"label": "distended", "box": BOX, "frame": 1})
    assert saved.status_code == 200, saved.text
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": image_id, "tag": "final"},
                        timeout=TIMEOUT)
    assert info.status_code == 200 and info.json()["frame"] == 1
    record = next(r for r in read_datastore(server.datastore) if r.image == image_id)
    assert record.frame == 1 and record.label == "distended" and record.box == tuple(BOX)

    from lib.data.imageio import read_boxed_images, read_image

    frame = read_boxed_images([record])[0]
    assert np.array_equal(frame, read_image(server.datastore / f"{image_id}.dcm", 1))


def test_an_unreadable_dicom_upload_is_refused_and_nothing_is_written(server):
    before = snapshot(server.datastore)
    response = requests.put(f"{server.url}/datastore/image", params={"image": "broken_dicom"},
                            files={"file": ("broken.dcm", io.BytesIO(b"DICM but not really"), "application/dicom")},
                            timeout=TIMEOUT)
    assert response.status_code == 400 and "broken_dicom" in response.json()["detail"]
    assert snapshot(server.datastore) == before
