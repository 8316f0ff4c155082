"""The module's urllib client against a real FastAPI/uvicorn server speaking MONAI Label's wire formats.

The endpoints below mimic monailabel 0.8.5's (same FastAPI form/file
parameters, same ``requests_toolbelt`` multipart answer as
``monailabel.endpoints.infer.send_response``) so the encoder, the decoder and
the error handling are checked against the real parsers and producers.
The app itself is exercised in ``test_client_server.py``.
"""

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from requests_toolbelt import MultipartEncoder

from LoRISLib import client as client_mod
from LoRISLib.client import LoRISCancelled, LoRISClient, LoRISClientError, decode_multipart, encode_multipart


def _png(mask):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


MASK_PNG = _png([[0, 1, 1], [0, 0, 1]])
RECEIVED = {}


def _app():
    app = FastAPI()

    @app.get("/info/")
    def info():
        return {"name": "test", "models": {"loris": {}, "recess_detection": {}}}

    @app.put("/datastore/label")
    async def save_label(image: str, params: str = Form("{}"), tag: str = "final", label: UploadFile = File(...)):
        RECEIVED["label"] = {"image": image, "tag": tag, "params": json.loads(params),
                             "filename": label.filename, "data": await label.read()}
        return {"image": image, "label": image}

    @app.post("/infer/{model}")
    def infer(model: str, image: str = "", params: str = Form("{}")):
        p = json.loads(params)
        if model == "missing":
            raise HTTPException(status_code=404, detail=f"Inference task '{model}' not found")
        if model == "json_only":
            return {"box": p.get("box"), "found": True}
        fields = {"params": (None, json.dumps({"echo": p, "image": image}), "application/json"),
                  "image": ("label_x.png", MASK_PNG, "image/png")}
        m = MultipartEncoder(fields=fields)
        return Response(content=m.to_string(), media_type=m.content_type)

    @app.post("/train/{model}")
    def train(model: str, params: dict = None):
        if model == "busy":
            raise HTTPException(status_code=429, detail="++++++++++ Train Task is Already Running")
        return {"id": "t1", "status": "SUBMITTED", "request": {"model": model, **(params or {})}}

    @app.get("/train/")
    def train_status():
        raise HTTPException(status_code=404, detail="No Train Tasks Found")

    @app.get("/slow")
    def slow():
        time.sleep(1.5)
        return {}

    @app.get("/headers")
    def headers(request: Request):
        return {"authorization": request.headers.get("authorization")}

    @app.get("/validated")
    def validated(n: int):
        return {"n": n}

    return app


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fake_url():
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            pytest.fail("test HTTP server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_multipart_round_trip_keeps_binary_bytes_exactly():
    payload = bytes(range(256)) * 3 + b"\r\n--\r\n\n\r"
    ctype, body = encode_multipart([("params", '{"a": 1}', None, None), ("label", payload, "m.png", "image/png")])
    parts = decode_multipart(ctype, body)
    assert [p["name"] for p in parts] == ["params", "label"]
    assert parts[0]["data"] == b'{"a": 1}' and parts[0]["filename"] is None
    assert parts[1]["data"] == payload and parts[1]["filename"] == "m.png" and parts[1]["content_type"] == "image/png"


def test_decoder_reads_requests_toolbelt_answer_like_monailabel_sends():
    m = MultipartEncoder(fields={"params": (None, '{"score": 2.5}', "application/json"),
                                 "image": ("result.nrrd", b"\x00\r\n\x01" * 50, "application/octet-stream")})
    parts = decode_multipart(m.content_type, m.to_string())
    assert parts[0]["name"] == "params" and json.loads(parts[0]["data"]) == {"score": 2.5}
    assert parts[1]["filename"] == "result.nrrd" and parts[1]["data"] == b"\x00\r\n\x01" * 50


def test_save_label_is_parsed_by_fastapi_as_monailabel_expects(fake_url):
    c = LoRISClient(fake_url)
    answer = c.save_label("img 1/../x", MASK_PNG, {"label": "distended", "box": [0, 0, 3, 2]}, tag="final")
    got = RECEIVED["label"]
    assert answer == {"image": "img 1/../x", "label": "img 1/../x"}
    assert got["image"] == "img 1/../x" and got["tag"] == "final" and got["filename"] == "label.png"
    assert got["params"] == {"label": "distended", "box": [0, 0, 3, 2]} and got["data"] == MASK_PNG


def test_infer_returns_params_and_label_file(fake_url):
    r = LoRISClient(fake_url).infer("loris", "img1", {"box": [1, 2, 3, 4]})
    assert r.params == {"echo": {"box": [1, 2, 3, 4]}, "image": "img1"}
    assert r.label == MASK_PNG and r.label_name == "label_x.png"


def test_infer_json_only_answer_has_no_label(fake_url):
    r = LoRISClient(fake_url).infer("json_only", "img1", {"box": [1, 2, 3, 4]})
    assert r.params == {"box": [1, 2, 3, 4], "found": True} and r.label is None


def test_server_error_carries_status_and_server_message(fake_url):
    c = LoRISClient(fake_url)
    with pytest.raises(LoRISClientError) as err:
        c.infer("missing", "img1")
    assert err.value.status == 404 and err.value.message == "Inference task 'missing' not found"
    with pytest.raises(LoRISClientError) as err:
        c.train("busy", {"max_epochs": 1})
    assert err.value.status == 429 and "Already Running" in err.value.message


def test_validation_error_lists_the_bad_field(fake_url):
    with pytest.raises(LoRISClientError) as err:
        LoRISClient(fake_url)._json("GET", "/validated", {"n": "abc"})
    assert err.value.status == 422 and "n" in err.value.message


def test_train_posts_params_as_json_body_and_missing_status_is_none(fake_url):
    c = LoRISClient(fake_url)
    task = c.train("loris", {"max_epochs": 2, "quick": True})
    assert task["request"] == {"model": "loris", "max_epochs": 2, "quick": True}
    assert c.train_status() is None
    assert c.check_models() == ["loris_anomaly_map"]


def test_timeout_is_reported_without_hanging(fake_url):
    c = LoRISClient(fake_url, timeout=0.3)
    start = time.time()
    with pytest.raises(LoRISClientError) as err:
        c._json("GET", "/slow")
    assert err.value.status is None and "no answer" in err.value.message
    assert time.time() - start < 1.3


def test_server_down_says_so():
    c = LoRISClient(f"http://127.0.0.1:{_free_port()}", timeout=2)
    with pytest.raises(LoRISClientError) as err:
        c.info()
    assert err.value.status is None and "cannot reach the server" in err.value.message


@pytest.mark.parametrize("url", ["", "127.0.0.1:8000", "ftp://host/"])
def test_bad_server_url_is_refused(url):
    with pytest.raises(LoRISClientError, match="server URL"):
        LoRISClient(url)


def test_default_url_and_names_match_the_contract():
    assert client_mod.DEFAULT_URL == "http://127.0.0.1:8000"
    assert client_mod.STRATEGIES == ("loris_most_anomalous", "loris_uncertain", "random")
    assert set(client_mod.TRAINERS) <= set(client_mod.MODELS)


def test_token_is_sent_as_a_bearer_header_and_never_shown(fake_url):
    assert LoRISClient(fake_url)._json("GET", "/headers") == {"authorization": None}
    client = LoRISClient(fake_url, token=" s3cret-token ")
    assert client._json("GET", "/headers") == {"authorization": "Bearer s3cret-token"}
    assert "s3cret" not in repr(client)
    with pytest.raises(LoRISClientError) as err:
        client.infer("missing", "img1")
    assert "s3cret" not in str(err.value)


def test_system_proxy_is_not_used_for_the_server(fake_url, monkeypatch):
    dead_proxy = f"http://127.0.0.1:{_free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError):  # what a plain urlopen does with such a proxy setting
        urllib.request.urlopen(f"{fake_url}/info/", timeout=5)
    assert LoRISClient(fake_url).info()["name"] == "test"


def test_cancel_from_another_thread_ends_a_waiting_call_at_once(fake_url):
    client = LoRISClient(fake_url, timeout=30)
    errors = []

    def call():
        try:
            client._json("GET", "/slow")
        except LoRISClientError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    start = time.time()
    thread.start()
    time.sleep(0.3)  # the request is out, the server sleeps 1.5 s
    client.cancel()
    thread.join(5)
    assert not thread.is_alive() and time.time() - start < 1.2
    assert len(errors) == 1 and isinstance(errors[0], LoRISCancelled) and "cancelled" in errors[0].message
    with pytest.raises(LoRISCancelled):
        client.info()  # a cancelled client makes no more requests


def test_client_refuses_to_block_the_thread_it_is_told_to_spare(fake_url):
    client = LoRISClient(fake_url, forbid_thread=threading.main_thread())
    with pytest.raises(RuntimeError, match="GUI thread"):
        client.info()
    answers = []
    worker = threading.Thread(target=lambda: answers.append(client.info()))
    worker.start()
    worker.join(10)
    assert answers and answers[0]["name"] == "test"
