"""The hostile and careless client, replayed against a real server with an access token (``secured_server``).

Every malformed request gets a 4xx that names the problem, never a 500; nothing of a
refused request stays on disk; an infer request never changes a final label and never
reads outside the datastore; answers never name the server's folders.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from urllib.parse import quote

import numpy as np
import pytest
import requests

from lib.data.imageio import image_size, read_mask
from tests.app.helpers import TIMEOUT, infer_json, png_bytes, put_image, put_label, snapshot

pytestmark = pytest.mark.server

BOX = [30, 20, 70, 44]


def _png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG of ``width`` x ``height`` 8-bit gray pixels whose data is ``idat`` (deflated rows)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A real decompression bomb: a valid 20000 x 20000 PNG (400 megapixels) of about half a megabyte."""
    side, rows_per_block = 20000, 100
    deflate = zlib.compressobj(9)
    block = b"\x00" * ((side + 1) * rows_per_block)  # each row: filter byte 0 + pixels 0
    data = b"".join(deflate.compress(block) for _ in range(side // rows_per_block)) + deflate.flush()
    return _png_header_only(side, side, data)


def _leftovers(s) -> list:
    """Temporary files of the server's requests: in its TMPDIR, the datastore's upload folder, hidden staged files."""
    found = [p for p in s.tmp_dir.rglob("*") if p not in s.tmp_at_start]
    uploads = s.datastore / ".uploads"
    if uploads.exists():
        found += list(uploads.rglob("*"))
    found += [p for p in s.datastore.rglob(".*") if p.name not in (".lock", ".uploads")]
    return found


def _labelled(s, label: str) -> list:
    objects = json.loads((s.datastore / "datastore_v2.json").read_text())["objects"]
    return sorted(k for k, v in objects.items() if v["labels"].get("final", {}).get("info", {}).get("label") == label)


def _finals(s) -> dict:
    index = json.loads((s.datastore / "datastore_v2.json").read_text())["objects"]
    files = snapshot(s.datastore / "labels" / "final")
    return {"files": files, "infos": {k: v["labels"].get("final") for k, v in index.items()}}


def _check_no_server_paths(s, response, sent: str = ""):
    root = str(s.datastore.parent)
    if root in sent:
        return  # the request itself named the path; the answer may quote the client's own input
    text = response.text if not response.headers.get("content-type", "").startswith("image/") else ""
    for folder in (root, str(s.datastore.resolve()), str(s.models_dir.resolve())):
        assert folder not in text, (response.request.method, response.request.url, text[:300])


def _infer_cases(s, image_id, bomb):
    url, A = s.url, s.auth
    outside = str(s.outside / "secret.png")
    datastore_file = str((s.datastore / f"{image_id}.png").resolve())

    def infer(params, image=image_id, **kw):
        return lambda: infer_json(url, "loris", image, params, headers=A, **kw)

    def upload(data, name="frame.png", params='{"box": [30, 20, 70, 44]}', extra=None):
        files = {"file": (name, data, "image/png"), **(extra or {})}
        return lambda: requests.post(f"{url}/infer/loris", params={"output": "json"}, data={"params": params},
                                     files=files, headers=A, timeout=TIMEOUT)

    frame = (s.datastore / f"{image_id}.png").read_bytes()
    return [
        ("box NaN", infer('{"box": [NaN, 20, 70, 44]}'), 400, "NaN"),
        ("box Infinity", infer('{"box": [30, 20, Infinity, 44]}'), 400, "Infinity"),
        ("box -Infinity", infer('{"box": [-Infinity, 20, 70, 44]}'), 400, "Infinity"),
        ("box 1e400", infer('{"box": [30, 20, 1e400, 44]}'), 400, "1e400"),
        ("roi NaN", infer('{"roi": [NaN, 20, 70, 44]}'), 400, "NaN"),
        ("roi 1e400", infer('{"roi": [30, 20, 70, 1e400, 0, 0]}'), 400, "1e400"),
        ("params not JSON", infer("{bad"), 400, "not valid JSON"),
        ("params a list", infer("[1,2]"), 400, "JSON object"),
        ("params a string", infer('"str"'), 400, "JSON object"),
        ("params null", infer("null"), 400, "JSON object"),
        ("params 100000 nested brackets", infer("[" * 100000 + "]" * 100000), 400, "nested too deeply"),
        ("params 50 nested objects", infer('{"a":' * 50 + "1" + "}" * 50), 400, "nested too deeply"),
        ("box a string", infer({"box": "1234"}), 400, "params.box"),
        ("box with a boolean", infer({"box": [True, 20, 70, 44]}), 400, "params.box[0]"),
        ("box an object", infer({"box": {"x": 1}}), 400, "params.box"),
        ("box fractional", infer({"box": [30.5, 20, 70, 44]}), 400, "whole pixels"),
        ("roi of strings", infer({"roi": ["1", "2", "3", "4"]}), 400, "params.roi[0]"),
        ("metric an object", infer({"box": BOX, "metric": {}}), 400, "params.metric"),
        ("metric unknown", infer({"box": BOX, "metric": "nope"}), 400, "unknown metric"),
        ("device a number", infer({"box": BOX, "device": 5}), 400, "params.device"),
        ("logging a number", infer({"box": BOX, "logging": 5}), 400, "params.logging"),
        ("timeout text", infer({"box": BOX, "timeout": "x"}), 400, "params.timeout"),
        ("save_label final", infer({"box": BOX, "save_label": True, "label_tag": "final"}), 400, "params.save_label"),
        ("label_tag final", infer({"box": BOX, "label_tag": "final"}), 400, "params.label_tag"),
        ("skip_writer", infer({"box": BOX, "skip_writer": True}), 400, "params.skip_writer"),
        ("image path in params", infer({"box": BOX, "image": outside}), 400, "params.image"),
        ("image id a server path", infer({"box": BOX}, image=outside), 400, "not allowed"),
        ("image id a datastore file path", infer({"box": BOX}, image=datastore_file), 400, "not allowed"),
        ("image id /etc/passwd", infer({"box": BOX}, image="/etc/passwd"), 400, "not allowed"),
        ("image id a missing path", infer({"box": BOX}, image="/no/such/file.png"), 400, "not allowed"),
        ("image id unknown", infer({"box": BOX}, image="no_such_image"), 404, "not found"),
        ("model unknown", lambda: infer_json(url, "no_such_model", image_id, {"box": BOX}, headers=A), 404,
         "unknown model"),
        ("no image and no file", lambda: requests.post(f"{url}/infer/loris", data={"params": "{}"}, headers=A,
                                                       timeout=TIMEOUT), 400, "image"),
        ("session id", lambda: requests.post(f"{url}/infer/loris", params={"image": image_id, "session_id": "x"},
                                             data={"params": "{}"}, headers=A, timeout=TIMEOUT), 400, "session"),
        ("a label file", upload(frame, extra={"label": ("l.png", frame, "image/png")}), 400, "label"),
        ("bomb upload", upload(bomb), 413, "pixels"),
        ("upload over the byte limit", upload(b"\x00" * 2_000_001), 413, "bytes"),
        ("upload of an unknown type", upload(b"hello", name="x.txt"), 400, "unsupported type"),
        ("upload not an image", upload(b"\x89PNG but not really"), 400, "not a readable image"),
        ("upload truncated", upload(_png_header_only(8, 8)), 400, "not a readable image"),
        ("upload with bad params", upload(frame, params='{"box": [NaN, 1, 2, 3]}'), 400, "NaN"),
        ("dicom_seg output", lambda: requests.post(f"{url}/infer/loris", params={"image": image_id,
                                                                                 "output": "dicom_seg"},
                                                   data={"params": json.dumps({"box": BOX})}, headers=A,
                                                   timeout=TIMEOUT), 400, "dicom_seg"),
        ("whole-slide infer", lambda: requests.post(f"{url}/infer/wsi/loris", json={}, headers=A, timeout=TIMEOUT),
         404, "not served"),
        ("whole-slide infer v2", lambda: requests.post(f"{url}/infer/wsi_v2/loris", data={"params": "{}"},
                                                       headers=A, timeout=TIMEOUT), 404, "not served"),
    ]


def _datastore_cases(s, bomb):
    url, A = s.url, s.auth
    normal, distended = _labelled(s, "normal")[0], _labelled(s, "distended")[0]
    width, height = image_size(s.datastore / f"{normal}.png")
    empty = np.zeros((height, width))
    marked = empty.copy()
    marked[10:14, 10:14] = 1
    small = png_bytes(np.zeros((8, 8)))

    def label(params, image=normal, mask=empty, **kw):
        return lambda: put_label(url, image, mask, params, headers=A, **kw)

    def form(method, path, field, text, **query):
        return lambda: requests.request(method, f"{url}{path}", params=query, data={field: text}, headers=A,
                                        timeout=TIMEOUT)

    return [
        ("label box NaN", label('{"label": "normal", "box": [NaN, 1, 10, 10]}'), 400, "NaN"),
        ("label box 1e400", label('{"label": "normal", "box": [1, 1, 1e400, 10]}'), 400, "1e400"),
        ("label box a string", label({"label": "normal", "box": "1234"}), 400, "params.box"),
        ("label box with a boolean", label({"label": "normal", "box": [True, 1, 10, 10]}), 400, "params.box[0]"),
        ("label class a number", label({"label": 123}), 400, "params.label"),
        ("label class unknown", label({"label": "swollen"}), 400, "valid labels"),
        ("normal with a non-empty mask", label({"label": "normal"}, mask=marked), 400, "contradicts"),
        ("label params a list", label("[1]"), 400, "JSON object"),
        ("label params not JSON", label("{bad"), 400, "not valid JSON"),
        ("label params nested", label("[" * 100000 + "]" * 100000), 400, "nested too deeply"),
        ("label bomb", label({"label": "distended"}, data=bomb), 400, "20000x20000"),
        ("label over the byte limit", label({"label": "normal"}, data=b"\x00" * 2_000_001), 413, "bytes"),
        ("label of an unknown image", label({"label": "normal"}, image="no_such_image"), 404, "not found"),
        ("label of an unknown type", label({"label": "normal"}, name="x.bmp"), 400, "unsupported type"),
        ("image bomb", lambda: put_image(url, "bomb", bomb, headers=A), 413, "pixels"),
        ("image over the byte limit", lambda: put_image(url, "big", b"\x00" * 2_000_001, headers=A), 413, "bytes"),
        ("image params a list", lambda: put_image(url, "p", small, params="[1]", headers=A), 400, "JSON object"),
        ("image params NaN", lambda: put_image(url, "p", small, params='{"x": NaN}', headers=A), 400, "NaN"),
        ("image info not JSON", form("PUT", "/datastore/image/info", "info", "{bad", image=normal), 400,
         "not valid JSON"),
        ("image info strategy a number", form("PUT", "/datastore/image/info", "info", '{"strategy": 5}',
                                              image=normal), 400, "strategy"),
        ("image info fake scores", form("PUT", "/datastore/image/info", "info", '{"loris": {"score": "x"}}',
                                        image=normal), 400, "loris"),
        ("image info box a string", form("PUT", "/datastore/image/info", "info", '{"box": "1234"}', image=normal),
         400, "info.box"),
        ("image info of an unknown image", form("PUT", "/datastore/image/info", "info", "{}", image="nope"), 404,
         "not found"),
        ("label info not JSON", form("PUT", "/datastore/label/info", "info", "{bad", label=normal, tag="final"),
         400, "not valid JSON"),
        ("label info normal over a non-empty mask", form("PUT", "/datastore/label/info", "info",
                                                         '{"label": "normal"}', label=distended, tag="final"),
         400, "contradicts"),
        ("label info of an unknown image", form("PUT", "/datastore/label/info", "info", "{}", label="nope",
                                                tag="final"), 404, "not found"),
        ("label info of an unknown tag", form("PUT", "/datastore/label/info", "info", "{}", label=normal,
                                              tag="nope"), 404, "no 'nope' label"),
        ("image info read of an unknown image", lambda: requests.get(f"{url}/datastore/image/info",
                                                                     params={"image": "nope"}, timeout=TIMEOUT),
         404, "not found"),
        ("label info read of an unknown label", lambda: requests.get(f"{url}/datastore/label/info",
                                                                     params={"label": "nope", "tag": "final"},
                                                                     timeout=TIMEOUT), 404, "no 'final' label"),
        ("unknown strategy", lambda: requests.post(f"{url}/activelearning/no_such_strategy", json={},
                                                   timeout=TIMEOUT), 404, "unknown strategy"),
        ("strategy replaced by params", lambda: requests.post(f"{url}/activelearning/random",
                                                              json={"strategy": {"a": 1}}, timeout=TIMEOUT),
         404, "unknown strategy"),
        ("strategy label_tag a list", lambda: requests.post(f"{url}/activelearning/random", json={"label_tag": []},
                                                            timeout=TIMEOUT), 400, "params.label_tag"),
        ("unknown scoring method", lambda: requests.post(f"{url}/scoring/nope", json={}, headers=A, timeout=TIMEOUT),
         404, "unknown scoring method"),
        ("train a boolean epoch count", lambda: requests.post(f"{url}/train/loris", json={"max_epochs": True},
                                                              headers=A, timeout=TIMEOUT), 400, "max_epochs"),
        ("model upload of random bytes", lambda: requests.put(
            f"{url}/model/loris", files={"file": ("model.pt", np.random.default_rng(0).bytes(1000))}, headers=A,
            timeout=TIMEOUT), 400, "not a usable loris model"),
        ("model upload of an unknown model", lambda: requests.put(f"{url}/model/nope", files={"file": ("m.pt", b"x")},
                                                                  headers=A, timeout=TIMEOUT), 404, "unknown model"),
        ("DICOMweb proxy", lambda: requests.get(f"{url}/proxy/dicom/qido/studies", headers=A, timeout=TIMEOUT), 404,
         "not served"),
    ]


def _replay(s, cases):
    failures = []
    for name, call, status, words in cases:
        response = call()
        detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else None
        if response.status_code != status or not isinstance(detail, str) or words not in detail:
            failures.append((name, response.status_code, response.text[:300]))
        _check_no_server_paths(s, response, str(response.request.url) + str(response.request.body)[:2000])
    assert not failures, failures


def test_every_malformed_request_is_a_4xx_naming_the_problem_and_leaves_nothing_behind(secured_server, bomb):
    s = secured_server
    image_id = _labelled(s, "normal")[0]
    model_before = snapshot(s.models_dir)
    before = snapshot(s.datastore)
    _replay(s, _infer_cases(s, image_id, bomb) + _datastore_cases(s, bomb))
    assert snapshot(s.datastore) == before
    assert snapshot(s.models_dir) == model_before
    assert not _leftovers(s)
    assert requests.get(f"{s.url}/info/", timeout=TIMEOUT).status_code == 200  # still serving


def test_a_server_path_gets_the_same_answer_whether_it_exists_or_not(secured_server):
    s = secured_server
    existing, missing = str(s.outside / "secret.png"), str(s.outside / "missing.png")
    for model in ("loris", "recess_detection"):
        a = infer_json(s.url, model, existing, {"box": BOX})
        b = infer_json(s.url, model, missing, {"box": BOX})
        assert (a.status_code, a.json()["detail"].replace("secret.png", "X")) == \
            (b.status_code, b.json()["detail"].replace("missing.png", "X"))
    for path in (existing, missing):
        got = requests.get(f"{s.url}/datastore/image", params={"image": path}, timeout=TIMEOUT)
        assert got.status_code == 404


TRAVERSALS = ["..", "../escaped", "../../escaped", "/etc/passwd", "a/b", "a\\b", "..\\..\\escaped", ".hidden",
              "x\x00y", "labels/final/x", "../datastore/x", "/tmp/escaped"]


def _traversal_requests(s, value, image_id, mask):
    url, A = s.url, s.auth
    segment = quote(value, safe="").replace(".", "%2E")  # sent as is: no client-side dot-segment removal
    small = png_bytes(np.zeros((8, 8)))
    get, put, delete = requests.get, requests.put, requests.delete
    return [
        lambda: get(f"{url}/datastore/image", params={"image": value}, timeout=TIMEOUT),
        lambda: requests.head(f"{url}/datastore/image", params={"image": value}, timeout=TIMEOUT),
        lambda: get(f"{url}/datastore/image/info", params={"image": value}, timeout=TIMEOUT),
        lambda: put(f"{url}/datastore/image/info", params={"image": value}, data={"info": "{}"}, headers=A,
                    timeout=TIMEOUT),
        lambda: get(f"{url}/datastore/label", params={"label": value, "tag": "final"}, timeout=TIMEOUT),
        lambda: get(f"{url}/datastore/label", params={"label": image_id, "tag": value}, timeout=TIMEOUT),
        lambda: requests.head(f"{url}/datastore/label", params={"image": value, "tag": "final"}, timeout=TIMEOUT),
        lambda: get(f"{url}/datastore/label/info", params={"label": value, "tag": "final"}, timeout=TIMEOUT),
        lambda: get(f"{url}/datastore/label/info", params={"label": image_id, "tag": value}, timeout=TIMEOUT),
        lambda: put(f"{url}/datastore/label/info", params={"label": image_id, "tag": value},
                    data={"info": "{}"}, headers=A, timeout=TIMEOUT),
        lambda: put_image(url, value, small, headers=A),
        lambda: put_label(url, value, mask, {"label": "normal"}, headers=A),
        lambda: put_label(url, image_id, mask, {"label": "normal"}, tag=value, headers=A),
        lambda: delete(f"{url}/datastore/image", params={"id": value}, headers=A, timeout=TIMEOUT),
        lambda: delete(f"{url}/datastore/label", params={"id": value, "tag": "final"}, headers=A, timeout=TIMEOUT),
        lambda: delete(f"{url}/datastore/label", params={"id": image_id, "tag": value}, headers=A, timeout=TIMEOUT),
        lambda: infer_json(url, "loris", value, {"box": BOX}),
        lambda: infer_json(url, "recess_detection", value),
        lambda: requests.post(f"{url}/activelearning/{segment}", json={}, timeout=TIMEOUT),
        lambda: get(f"{url}/model/{segment}", headers=A, timeout=TIMEOUT),
    ]


def test_traversal_in_any_id_or_tag_is_refused_and_reads_or_writes_nothing_outside(secured_server):
    s = secured_server
    image_id = _labelled(s, "normal")[0]
    width, height = image_size(s.datastore / f"{image_id}.png")
    mask = np.zeros((height, width))
    secret = (s.outside / "secret.png").read_bytes()
    around = sorted(p.name for p in s.datastore.parent.iterdir())
    before = snapshot(s.datastore)
    answers = []
    for value in TRAVERSALS:
        for call in _traversal_requests(s, value, image_id, mask):
            response = call()
            answers.append((value, response.request.method, response.request.url, response.status_code))
            assert 400 <= response.status_code < 500, answers[-1] + (response.text[:200],)
            assert secret not in response.content
    assert len(answers) == len(TRAVERSALS) * 20
    assert snapshot(s.datastore) == before
    assert sorted(p.name for p in s.datastore.parent.iterdir()) == around
    assert not list(s.datastore.rglob("escaped*"))
    assert not _leftovers(s)


def test_infer_never_changes_a_final_label_whatever_the_route(secured_server):
    s = secured_server
    image_id = _labelled(s, "normal")[0]
    finals = _finals(s)
    for params in ({"box": BOX, "save_label": True, "label_tag": "final"}, {"box": BOX, "save_label": True},
                   {"box": BOX, "label_tag": "final"}, {"box": BOX, "save_label": "true", "label_tag": "final"}):
        assert infer_json(s.url, "loris", image_id, params, headers=s.auth).status_code == 400
    # batch inference saves its results as labels: never as final ones
    batch = requests.post(f"{s.url}/batch/infer/loris", params={"run_sync": "true"}, headers=s.auth,
                          json={"device": "cpu", "multi_gpu": False, "save_label": True, "label_tag": "final",
                                "max_workers": 1, "logging": "WARNING"}, timeout=TIMEOUT)
    assert batch.status_code == 400 and "never writes final labels" in batch.json()["detail"], batch.text
    originals = requests.post(f"{s.url}/batch/infer/loris", params={"run_sync": "true", "images": "unlabeled"},
                              headers=s.auth, json={"device": "cpu", "multi_gpu": False, "save_label": True,
                                                    "label_tag": "original", "max_workers": 1, "logging": "WARNING"},
                              timeout=TIMEOUT)
    assert originals.status_code == 200, originals.text
    assert list((s.datastore / "labels" / "original").glob("*.png"))  # model outputs are kept apart from finals
    assert _finals(s) == finals
    assert not _leftovers(s)


def test_accepted_requests_leave_no_temporary_file_and_answer_without_server_paths(secured_server):
    s = secured_server
    image_id = _labelled(s, "normal")[1]
    frame = (s.datastore / f"{image_id}.png").read_bytes()
    for output in ("json", "image", None):
        query = {"output": output} if output else {}
        uploaded = requests.post(f"{s.url}/infer/loris", params=query, data={"params": json.dumps({"box": BOX})},
                                 files={"file": ("frame.png", frame, "image/png")}, timeout=TIMEOUT)
        assert uploaded.status_code == 200, uploaded.text
        by_id = requests.post(f"{s.url}/infer/loris_anomaly_map", params={"image": image_id, **query},
                              data={"params": json.dumps({"box": BOX})}, timeout=TIMEOUT)
        assert by_id.status_code == 200, by_id.text
    width, height = image_size(s.datastore / f"{image_id}.png")
    mask = np.zeros((height, width))
    mask[20:30, 30:50] = 1
    saved = put_label(s.url, image_id, mask, {"label": "distended", "box": BOX}, headers=s.auth)
    assert saved.status_code == 200, saved.text
    info = requests.get(f"{s.url}/datastore/label/info", params={"label": image_id, "tag": "final"},
                        timeout=TIMEOUT).json()
    stored = s.datastore / "labels" / "final" / f"{image_id}.png"
    assert info["mask_sha1"] == hashlib.sha1(stored.read_bytes()).hexdigest()
    np.testing.assert_array_equal(read_mask(stored), mask.astype(bool))
    answers = [
        requests.get(f"{s.url}/info/", timeout=TIMEOUT),
        requests.get(f"{s.url}/datastore/", params={"output": "train"}, timeout=TIMEOUT),
        requests.get(f"{s.url}/datastore/", params={"output": "all"}, timeout=TIMEOUT),
        requests.get(f"{s.url}/datastore/image/info", params={"image": image_id}, timeout=TIMEOUT),
        requests.post(f"{s.url}/activelearning/random", json={}, timeout=TIMEOUT),
        requests.post(f"{s.url}/activelearning/loris_uncertain", json={}, timeout=TIMEOUT),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        _check_no_server_paths(s, answer)
    for status in (requests.get(f"{s.url}/train/", params={"all": "true"}, timeout=TIMEOUT),
                   requests.get(f"{s.url}/logs/", params={"text": "true"}, headers=s.auth, timeout=TIMEOUT)):
        _check_no_server_paths(s, status)  # task details and logs quote the server's own output
    assert "path" not in answers[3].json() and "path" not in answers[4].json()
    assert all(not pair["image"].startswith("/") for pair in answers[1].json())
    assert not _leftovers(s)
