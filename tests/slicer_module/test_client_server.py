"""The Slicer module's HTTP client (``LoRISLib``) against a real ``monailabel start_server`` of this app.

Uses the session fixture ``server`` of ``tests/conftest.py`` (tiny datastore,
tiny trained models). These are the calls the module makes, in the order a
clinician makes them: connect, next image, download, detect, LoRIS with a box,
anomaly map, submit a correction, train, status, stop.
"""

import io
import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from LoRISLib import geometry, results
from LoRISLib.client import MODELS, STRATEGIES, TRAINERS, LoRISClient, LoRISClientError

pytestmark = pytest.mark.server


@pytest.fixture
def client(server):
    return LoRISClient(server.url, timeout=60, infer_timeout=300)


def _image_size(server, image_id):
    with Image.open(server.datastore / f"{image_id}.png") as img:
        return img.size  # (W, H)


def test_connect_lists_every_model_trainer_and_strategy(client):
    info = client.info()
    assert client.check_models(info) == []
    assert set(TRAINERS) <= set(info["trainers"]) and set(STRATEGIES) <= set(info["strategies"])
    stats = client.datastore("stats")
    assert stats["total"] > 0


def test_next_image_returns_an_unlabelled_image_and_downloads_it(client, server, tmp_path):
    answer = client.next_image("random")
    assert answer is not None, "the fixture datastore has unlabelled images"
    # other server tests may add images, so check "unlabelled" against the datastore, not the fixture's list
    labels = client.datastore("all")["objects"][answer["id"]].get("labels", {})
    assert "final" not in labels
    path = client.download_image(answer["id"], str(tmp_path))
    assert open(path, "rb").read() == (server.datastore / f"{answer['id']}.png").read_bytes()
    assert client.has_image(answer["id"]) and not client.has_image("no_such_image")


def test_loris_with_box_gives_result_and_mask_on_the_image_grid(client, server):
    width, height = _image_size(server, server.sample_image_id)
    box = [width // 4, height // 4, width // 2 + 10, height // 2 + 8]
    response = client.infer("loris", server.sample_image_id, {"box": box})
    result = results.parse_loris_result(response.params)
    assert result.box == box and result.box_source == "request"
    assert result.distended == (result.score >= result.threshold)
    with Image.open(io.BytesIO(response.label)) as image:
        assert image.size == (width, height)
        values = np.asarray(image)
    assert set(np.unique(values)) <= {0, 1}
    outside = values.copy()
    outside[box[1]:box[3], box[0]:box[2]] = 0
    assert not outside.any()


def test_one_anomaly_map_request_gives_map_segmentation_and_result(client, server, tmp_path):
    width, height = _image_size(server, server.sample_image_id)
    box = [10, 8, 60, 40]
    response = client.infer("loris_anomaly_map", server.sample_image_id, {"box": box})
    assert response.label_name.endswith(".nrrd")
    answer = results.parse_loris_answer(response.params, response.label)
    assert answer.result.box == box and answer.result.image_size == [width, height]
    low, high = results.map_display_range(answer.result)
    assert low < high
    path = tmp_path / "map.nrrd"
    path.write_bytes(answer.anomaly_map)
    amap = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert amap.dtype == np.float32 and amap.reshape(height, width).shape == (height, width)
    assert np.isfinite(amap).all()
    # the segmentation in the same answer is the one `loris` gives for the same box
    with Image.open(io.BytesIO(answer.mask_png)) as image:
        mask = np.asarray(image)
    with Image.open(io.BytesIO(client.infer("loris", server.sample_image_id, {"box": box}).label)) as image:
        assert np.array_equal(mask, np.asarray(image))


def test_a_server_without_tokens_accepts_requests_that_carry_one(server):
    token_client = LoRISClient(server.url, token="a-token", timeout=60)
    assert token_client.check_models() == []


def test_detect_recess_box_converts_to_an_roi_and_back(client, server):
    detection = results.parse_detection(client.infer("recess_detection", server.sample_image_id).params)
    assert detection.found  # the fixture's detector reports its best box (score threshold 0)
    m = geometry.png_ijk_to_ras()
    center, size = geometry.pixel_box_to_roi(detection.box, m)
    assert geometry.roi_to_pixel_box(center, size, m, _image_size(server, server.sample_image_id)) == detection.box


def test_submitted_correction_is_stored_pixel_for_pixel_with_class_and_box(client, server, tmp_path):
    # A new image, so the fixture's own images stay as other tests expect them.
    width, height = 96, 64
    frame = (np.arange(width * height) % 251).astype(np.uint8).reshape(height, width)
    path = tmp_path / "slicer_client_upload.png"
    Image.fromarray(frame, mode="L").save(path)
    image_id = client.upload_image(str(path), "slicer_client_upload", {"patient_id": "slicer-test"})
    assert image_id == "slicer_client_upload" and client.has_image(image_id)

    mask = np.zeros((height, width), np.uint8)
    mask[5:12, 70:90] = 1  # top right: catches transposition and flips
    box = [60, 2, 92, 20]
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    png = buffer.getvalue()
    client.save_label(image_id, png, {"label": "distended", "box": box}, tag="final")

    with Image.open(server.datastore / "labels" / "final" / f"{image_id}.png") as img:
        assert np.array_equal(np.asarray(img) > 0, mask > 0)
    objects = client.datastore("all")["objects"]
    info = objects[image_id]["labels"]["final"]["info"]
    assert info["label"] == "distended" and info["box"] == box


def test_server_errors_reach_the_module_with_the_servers_message(client):
    with pytest.raises(LoRISClientError) as err:
        client.infer("loris", "no_such_image", {"box": [0, 0, 4, 4]})
    assert 400 <= err.value.status < 500 and err.value.message
    with pytest.raises(LoRISClientError) as err:
        client.infer("loris", "no_such_image", {"box": [9, 9, 2, 2]})
    assert 400 <= err.value.status < 500


def test_training_starts_reports_status_and_stops(client):
    task = client.train("loris", {"max_epochs": 1, "quick": True})
    assert task["status"] in ("SUBMITTED", "RUNNING")
    deadline = time.time() + 60
    status = results.parse_train_status(client.train_status())
    while status.status == "SUBMITTED" and time.time() < deadline:
        time.sleep(0.5)
        status = results.parse_train_status(client.train_status())
    assert status.model == "loris" and status.status in ("RUNNING", "DONE", "ERROR")
    if status.running:
        client.stop_train()
    deadline = time.time() + 60
    while status.running and time.time() < deadline:
        time.sleep(0.5)
        status = results.parse_train_status(client.train_status())
    assert status.status in ("STOPPED", "DONE", "ERROR"), json.dumps(status.details[-5:])
