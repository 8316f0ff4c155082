"""Infer tasks through the real server: box or roi, the automatic pipeline, anomaly map, not-trained answers."""

import os

import numpy as np
import pytest
import SimpleITK as sitk
from monailabel.client import MONAILabelClient

from lib.data.imageio import image_size
from lib.loris.postprocess import box_region, segment
from tests.app.helpers import infer_json, read_png

pytestmark = pytest.mark.server

RESULT_KEYS = {"score", "distended", "threshold", "pixel_threshold", "metric", "box", "box_source", "detector_confidence"}


def _size(server, image_id):
    return image_size(server.datastore / f"{image_id}.png")


def test_loris_with_box_returns_segmentation_score_and_decision(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    box = [30, 20, 70, 44]
    label_path, params = client.infer("loris", server.sample_image_id, {"box": box})
    assert RESULT_KEYS <= set(params)
    assert params["box"] == box and params["box_source"] == "request" and params["detector_confidence"] is None
    assert isinstance(params["distended"], bool) and params["distended"] == (params["score"] >= params["threshold"])
    mask = read_png(open(label_path, "rb").read())
    width, height = _size(server, server.sample_image_id)
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    outside = mask.copy()
    outside[box[1]:box[3], box[0]:box[2]] = 0
    assert not outside.any()  # the segmentation stays in the box: rows are y, columns are x


def test_loris_without_box_runs_the_detector_first(server):
    response = infer_json(server.url, "loris", server.sample_image_id, {})
    assert response.status_code == 200, response.text
    detected = infer_json(server.url, "recess_detection", server.sample_image_id).json()
    result = response.json()
    assert result["box_source"] == "detector"
    assert result["box"] == detected["box"] and result["detector_confidence"] == pytest.approx(detected["confidence"])


def test_the_command_line_and_the_server_give_the_same_automatic_result(server, tmp_path):
    # one pipeline: the detector's box, then the model's score, map and segmentation, whoever asks
    import json

    from lib.__main__ import main

    image_id = server.sample_image_id
    served = infer_json(server.url, "loris", image_id, {})
    assert served.status_code == 200, served.text
    served = served.json()
    assert main(["infer", "--model", str(server.models_dir / "loris"), "--detector",
                 str(server.models_dir / "recess_detection"), "--image", str(server.datastore / f"{image_id}.png"),
                 "--out", str(tmp_path / "out")]) == 0
    local = json.loads((tmp_path / "out" / "result.json").read_text())
    assert local["box"] == served["box"] and local["box_source"] == served["box_source"] == "detector"
    assert local["detector_confidence"] == pytest.approx(served["detector_confidence"])
    assert local["score"] == pytest.approx(served["score"], rel=1e-5) and local["distended"] == served["distended"]
    for key in ("metric", "pixel_metric", "threshold", "pixel_threshold", "display_range", "image_size"):
        assert local[key] == served[key], key


def test_roi_synonym_with_swapped_corners_is_sorted(server):
    plain = infer_json(server.url, "loris", server.sample_image_id, {"box": [30, 20, 70, 44]}).json()
    four = infer_json(server.url, "loris", server.sample_image_id, {"roi": [70, 44, 30, 20]}).json()
    six = infer_json(server.url, "loris", server.sample_image_id, {"roi": [70, 30, 20, 44, 0, 0]}).json()
    assert four["box"] == six["box"] == [30, 20, 70, 44]
    assert four["score"] == pytest.approx(plain["score"]) and six["score"] == pytest.approx(plain["score"])


@pytest.mark.parametrize("box", [[70, 20, 30, 44], [30, 20, 30, 44], [30, 20, 500, 44], [-1, 0, 10, 10], [1, 2, 3]])
def test_bad_infer_box_is_a_400_naming_the_box(server, box):
    response = infer_json(server.url, "loris", server.sample_image_id, {"box": box})
    assert response.status_code == 400, response.text
    assert "box" in response.json()["detail"]


def test_unknown_image_is_a_404_and_server_paths_are_refused(server):
    assert infer_json(server.url, "loris", "no_such_image", {"box": [0, 0, 4, 4]}).status_code == 404
    assert infer_json(server.url, "loris", "/etc/hostname", {"box": [0, 0, 4, 4]}).status_code == 400


def test_anomaly_map_is_float_nrrd_on_the_image_grid(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    box = [30, 20, 70, 44]
    map_path, params = client.infer("loris_anomaly_map", server.sample_image_id, {"box": box})
    _, seg_params = client.infer("loris", server.sample_image_id, {"box": box})
    image = sitk.ReadImage(map_path)
    array = sitk.GetArrayFromImage(image)
    width, height = _size(server, server.sample_image_id)
    assert image.GetSize() == (width, height) and array.dtype == np.float32
    assert image.GetOrigin() == (0.0, 0.0) and image.GetSpacing() == (1.0, 1.0)
    assert params["score"] == pytest.approx(seg_params["score"])
    # the segmentation is the method's post-processing of this very map: same grid, no transposition
    seg, _ = client.infer("loris", server.sample_image_id, {"box": box})
    seg = read_png(open(seg, "rb").read()).astype(bool)
    expected = segment(array, params["pixel_threshold"], box_region(box, height, width))
    np.testing.assert_array_equal(seg, expected)


def test_anomaly_map_answer_carries_the_segmentation_of_the_same_forward(server, tmp_path):
    import base64

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    box = [30, 20, 70, 44]
    _, params = client.infer("loris_anomaly_map", server.sample_image_id, {"box": box})
    seg_path, _ = client.infer("loris", server.sample_image_id, {"box": box})
    carried = read_png(base64.b64decode(params["mask_png_base64"]))
    np.testing.assert_array_equal(carried, read_png(open(seg_path, "rb").read()))


def test_recess_detection_returns_box_params_and_box_mask(server, tmp_path):
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    label_path, params = client.infer("recess_detection", server.sample_image_id, {})
    assert params["found"] is True and 0.0 <= params["confidence"] <= 1.0
    x0, y0, x1, y1 = params["box"]
    mask = read_png(open(label_path, "rb").read())
    expected = np.zeros_like(mask)
    expected[y0:y1, x0:x1] = 1
    np.testing.assert_array_equal(mask, expected)


def _moved_away(path):
    class Moved:
        def __enter__(self):
            os.replace(path, f"{path}.away")

        def __exit__(self, *exc):
            os.replace(f"{path}.away", path)

    return Moved()


def test_untrained_model_is_listed_and_answers_not_trained_yet(server):
    with _moved_away(server.models_dir / "loris"):
        info = MONAILabelClient(server.url).info()
        assert "loris" in info["models"] and "loris_anomaly_map" in info["models"]
        response = infer_json(server.url, "loris", server.sample_image_id, {"box": [30, 20, 70, 44]})
        assert response.status_code == 409 and "not trained yet" in response.json()["detail"]
    assert infer_json(server.url, "loris", server.sample_image_id, {"box": [30, 20, 70, 44]}).status_code == 200


def test_no_box_and_no_detector_is_a_409_with_advice(server):
    with _moved_away(server.models_dir / "recess_detection"):
        response = infer_json(server.url, "loris", server.sample_image_id, {})
        assert response.status_code == 409
        assert "box" in response.json()["detail"] and "recess_detection" in response.json()["detail"]
        assert infer_json(server.url, "loris", server.sample_image_id, {"box": [30, 20, 70, 44]}).status_code == 200


def test_loris_on_an_uploaded_file_needs_no_datastore_image(server):
    import requests

    data = (server.datastore / f"{server.sample_image_id}.png").read_bytes()
    response = requests.post(f"{server.url}/infer/loris", params={"output": "json"},
                             data={"params": '{"box": [30, 20, 70, 44]}'},
                             files={"file": ("frame.png", data, "image/png")}, timeout=120)
    assert response.status_code == 200, response.text
    from_store = infer_json(server.url, "loris", server.sample_image_id, {"box": [30, 20, 70, 44]}).json()
    assert response.json()["score"] == pytest.approx(from_store["score"])
