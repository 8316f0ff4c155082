"""Scoring unlabelled images and the active-learning strategies' documented order."""

import time

import pytest
import requests
from monailabel.client import MONAILabelClient

from tests.app.helpers import TIMEOUT

pytestmark = pytest.mark.server


def _infos(server, ids):
    return {i: requests.get(f"{server.url}/datastore/image/info", params={"image": i}, timeout=TIMEOUT).json()
            for i in ids}


def _unlabelled(server):
    objects = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT).json()["objects"]
    return sorted(k for k, v in objects.items() if not v["labels"].get("final"))


def test_scoring_scores_every_unlabelled_image_once_per_model(server):
    result = requests.post(f"{server.url}/scoring/loris_scoring", params={"run_sync": "true"}, timeout=TIMEOUT).json()
    unlabelled = _unlabelled(server)
    assert set(unlabelled) == set(server.unlabelled_ids)
    infos = _infos(server, unlabelled)
    for image_id, info in infos.items():
        scored = info["loris"]
        assert scored["box_source"] == "detector"  # unlabelled sample images carry no box
        assert scored["distended"] == (scored["score"] >= scored["threshold"])
    assert result["scored"] <= len(unlabelled)
    again = requests.post(f"{server.url}/scoring/loris_scoring", params={"run_sync": "true"}, timeout=TIMEOUT).json()
    assert again["scored"] == 0  # nothing new: scores of the current model are kept


def test_background_scoring_process_writes_scores_the_server_sees(server):
    stale = server.unlabelled_ids[0]
    requests.put(f"{server.url}/datastore/image/info", params={"image": stale}, data={"info": '{"loris": {}}'},
                 timeout=TIMEOUT).raise_for_status()
    assert requests.post(f"{server.url}/scoring/loris_scoring", timeout=TIMEOUT).status_code == 200
    deadline = time.time() + 180
    while time.time() < deadline:
        status = requests.get(f"{server.url}/scoring/", timeout=TIMEOUT).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    assert status["status"] == "DONE", status
    assert _infos(server, [stale])[stale]["loris"].get("score") is not None


def test_strategies_serve_unlabelled_images_in_the_documented_order(server, tmp_path):
    requests.post(f"{server.url}/scoring/loris_scoring", params={"run_sync": "true"}, timeout=TIMEOUT).raise_for_status()
    infos = _infos(server, _unlabelled(server))
    scores = {i: info["loris"] for i, info in infos.items()}
    most = min(scores, key=lambda i: (-scores[i]["score"], i))
    uncertain = min(scores, key=lambda i: (abs(scores[i]["score"] - scores[i]["threshold"]), i))
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    answer = client.next_sample("loris_most_anomalous", {})
    assert answer["id"] == most and answer["score"] == pytest.approx(scores[most]["score"])
    assert client.next_sample("loris_uncertain", {})["id"] == uncertain
    assert client.next_sample("random", {})["id"] in scores


def test_scoring_uses_the_box_stored_in_the_image_info(server):
    image_id = server.unlabelled_ids[-1]
    info = '{"loris": {}, "box": [20, 10, 60, 30]}'
    requests.put(f"{server.url}/datastore/image/info", params={"image": image_id}, data={"info": info},
                 timeout=TIMEOUT).raise_for_status()
    requests.post(f"{server.url}/scoring/loris_scoring", params={"run_sync": "true"}, timeout=TIMEOUT).raise_for_status()
    scored = _infos(server, [image_id])[image_id]["loris"]
    assert scored["box"] == [20, 10, 60, 30] and scored["box_source"] == "image_info"
    bad = requests.put(f"{server.url}/datastore/image/info", params={"image": image_id},
                       data={"info": '{"box": [20, 10, 600, 30]}'}, timeout=TIMEOUT)
    assert bad.status_code == 400 and "box" in bad.json()["detail"]
