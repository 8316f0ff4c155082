"""HTTP client of the LoRIS MONAI Label app (standard library only).

3D Slicer's Python has no ``requests`` guarantee and no ``monailabel``: this
client uses ``urllib`` and its own multipart encoder/decoder. Every call has
a timeout and a status check; every failure -- server down, timeout, HTTP
4xx/5xx, an answer that is not what MONAI Label sends -- raises one type,
:class:`LoRISClientError`, carrying the HTTP status (None when no answer
came) and the server's own message (FastAPI's ``detail``).

An optional API token goes out as ``Authorization: Bearer <token>`` on every
request; the system proxy is never used (a LAN server stays reachable behind a
hospital's internet proxy); :meth:`LoRISClient.cancel` ends a waiting call from
another thread; ``forbid_thread`` makes a call on Slicer's GUI thread an error.

Endpoints (monailabel 0.8.5):

========================================  =====================================
``GET  /info/``                           models, trainers, strategies
``GET  /datastore/?output=stats|all``     datastore status / every object
``HEAD /datastore/image?image=ID``        does the image exist
``GET  /datastore/image?image=ID``        download the image file
``PUT  /datastore/image?image=ID``        upload (multipart ``file`` + ``params``)
``PUT  /datastore/label?image=ID&tag=T``  save a label (multipart ``label`` + ``params``)
``POST /activelearning/STRATEGY``         next image ``{"id": ...}`` (``{}`` when none left)
``POST /infer/MODEL?image=ID``            form ``params`` JSON -> multipart ``params`` + ``image``
``POST /train/MODEL``                     JSON body = training params
``GET  /train/``                          latest training task (404 when none)
``DELETE /train/``                        stop the running training
========================================  =====================================
"""

import http.client
import json
import mimetypes
import os
import socket
import ssl
import threading
import uuid
import weakref
from dataclasses import dataclass
from typing import Optional
from urllib import error as urlerror
from urllib import parse as urlparse
from urllib import request as urlrequest

__all__ = [
    "LoRISClientError",
    "LoRISCancelled",
    "InferResponse",
    "LoRISClient",
    "encode_multipart",
    "decode_multipart",
    "DEFAULT_URL",
    "STRATEGIES",
    "MODELS",
    "TRAINERS",
]

DEFAULT_URL = "http://127.0.0.1:8000"
MODELS = ("loris", "loris_anomaly_map", "recess_detection")
TRAINERS = ("loris", "recess_detection")
STRATEGIES = ("loris_most_anomalous", "loris_uncertain", "random")


class LoRISClientError(Exception):
    """A call to the server failed.

    Attributes:
        status: HTTP status code, or None when the server did not answer (down, timeout).
        message: the server's own message when it gave one, else what went wrong.
    """

    def __init__(self, status, message):
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status
        self.message = message


@dataclass
class InferResponse:
    """Answer of ``POST /infer/<model>``.

    params: the JSON result (score, box, ... depending on the model).
    label: bytes of the result file (PNG segmentation, NRRD anomaly map), None when the server sent JSON only.
    label_name: the result file's name as the server sent it (its extension tells the format).
    """

    params: dict
    label: Optional[bytes] = None
    label_name: Optional[str] = None
    label_content_type: Optional[str] = None


# --------------------------------------------------------------------------- multipart


def encode_multipart(fields, boundary=None):
    """Encode ``multipart/form-data``.

    Args:
        fields: list of ``(name, value, filename, content_type)``; value is str or bytes;
            filename and content_type may be None (a plain form field).
        boundary: for tests; a random one by default.

    Returns:
        ``(content_type_header, body_bytes)``.
    """
    boundary = boundary or ("LoRIS" + uuid.uuid4().hex)
    if any(boundary.encode() in (v if isinstance(v, bytes) else v.encode("utf-8")) for _, v, _, _ in fields):
        raise ValueError("multipart boundary occurs in the data; use another boundary")
    chunks = []
    for name, value, filename, content_type in fields:
        if '"' in name or (filename and '"' in filename):
            raise ValueError(f"field and file names must not contain quotes: {name!r}, {filename!r}")
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        chunks += [head.encode("utf-8"), b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("utf-8"))
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


def _header_params(value):
    """``'form-data; name="a"; filename="b.png"'`` -> ``("form-data", {"name": "a", "filename": "b.png"})``."""
    parts = value.split(";")
    params = {}
    for item in parts[1:]:
        if "=" not in item:
            continue
        key, val = item.split("=", 1)
        key, val = key.strip().lower(), val.strip()
        if key.endswith("*"):  # RFC 5987: utf-8''name%20x.png
            key = key[:-1]
            if "''" in val:
                val = urlparse.unquote(val.split("''", 1)[1])
        elif len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[key] = val
    return parts[0].strip().lower(), params


def decode_multipart(content_type, body):
    """Decode a ``multipart/*`` body.

    Returns:
        list of dicts ``{"name", "filename", "content_type", "data": bytes}`` in body order.

    Raises:
        ValueError: no boundary in the content type, or a malformed body.
    """
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError(f"multipart content type has no boundary: {content_type!r}")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3:
        raise ValueError("multipart body has no parts")
    parts = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            break  # closing delimiter
        if section.startswith(b"\r\n"):
            section = section[2:]
        head, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part has no header/body separator")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if ":" in line:
                key, val = line.split(":", 1)
                headers[key.strip().lower()] = val.strip()
        _, disp = _header_params(headers.get("content-disposition", ""))
        parts.append(
            {
                "name": disp.get("name"),
                "filename": disp.get("filename"),
                "content_type": headers.get("content-type"),
                "data": data,
            }
        )
    return parts


# --------------------------------------------------------------------------- client


def _message_from_body(body, content_type):
    """The server's message from an error body: FastAPI's ``{"detail": ...}`` or the text itself."""
    text = body.decode("utf-8", "replace").strip()
    if "json" in (content_type or "") or text.startswith("{"):
        try:
            payload = json.loads(text)
        except ValueError:
            return text or "(empty answer)"
        if isinstance(payload, dict) and "detail" in payload:
            detail = payload["detail"]
            if isinstance(detail, list):  # FastAPI validation errors
                return "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                    for d in detail
                )
            return str(detail)
        return text
    return text or "(empty answer)"


class LoRISCancelled(LoRISClientError):
    """The request was cancelled by :meth:`LoRISClient.cancel` (the user pressed Cancel)."""

    def __init__(self, where):
        super().__init__(None, f"{where}: cancelled")


class _TrackedHTTPHandler(urlrequest.HTTPHandler):
    """urllib's HTTP handler, remembering each connection it opens so that another thread can close it."""

    def __init__(self, client):
        super().__init__()
        self._client = client

    def http_open(self, req):
        return self.do_open(self._client._tracked(http.client.HTTPConnection), req)


class _TrackedHTTPSHandler(urlrequest.HTTPSHandler):
    """urllib's HTTPS handler (default certificate checks), remembering its connections like the HTTP one."""

    def __init__(self, client):
        super().__init__(context=ssl.create_default_context())
        self._client = client

    def https_open(self, req):
        return self.do_open(self._client._tracked(http.client.HTTPSConnection), req, context=self._context)


class LoRISClient:
    """Client of one LoRIS MONAI Label server.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        token: API token; when set, every request carries ``Authorization: Bearer <token>``
            (what MONAI Label's own client sends). Never logged, never part of an error message.
        timeout: seconds for quick calls (info, datastore, status, uploads).
        infer_timeout: seconds for inference and active-learning calls (models may load on first use).
        forbid_thread: a thread (e.g. ``threading.main_thread()``, Slicer's GUI thread) on which
            every request raises RuntimeError instead of blocking it; None allows any thread.
        on_request: called as ``on_request(method, path)`` before each request (logging, counting).

    The system's proxy settings (``http_proxy`` and the like) are not used: the server is
    reached directly, as a LAN server must be on a hospital PC whose proxy is for the internet.
    :meth:`cancel` (from any thread) closes the connections in flight; the blocked call then
    raises :class:`LoRISCancelled` and every later call too.
    """

    def __init__(self, url=DEFAULT_URL, token=None, timeout=30.0, infer_timeout=300.0, forbid_thread=None,
                 on_request=None):
        url = (url or "").strip().rstrip("/")
        parsed = urlparse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise LoRISClientError(None, f"server URL must look like http://host:port, got {url!r}")
        self.url = url
        self._token = (token or "").strip()
        self.timeout = float(timeout)
        self.infer_timeout = float(infer_timeout)
        self.forbid_thread = forbid_thread
        self.on_request = on_request
        self._lock = threading.Lock()
        self._connections = weakref.WeakSet()
        self._cancelled = False
        # ProxyHandler({}): no proxy, whatever the environment says
        self._opener = urlrequest.build_opener(
            urlrequest.ProxyHandler({}), _TrackedHTTPHandler(self), _TrackedHTTPSHandler(self)
        )

    def __repr__(self):
        return f"LoRISClient({self.url!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self):
        return bool(self._token)

    # ---------------------------------------------------------------- transport

    def _tracked(self, connection_class):
        def connect(host, **kwargs):
            connection = connection_class(host, **kwargs)
            with self._lock:
                if self._cancelled:
                    raise LoRISCancelled("connect")
                self._connections.add(connection)
            return connection

        return connect

    def cancel(self):
        """Abort the requests in flight (from any thread) and refuse new ones."""
        with self._lock:
            self._cancelled = True
            connections = list(self._connections)
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
                except OSError:
                    pass
            connection.close()

    @property
    def cancelled(self):
        return self._cancelled

    def _request(self, method, path, query=None, body=None, content_type=None, timeout=None):
        """Send one request; return ``(status, headers, body_bytes)`` for 2xx, raise LoRISClientError otherwise."""
        where = f"{method} {path}"
        if self.forbid_thread is not None and threading.current_thread() is self.forbid_thread:
            raise RuntimeError(f"{where}: server call on the GUI thread; run it through the worker")
        if self._cancelled:
            raise LoRISCancelled(where)
        if self.on_request is not None:
            self.on_request(method, path)
        url = self.url + path
        if query:
            url += "?" + urlparse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json, multipart/form-data, */*"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urlrequest.Request(url, data=body, method=method, headers=headers)
        seconds = timeout or self.timeout
        try:
            with self._opener.open(req, timeout=seconds) as resp:
                return resp.status, resp.headers, resp.read()
        except LoRISCancelled:
            raise
        except urlerror.HTTPError as exc:
            data = exc.read() if exc.fp is not None else b""
            raise LoRISClientError(exc.code, _message_from_body(data, exc.headers.get("Content-Type"))) from exc
        except Exception as exc:
            if self._cancelled:
                raise LoRISCancelled(where) from exc
            reason = exc.reason if isinstance(exc, urlerror.URLError) else exc
            if isinstance(reason, LoRISCancelled):
                raise reason from exc
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise LoRISClientError(None, f"{where}: no answer from {self.url} within {seconds:.0f} s") from exc
            if isinstance(exc, urlerror.URLError):
                raise LoRISClientError(None, f"cannot reach the server at {self.url} ({reason}); is it running?") from exc
            if isinstance(exc, (OSError, http.client.HTTPException)):
                raise LoRISClientError(None, f"{where}: connection to {self.url} failed ({exc})") from exc
            raise

    def _json(self, method, path, query=None, payload=None, timeout=None):
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        _, headers, data = self._request(
            method, path, query, body, "application/json" if body is not None else None, timeout
        )
        if not data:
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise LoRISClientError(200, f"{method} {path}: answer is not JSON: {data[:200]!r}") from exc

    # ---------------------------------------------------------------- server

    def info(self):
        """``GET /info/``: the app's name, models, trainers, strategies, scoring and config."""
        return self._json("GET", "/info/")

    def check_models(self, info=None, models=MODELS):
        """Names among ``models`` that the server does not list in ``/info`` (empty when all are there)."""
        info = info if info is not None else self.info()
        served = set((info or {}).get("models", {}))
        return [m for m in models if m not in served]

    # ---------------------------------------------------------------- datastore

    def datastore(self, output="stats"):
        """``GET /datastore/?output=...``: "stats" (counts), "all" (every image and label), "train" (datalist)."""
        if output not in ("stats", "all", "train"):
            raise ValueError(f"output must be 'stats', 'all' or 'train', got {output!r}")
        return self._json("GET", "/datastore/", {"output": output})

    def has_image(self, image_id):
        """True when the datastore holds ``image_id`` (``HEAD /datastore/image``)."""
        try:
            self._request("HEAD", "/datastore/image", {"image": image_id})
        except LoRISClientError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def upload_image(self, image, image_id=None, params=None, filename="image.png"):
        """Upload an image; returns the id the datastore gave it.

        Args:
            image: a local PNG/JPEG/DICOM file (path), or the bytes of one (named ``filename``).
            image_id: id to store it under (default: the file name without extension).
            params: image info to store with it, e.g. ``{"patient_id": "p1"}``.
            filename: the name sent with bytes; its extension tells the server the format.
        """
        if isinstance(image, (str, os.PathLike)):
            name = os.path.basename(image)
            with open(image, "rb") as f:
                data = f.read()
        else:
            name, data = filename, bytes(image)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        content_type, body = encode_multipart(
            [("params", json.dumps(params or {}), None, None), ("file", data, name, mime)]
        )
        _, _, answer = self._request(
            "PUT", "/datastore/image", {"image": image_id} if image_id else None, body, content_type, self.infer_timeout
        )
        try:
            return json.loads(answer.decode("utf-8"))["image"]
        except (ValueError, KeyError, TypeError) as exc:
            raise LoRISClientError(200, f"upload answer has no image id: {answer[:200]!r}") from exc

    def download_image(self, image_id, directory):
        """Download an image into ``directory``; returns the file path (the server's file name)."""
        _, headers, data = self._request("GET", "/datastore/image", {"image": image_id}, timeout=self.infer_timeout)
        _, disp = _header_params(headers.get("Content-Disposition", ""))
        name = os.path.basename(disp.get("filename") or "")
        if not name:
            ext = mimetypes.guess_extension((headers.get("Content-Type") or "").split(";")[0].strip()) or ""
            name = image_id + ext
        path = os.path.join(directory, name)
        tmp = path + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return path

    def save_label(self, image_id, label, params, tag="final", filename="label.png"):
        """``PUT /datastore/label``: store a label file with its info.

        Args:
            image_id: datastore id of the image.
            label: bytes of the label file (a 0/1 PNG of the image's size) or a path to it.
            params: label info, ``{"label": "normal"|"distended", "box": [x_min, y_min, x_max, y_max]}``.
            tag: label tag; "final" for a clinician's correction.
            filename: name sent with the bytes; its extension tells the server the format.

        Returns:
            the server's answer (``{"image": ..., "label": ...}``).
        """
        if isinstance(label, (str, os.PathLike)):
            filename = os.path.basename(label)
            with open(label, "rb") as f:
                label = f.read()
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        content_type, body = encode_multipart(
            [("params", json.dumps(params or {}), None, None), ("label", bytes(label), filename, mime)]
        )
        _, _, answer = self._request(
            "PUT", "/datastore/label", {"image": image_id, "tag": tag}, body, content_type, self.infer_timeout
        )
        try:
            return json.loads(answer.decode("utf-8")) if answer else {}
        except ValueError as exc:
            raise LoRISClientError(200, f"save label answer is not JSON: {answer[:200]!r}") from exc

    # ---------------------------------------------------------------- active learning

    def next_image(self, strategy, params=None):
        """``POST /activelearning/<strategy>``: the next image to review as a dict with ``"id"``, or None when none is left."""
        answer = self._json(
            "POST", f"/activelearning/{urlparse.quote(strategy, safe='')}", payload=params or {}, timeout=self.infer_timeout
        )
        if not answer or not answer.get("id"):
            return None
        return answer

    # ---------------------------------------------------------------- inference

    def infer(self, model, image_id, params=None):
        """``POST /infer/<model>?image=<id>`` with form field ``params`` (JSON).

        Returns:
            :class:`InferResponse`. MONAI Label answers multipart (a ``params``
            JSON part and an ``image`` part holding the result file) when the
            task wrote a file, or JSON alone when it did not.
        """
        content_type, body = encode_multipart([("params", json.dumps(params or {}), None, None)])
        _, headers, data = self._request(
            "POST", f"/infer/{urlparse.quote(model, safe='')}", {"image": image_id}, body, content_type, self.infer_timeout
        )
        answer_type = headers.get("Content-Type") or ""
        if answer_type.startswith("multipart/"):
            try:
                parts = decode_multipart(answer_type, data)
            except ValueError as exc:
                raise LoRISClientError(200, f"infer {model}: malformed multipart answer ({exc})") from exc
            result = InferResponse(params={})
            for part in parts:
                if part["name"] == "params":
                    try:
                        result.params = json.loads(part["data"].decode("utf-8") or "{}") or {}
                    except ValueError as exc:
                        raise LoRISClientError(200, f"infer {model}: params part is not JSON") from exc
                elif part["filename"] is not None or part["name"] in ("image", "label", "file"):
                    result.label = part["data"]
                    result.label_name = part["filename"]
                    result.label_content_type = part["content_type"]
            return result
        try:
            params_out = json.loads(data.decode("utf-8")) if data else {}
        except ValueError as exc:
            raise LoRISClientError(200, f"infer {model}: answer is neither multipart nor JSON ({answer_type})") from exc
        return InferResponse(params=params_out or {})

    # ---------------------------------------------------------------- training

    def train(self, model, params=None):
        """``POST /train/<model>`` with the training params; returns MONAI Label's task record.

        A second request while a training runs is refused by MONAI Label with
        HTTP 429 ("Train Task is Already Running"), raised as LoRISClientError.
        """
        return self._json("POST", f"/train/{urlparse.quote(model, safe='')}", payload=params or {})

    def train_status(self, check_if_running=False):
        """``GET /train/``: the latest training task record, or None when there is none (404)."""
        try:
            return self._json("GET", "/train/", {"check_if_running": "true" if check_if_running else None})
        except LoRISClientError as exc:
            if exc.status == 404:
                return None
            raise

    def stop_train(self):
        """``DELETE /train/``: stop the running training; returns the stopped task, or None when none ran."""
        return self._json("DELETE", "/train/")
