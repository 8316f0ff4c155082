"""Training both models through POST /train: completion, refusal of a second run, hot reload, safe failures.

Runs last in this folder (file order) and restores the session's tiny models afterwards,
so that later tests find the models they expect.
"""

import hashlib
import os
import shutil

import pytest
import requests

from tests.app.helpers import TIMEOUT, infer_json, wait_train_done, wait_train_running

pytestmark = pytest.mark.server

TINY_TRAIN = {"max_epochs": 1, "quick": True, "train_batch_size": 8}
BOX = {"box": [30, 20, 70, 44]}


@pytest.fixture
def restore_models(server, tmp_path):
    backup = tmp_path / "models"
    shutil.copytree(server.models_dir, backup)
    yield
    for name in ("loris", "recess_detection"):
        target = server.models_dir / name
        os.replace(target, tmp_path / f"{name}.trained")
        shutil.copytree(backup / name, target)


def _checksum(path):
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_training_both_models_completes_and_serves_without_restart(server, restore_models):
    first = infer_json(server.url, "loris", server.sample_image_id, BOX)
    assert first.status_code == 200, first.text
    before = first.json()["model_version"]
    started = requests.post(f"{server.url}/train/recess_detection", json=TINY_TRAIN, timeout=TIMEOUT)
    assert started.status_code == 200, started.text
    wait_train_running(server.url)
    refused = requests.post(f"{server.url}/train/loris", json=TINY_TRAIN, timeout=TIMEOUT)
    assert refused.status_code == 429 and "Already Running" in refused.json()["detail"]
    status = wait_train_done(server.url)
    assert status["status"] == "DONE", status
    assert status["request"]["model"] == "recess_detection" and status["request"]["max_epochs"] == 1

    assert requests.post(f"{server.url}/train/loris", json=TINY_TRAIN, timeout=TIMEOUT).status_code == 200
    status = wait_train_done(server.url)
    assert status["status"] == "DONE", status

    after = infer_json(server.url, "loris", server.sample_image_id, BOX)
    assert after.status_code == 200 and after.json()["model_version"] != before
    stats = requests.get(f"{server.url}/info/", timeout=TIMEOUT).json()["train_stats"]
    from lib.loris.settings import LorisSettings

    assert stats["loris"]["settings"]["max_epochs"] == 1  # the request
    assert stats["loris"]["settings"]["image_size"] == LorisSettings.quick().image_size  # the quick preset
    assert stats["recess_detection"]["settings"]["max_epochs"] == 1
    assert stats["loris"]["n_images"] > 0


def test_refused_or_stopped_training_leaves_the_previous_model_serving(server):
    model = server.models_dir / "loris" / "model.pt"
    before = _checksum(model)
    for bad in ({"learning_rate": -1}, {"max_epochs": True}, {"max_epochs": "many"}):
        refused = requests.post(f"{server.url}/train/loris", json={**TINY_TRAIN, **bad}, timeout=TIMEOUT)
        assert refused.status_code == 400 and next(iter(bad)) in refused.json()["detail"], refused.text
    assert requests.post(f"{server.url}/train/no_such_model", json=TINY_TRAIN, timeout=TIMEOUT).status_code == 404

    assert requests.post(f"{server.url}/train/loris", json=TINY_TRAIN, timeout=TIMEOUT).status_code == 200
    wait_train_running(server.url)
    stopped = requests.delete(f"{server.url}/train/", timeout=TIMEOUT).json()
    assert stopped["status"] == "STOPPED"
    assert _checksum(model) == before
    assert infer_json(server.url, "loris", server.sample_image_id, BOX).status_code == 200
