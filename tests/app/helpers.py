"""Small helpers of the app tests: HTTP calls with timeouts, PNG bytes, datastore snapshots."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

TIMEOUT = 120


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def read_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def put_label(url: str, image: str, mask: np.ndarray, params: dict | str | None, tag: str = "final",
              name="label.png", data: bytes | None = None, headers: dict | None = None) -> requests.Response:
    """``PUT /datastore/label``; ``params`` as a dict (sent as JSON) or as the raw form text."""
    files = {"label": (name, png_bytes(mask) if data is None else data, "image/png")}
    text = params if isinstance(params, str) else json.dumps(params or {})
    return requests.put(f"{url}/datastore/label", params={"image": image, "tag": tag}, data={"params": text},
                        files=files, headers=headers, timeout=TIMEOUT)


def put_image(url: str, image: str | None, data: bytes, name: str = "upload.png", params: str = "{}",
              headers: dict | None = None) -> requests.Response:
    query = {"image": image} if image is not None else {}
    return requests.put(f"{url}/datastore/image", params=query, files={"file": (name, data, "image/png")},
                        data={"params": params}, headers=headers, timeout=TIMEOUT)


def infer_json(url: str, model: str, image: str, params: dict | str | None = None,
               headers: dict | None = None) -> requests.Response:
    """``POST /infer/<model>?image=<id>&output=json``; ``params`` as a dict or as the raw form text."""
    text = params if isinstance(params, str) else json.dumps(params or {})
    return requests.post(f"{url}/infer/{model}", params={"image": image, "output": "json"}, data={"params": text},
                         headers=headers, timeout=TIMEOUT)


def snapshot(datastore: Path) -> dict:
    """``{relative path: sha1}`` of every file of the datastore (its lock file excluded)."""
    return {
        str(p.relative_to(datastore)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(datastore.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def wait_train_done(url: str, timeout: float = 300) -> dict:
    """Poll ``GET /train/`` until the latest training task is no longer SUBMITTED/RUNNING."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = requests.get(f"{url}/train/", timeout=TIMEOUT).json()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(1)
    raise AssertionError(f"training still running after {timeout} s: {status}")


def wait_train_running(url: str, timeout: float = 60) -> None:
    """Poll ``GET /train/`` until the latest training task's process runs (MONAI Label refuses a second one then)."""
    deadline = time.time() + timeout
    while requests.get(f"{url}/train/", timeout=TIMEOUT).json().get("status") != "RUNNING":
        if time.time() > deadline:
            raise AssertionError(f"training did not start within {timeout} s")
        time.sleep(0.1)
