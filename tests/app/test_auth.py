"""The access token, CORS and the no-token policy, through real servers.

``secured_server`` has a token (from a file) and one allowed CORS origin; ``server`` has
none, so it serves protected requests to its own machine only. A client "beyond
localhost" is simulated with ``X-Forwarded-For``, which uvicorn trusts from 127.0.0.1.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient

from lib.data.imageio import image_size
from lib.server.http.auth import AccessPolicy
from tests.app.conftest import ALLOWED_ORIGIN
from tests.app.helpers import TIMEOUT, infer_json, png_bytes, put_label, snapshot, wait_train_running

BOX = [30, 20, 70, 44]


def _an_image(s) -> str:
    return sorted(p.stem for p in s.datastore.glob("*.png"))[0]


def _protected_requests(s, image_id):
    """One request of each protected kind: training, label and image writes, models, logs, tasks."""
    url = s.url
    width, height = image_size(s.datastore / f"{image_id}.png")
    mask = png_bytes(np.zeros((height, width)))
    return {
        "train": lambda h: requests.post(f"{url}/train/loris", json={"max_epochs": 1}, headers=h, timeout=TIMEOUT),
        "train stop": lambda h: requests.delete(f"{url}/train/", headers=h, timeout=TIMEOUT),
        "label write": lambda h: requests.put(f"{url}/datastore/label", params={"image": image_id, "tag": "final"},
                                              data={"params": '{"label": "normal"}'},
                                              files={"label": ("l.png", mask, "image/png")}, headers=h,
                                              timeout=TIMEOUT),
        "label info write": lambda h: requests.put(f"{url}/datastore/label/info",
                                                   params={"label": image_id, "tag": "final"},
                                                   data={"info": "{}"}, headers=h, timeout=TIMEOUT),
        "label delete": lambda h: requests.delete(f"{url}/datastore/label", params={"id": image_id, "tag": "final"},
                                                  headers=h, timeout=TIMEOUT),
        "image upload": lambda h: requests.put(f"{url}/datastore/image", params={"image": "new_image"},
                                               files={"file": ("x.png", mask, "image/png")}, headers=h,
                                               timeout=TIMEOUT),
        "image delete": lambda h: requests.delete(f"{url}/datastore/image", params={"id": image_id}, headers=h,
                                                  timeout=TIMEOUT),
        "model download": lambda h: requests.get(f"{url}/model/loris", headers=h, timeout=TIMEOUT),
        "model upload": lambda h: requests.put(f"{url}/model/loris", files={"file": ("model.pt", b"x" * 100)},
                                               headers=h, timeout=TIMEOUT),
        "model delete": lambda h: requests.delete(f"{url}/model/loris", headers=h, timeout=TIMEOUT),
        "logs": lambda h: requests.get(f"{url}/logs/", params={"text": "true"}, headers=h, timeout=TIMEOUT),
        "scoring": lambda h: requests.post(f"{url}/scoring/loris_scoring", json={}, headers=h, timeout=TIMEOUT),
        "batch infer": lambda h: requests.post(f"{url}/batch/infer/loris", json={}, headers=h, timeout=TIMEOUT),
        "reload": lambda h: requests.post(f"{url}/reload", headers=h, timeout=TIMEOUT),
        "dataset download": lambda h: requests.get(f"{url}/datastore/dataset", headers=h, timeout=TIMEOUT),
    }


@pytest.mark.server
def test_with_a_token_protected_requests_without_it_are_refused_and_change_nothing(secured_server):
    s = secured_server
    image_id = _an_image(s)
    before, models = snapshot(s.datastore), snapshot(s.models_dir)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {s.token}"},
                    {"Authorization": s.token}):
        for name, call in _protected_requests(s, image_id).items():
            response = call(headers)
            assert response.status_code == 401, (name, headers, response.status_code, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "token" in response.json()["detail"]
    assert snapshot(s.datastore) == before and snapshot(s.models_dir) == models
    # reads and inference stay open (auth_scope writes)
    assert requests.get(f"{s.url}/info/", timeout=TIMEOUT).status_code == 200
    assert infer_json(s.url, "loris", image_id, {"box": BOX}).status_code == 200


@pytest.mark.server
def test_the_stock_client_logs_in_with_the_token_and_writes(secured_server, tmp_path):
    s = secured_server
    image_id = _an_image(s)
    width, height = image_size(s.datastore / f"{image_id}.png")
    mask_path = tmp_path / "mask.png"
    mask_path.write_bytes(png_bytes(np.zeros((height, width))))

    client = MONAILabelClient(s.url, tmpdir=str(tmp_path))
    assert client.auth_enabled()
    with pytest.raises(Exception):
        client.auth_token("anyone", "not the token")
    client.update_auth(client.auth_token("anyone", s.token))
    assert client.auth_valid_token()
    client.save_label(image_id, str(mask_path), tag="final", params={"label": "normal", "box": [1, 2, 30, 20]})

    # exactly what a client that holds the token sends
    client = MONAILabelClient(s.url, tmpdir=str(tmp_path))
    client.update_auth({"token_type": "Bearer", "access_token": s.token})
    client.save_label(image_id, str(mask_path), tag="final", params={"label": "normal", "box": [2, 2, 30, 20]})
    assert client.datastore()["objects"][image_id]["labels"]["final"]["info"]["box"] == [2, 2, 30, 20]
    label_path, result = client.infer("loris", image_id, {"box": BOX})
    assert "score" in result


@pytest.mark.server
def test_with_the_token_training_models_and_logs_are_served(secured_server):
    s = secured_server
    image_id = _an_image(s)
    A = s.auth
    assert requests.get(f"{s.url}/logs/", params={"text": "true", "lines": 5}, headers=A,
                        timeout=TIMEOUT).status_code == 200
    weights = requests.get(f"{s.url}/model/loris", headers=A, timeout=TIMEOUT)
    assert weights.status_code == 200
    model = s.models_dir / "loris" / "model.pt"
    assert hashlib.sha1(weights.content).digest() == hashlib.sha1(model.read_bytes()).digest()

    assert requests.delete(f"{s.url}/model/loris", headers=A, timeout=TIMEOUT).status_code == 200
    assert infer_json(s.url, "loris", image_id, {"box": BOX}).status_code == 409  # no model now
    restored = requests.put(f"{s.url}/model/loris", files={"file": ("model.pt", weights.content)}, headers=A,
                            timeout=TIMEOUT)
    assert restored.status_code == 200, restored.text
    assert restored.json()["checksum"] == "SHA256:" + hashlib.sha256(weights.content).hexdigest()
    assert infer_json(s.url, "loris", image_id, {"box": BOX}).status_code == 200

    archive = requests.get(f"{s.url}/datastore/dataset", params={"limit_cases": 2}, headers=A, timeout=TIMEOUT)
    assert archive.status_code == 200 and archive.content[:2] == b"PK"
    assert not list((s.datastore / ".uploads").iterdir())  # the archive was built there and deleted once sent

    started = requests.post(f"{s.url}/train/recess_detection", json={"max_epochs": 1}, headers=A, timeout=TIMEOUT)
    assert started.status_code == 200, started.text
    wait_train_running(s.url)
    assert requests.delete(f"{s.url}/train/", headers=A, timeout=TIMEOUT).json()["status"] == "STOPPED"


@pytest.mark.server
def test_cors_answers_only_the_configured_origin_without_credentials(secured_server, server):
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization"}
    allowed = requests.options(f"{secured_server.url}/datastore/label", headers={"Origin": ALLOWED_ORIGIN, **preflight},
                               timeout=TIMEOUT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-credentials" not in allowed.headers
    for url in (secured_server.url, server.url):
        other = requests.options(f"{url}/datastore/label", headers={"Origin": "https://evil.example", **preflight},
                                 timeout=TIMEOUT)
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        simple = requests.get(f"{url}/info/", headers={"Origin": "https://evil.example"}, timeout=TIMEOUT)
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


@pytest.mark.server
def test_without_a_token_protected_requests_are_served_to_this_machine_only(server):
    image_id = sorted(p.stem for p in server.datastore.glob("*.png"))[0]
    beyond = {"X-Forwarded-For": "203.0.113.7"}  # uvicorn trusts this header from 127.0.0.1
    before = snapshot(server.datastore)
    for name, call in _protected_requests(server, image_id).items():
        response = call(beyond)
        assert response.status_code == 403, (name, response.status_code, response.text)
        assert "LORIS_AUTH_TOKEN_FILE" in response.json()["detail"]
    assert snapshot(server.datastore) == before
    assert requests.get(f"{server.url}/info/", headers=beyond, timeout=TIMEOUT).status_code == 200
    assert infer_json(server.url, "loris", image_id, {"box": BOX}, headers=beyond).status_code == 200
    width, height = image_size(server.datastore / f"{image_id}.png")
    assert put_label(server.url, image_id, np.zeros((height, width)), {"label": "normal"}).status_code == 200


@pytest.mark.parametrize("token,scope,method,path,client,header,refused", [
    (None, "writes", "PUT", "/datastore/label", "127.0.0.1", None, None),
    (None, "writes", "PUT", "/datastore/label", "::1", None, None),
    (None, "writes", "PUT", "/datastore/label", "::ffff:127.0.0.1", None, None),
    (None, "writes", "PUT", "/datastore/label", "10.0.0.5", None, 403),
    (None, "writes", "GET", "/logs/", "10.0.0.5", None, 403),
    (None, "writes", "POST", "/infer/loris", "10.0.0.5", None, None),
    (None, "writes", "GET", "/datastore/image", "10.0.0.5", None, None),
    ("t" * 20, "writes", "POST", "/train/loris", "127.0.0.1", None, 401),
    ("t" * 20, "writes", "POST", "/train/loris", "127.0.0.1", "Bearer " + "t" * 20, None),
    ("t" * 20, "writes", "POST", "/train/loris", "127.0.0.1", "bearer " + "t" * 20, None),
    ("t" * 20, "writes", "POST", "/train/loris", "127.0.0.1", "Bearer " + "t" * 19, 401),
    ("t" * 20, "writes", "GET", "/train/", "10.0.0.5", None, None),
    ("t" * 20, "writes", "GET", "/datastore/dataset", "127.0.0.1", None, 401),
    ("t" * 20, "writes", "POST", "/reload", "127.0.0.1", None, 401),
    ("t" * 20, "all", "GET", "/info/", "127.0.0.1", None, 401),
    ("t" * 20, "all", "GET", "/info/", "127.0.0.1", "Bearer " + "t" * 20, None),
    ("t" * 20, "all", "GET", "/docs", "10.0.0.5", None, None),
    ("t" * 20, "all", "POST", "/auth/token", "10.0.0.5", None, None),
])
def test_access_policy_table(token, scope, method, path, client, header, refused):
    refusal = AccessPolicy(token, scope).refusal(method, path, client, header)
    assert (refusal[0] if refusal else None) == refused
