"""Corrections through PUT /datastore/label: persistence, orientation, concurrency, and every bad input rejected."""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from lib.data.imageio import image_size, read_mask
from tests.app.helpers import TIMEOUT, png_bytes, put_image, put_label, read_png, snapshot

pytestmark = pytest.mark.server


def _labelled_ids(server):
    records = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT).json()["objects"]
    return sorted(k for k, v in records.items() if v["labels"].get("final"))


def _size(server, image_id):
    return image_size(server.datastore / f"{image_id}.png")


def _label_info(server, image_id):
    return requests.get(f"{server.url}/datastore/label/info", params={"label": image_id, "tag": "final"},
                        timeout=TIMEOUT).json()


def test_saved_label_lines_up_with_its_image_pixel_for_pixel(server, tmp_path):
    image_id = server.sample_image_id
    width, height = _size(server, image_id)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[5:9, 10:40] = 1  # a wide bar near the top-left ...
    mask[5:30, 10:13] = 1  # ... and a tall leg: an L, asymmetric in x and y
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    path = tmp_path / "mask.png"
    path.write_bytes(png_bytes(mask * 255))
    client.save_label(image_id, str(path), tag="final", params={"label": "distended", "box": [8, 3, 45, 32]})

    on_disk = read_mask(server.datastore / "labels" / "final" / f"{image_id}.png")
    np.testing.assert_array_equal(on_disk, mask.astype(bool))
    downloaded = read_png(requests.get(f"{server.url}/datastore/label", params={"label": image_id, "tag": "final"},
                                       timeout=TIMEOUT).content)
    np.testing.assert_array_equal(downloaded, mask)  # stored as 0/1, same H x W, no transposition or flip


def test_correction_with_class_and_box_persists_across_a_restart(server):
    image_id = _labelled_ids(server)[1]
    width, height = _size(server, image_id)
    response = put_label(server.url, image_id, np.zeros((height, width)), {"label": "normal", "box": [11, 12, 51, 22],
                                                                           "patient_id": "p-restart"})
    assert response.status_code == 200, response.text
    server.restart()
    info = _label_info(server, image_id)
    assert info["label"] == "normal" and info["box"] == [11, 12, 51, 22] and info["patient_id"] == "p-restart"


def test_concurrent_label_submissions_for_different_images_are_all_kept(server):
    ids = _labelled_ids(server)[2:10]
    width, height = _size(server, ids[0])

    def submit(i_and_id):
        i, image_id = i_and_id
        return put_label(server.url, image_id, np.zeros((height, width)), {"label": "normal", "box": [i, 1, 40 + i, 9]})

    with ThreadPoolExecutor(len(ids)) as pool:
        statuses = [r.status_code for r in pool.map(submit, enumerate(ids))]
    assert statuses == [200] * len(ids)
    index = json.loads((server.datastore / "datastore_v2.json").read_text())["objects"]
    for i, image_id in enumerate(ids):
        assert index[image_id]["labels"]["final"]["info"]["box"] == [i, 1, 40 + i, 9]
        assert _label_info(server, image_id)["box"] == [i, 1, 40 + i, 9]


def test_label_without_class_takes_it_from_the_mask(server):
    image_id = _labelled_ids(server)[0]
    width, height = _size(server, image_id)
    mask = np.zeros((height, width))
    mask[10:12, 10:12] = 1
    assert put_label(server.url, image_id, mask, {"box": [5, 5, 20, 20]}).status_code == 200
    info = _label_info(server, image_id)
    assert info["label"] == "distended" and info["label_source"] == "mask"


def _blank_png(width, height):
    return png_bytes(np.zeros((height, width)))


BAD_LABEL_PARAMS = [
    ({"label": "swollen", "box": [1, 1, 10, 10]}, 400, "valid labels are normal, distended"),
    ({"label": "normal", "box": [1, 1, 500, 10]}, 400, "leaves"),
    ({"label": "normal", "box": [10, 10, 1, 1]}, 400, "inverted"),
    ({"label": "normal", "box": [5, 5, 5, 9]}, 400, "empty"),
    ({"label": "normal", "box": [1, 2, 3]}, 400, "4 values"),
]


@pytest.mark.parametrize("params,status,message", BAD_LABEL_PARAMS)
def test_bad_label_params_are_rejected_and_change_nothing(server, params, status, message):
    image_id = server.sample_image_id
    width, height = _size(server, image_id)
    before = snapshot(server.datastore)
    response = put_label(server.url, image_id, np.zeros((height, width)), params)
    assert response.status_code == status and message in response.json()["detail"], response.text
    assert snapshot(server.datastore) == before


def test_bad_uploads_are_rejected_and_change_nothing(server):
    image_id = server.sample_image_id
    width, height = _size(server, image_id)
    good = np.zeros((height, width))
    before = snapshot(server.datastore)
    cases = {
        "image id with ..": (put_image(server.url, "../../escaped", _blank_png(8, 8)), 400),
        "image id with /": (put_image(server.url, "a/b", _blank_png(8, 8)), 400),
        "deprecated PUT /datastore/ with ..": (requests.put(
            f"{server.url}/datastore/", params={"image": "../../escaped"},
            files={"file": ("x.png", _blank_png(8, 8), "image/png")}, timeout=TIMEOUT), 400),
        "label for image id with ..": (put_label(server.url, "../escaped", good, {"label": "normal"}), 400),
        "label tag with ..": (put_label(server.url, image_id, good, {"label": "normal"}, tag="../../escaped"), 400),
        "label tag with /": (put_label(server.url, image_id, good, {"label": "normal"}, tag="a/b"), 400),
        "label of an unknown image": (put_label(server.url, "no_such_image", good, {"label": "normal"}), 404),
        "mask of the wrong size": (put_label(server.url, image_id, np.zeros((height, width + 1)), {"label": "normal"}), 400),
        "mask not decodable": (put_label(server.url, image_id, good, {"label": "normal"}, data=b"not a png"), 400),
        "mask of an unknown type": (put_label(server.url, image_id, good, {"label": "normal"}, name="x.bmp"), 400),
        "image not decodable": (put_image(server.url, "garbage", b"\x89PNG but not really"), 400),
        "image of an unknown type": (put_image(server.url, "text", b"hello", name="x.txt"), 400),
        "image over the byte limit": (put_image(server.url, "big", b"\x00" * 2_000_001), 413),
        "image over the pixel limit": (put_image(server.url, "huge", _blank_png(1100, 1000)), 413),
        "image id that exists": (put_image(server.url, image_id, _blank_png(8, 8)), 409),
    }
    for what, (response, status) in cases.items():
        assert response.status_code == status, (what, response.status_code, response.text)
        assert response.json()["detail"], what
    assert snapshot(server.datastore) == before
    assert not list(server.datastore.parent.glob("escaped*")) and not list(server.datastore.parent.parent.glob("escaped*"))


def test_valid_image_upload_is_added(server):
    image = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    response = put_image(server.url, "uploaded_frame", png_bytes(image))
    assert response.status_code == 200, response.text
    stored = read_png(requests.get(f"{server.url}/datastore/image", params={"image": "uploaded_frame"},
                                   timeout=TIMEOUT).content)
    np.testing.assert_array_equal(stored, image)
    assert requests.delete(f"{server.url}/datastore/image", params={"id": "uploaded_frame"}, timeout=TIMEOUT).ok
    assert not (server.datastore / "uploaded_frame.png").exists()
