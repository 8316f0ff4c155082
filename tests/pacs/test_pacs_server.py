"""The app served on a real PACS (``monailabel start_server --studies <Orthanc>/dicom-web``): list, infer,
correct, restart, train, and the same input checks as the local datastore."""

import json

import numpy as np
import pytest
import requests

from lib.data.imageio import read_mask
from tests.app.helpers import TIMEOUT, infer_json, png_bytes, put_label, read_png, wait_train_done

pytestmark = pytest.mark.server


def _objects(url):
    return requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=TIMEOUT).json()["objects"]


def test_the_app_lists_the_ultrasound_frames_of_the_pacs_and_not_its_ct(pacs_server):
    pacs = pacs_server.pacs
    objects = _objects(pacs_server.url)
    assert set(objects) == pacs.ultrasound and pacs.ct not in objects
    info = requests.get(f"{pacs_server.url}/info/", timeout=TIMEOUT).json()["datastore"]
    assert info["total"] == len(pacs.ultrasound) and info["pacs"]["filter"] == {"Modality": "US"}
    assert pacs_server.pacs.orthanc.dicomweb in info["pacs"]["url"]


def test_loris_on_a_frame_stored_in_the_pacs_returns_its_score_in_millimetres(pacs_server):
    pacs = pacs_server.pacs
    uid, record = next(iter(pacs.records.items()))
    response = infer_json(pacs_server.url, "loris", uid, {"box": list(record.box)})
    assert response.status_code == 200, response.text
    result = response.json()
    assert isinstance(result["score"], float) and result["distended"] == (result["score"] >= result["threshold"])
    assert result["pixel_spacing_mm"] == pytest.approx([pacs.spacing[uid]] * 2)
    assert result["measurements"]["unit"] == "mm" and result["image_size"] == [96, 64]
    image = requests.get(f"{pacs_server.url}/datastore/image", params={"image": uid}, timeout=TIMEOUT)
    assert image.status_code == 200 and image.content[128:132] == b"DICM"  # the instance, as the PACS sent it


def test_a_cine_loop_in_the_pacs_is_scored_frame_by_frame(pacs_server):
    pacs = pacs_server.pacs
    response = infer_json(pacs_server.url, "loris", pacs.cine, {"box": list(pacs.cine_box)})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["frame_count"] == 3 and result["frame"] == int(np.argmax(result["frame_scores"]))


def test_a_correction_saved_through_the_server_is_found_again_after_a_restart(pacs_server):
    pacs = pacs_server.pacs
    uid, record = next((u, r) for u, r in pacs.records.items() if r.label == "distended")
    mask = read_mask(record.mask_path).astype(np.uint8)
    saved = put_label(pacs_server.url, uid, mask, {"label": "distended", "box": list(record.box)})
    assert saved.status_code == 200, saved.text
    pacs_server.restart()
    info = requests.get(f"{pacs_server.url}/datastore/label/info", params={"label": uid, "tag": "final"},
                        timeout=TIMEOUT)
    assert info.status_code == 200 and info.json()["label"] == "distended" and info.json()["box"] == list(record.box)
    stored = requests.get(f"{pacs_server.url}/datastore/label", params={"label": uid, "tag": "final"},
                          timeout=TIMEOUT)
    assert np.array_equal(read_png(stored.content), mask)
    assert _objects(pacs_server.url)[uid]["labels"]["final"]["info"]["label"] == "distended"
    status = requests.get(f"{pacs_server.url}/info/", timeout=TIMEOUT).json()["datastore"]
    assert status["completed"] >= 1 and status["total"] == len(pacs.ultrasound)


def test_the_same_input_checks_as_the_local_datastore(pacs_server):
    pacs = pacs_server.pacs
    uid, record = next(iter(pacs.records.items()))
    too_large = infer_json(pacs_server.url, "loris", pacs.large, {"box": [0, 0, 10, 10]})
    assert too_large.status_code == 413 and "over the limit" in too_large.json()["detail"]
    wrong_size = put_label(pacs_server.url, uid, np.zeros((10, 10), np.uint8), {"label": "normal"})
    assert wrong_size.status_code == 400 and "mask is 10x10" in wrong_size.json()["detail"]
    contradiction = put_label(pacs_server.url, uid, np.ones((64, 96), np.uint8), {"label": "normal"})
    assert contradiction.status_code == 400 and "contradicts the mask" in contradiction.json()["detail"]
    escaping = put_label(pacs_server.url, "../../x", np.zeros((64, 96), np.uint8), {"label": "normal"})
    assert escaping.status_code == 400
    unknown = put_label(pacs_server.url, "1.2.3.4.5", np.zeros((64, 96), np.uint8), {"label": "normal"})
    assert unknown.status_code == 404
    forged = requests.put(f"{pacs_server.url}/datastore/image/info", params={"image": uid},
                          data={"info": json.dumps({"SOPInstanceUID": "1.2.3"})}, timeout=TIMEOUT)
    assert forged.status_code == 400 and "comes from the PACS" in forged.json()["detail"]
    assert not list(pacs_server.store.glob(f"{pacs.large}*"))  # nothing of the refused image was stored


def test_training_from_the_corrections_of_pacs_images(pacs_server):
    pacs = pacs_server.pacs
    uid = next(iter(pacs.records))
    before = infer_json(pacs_server.url, "loris", uid, {"box": list(pacs.records[uid].box)}).json()["model_version"]
    for uid, record in pacs.records.items():  # the clinician confirms every frame of the PACS
        mask = read_mask(record.mask_path).astype(np.uint8) if record.mask_path else np.zeros((64, 96), np.uint8)
        saved = put_label(pacs_server.url, uid, mask, {"label": record.label, "box": list(record.box)})
        assert saved.status_code == 200, saved.text
    started = requests.post(f"{pacs_server.url}/train/loris", json={"max_epochs": 1, "quick": True,
                                                                    "train_batch_size": 8}, timeout=TIMEOUT)
    assert started.status_code == 200, started.text
    status = wait_train_done(pacs_server.url, timeout=600)
    assert status["status"] == "DONE", (status, pacs_server.log_tail())
    stats = requests.get(f"{pacs_server.url}/info/", timeout=TIMEOUT).json()["train_stats"]["loris"]
    assert stats["n_images"] == len(pacs.records)  # every corrected PACS frame, read from the local store
    normal = sum(r.label == "normal" for r in pacs.records.values())
    assert 0 < stats["summary"]["n_train"] < normal  # trained on normal frames, the rest validates
    uid = next(iter(pacs.records))
    after = infer_json(pacs_server.url, "loris", uid, {"box": list(pacs.records[uid].box)})
    assert after.status_code == 200 and after.json()["model_version"] != before  # served without a restart
