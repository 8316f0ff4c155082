"""Crashes during writes: an image's label is always the old one or the new one, whole, and nothing acknowledged is lost.

Two levels: a datastore process killed at each step of a write (deterministic: the
kill is injected at the n-th ``os.replace`` / ``os.fsync`` / ``os.unlink``), and a real
server SIGKILLed while clients submit labels, restarted, and checked, several times.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from lib.data.imageio import read_mask, write_png
from lib.server.datastore import HardenedDatastore
from tests.app.helpers import TIMEOUT, put_label

OLD_BOX, NEW_BOX = [1, 1, 5, 5], [2, 3, 9, 8]


def _mask(box, height=12, width=16) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def _store_with_a_label(root: Path) -> None:
    root.mkdir()
    for name in ("a", "b"):
        write_png(root / f"{name}.png", np.full((12, 16), 100, dtype=np.uint8))
    write_png(root.parent / "old.png", _mask(OLD_BOX))
    write_png(root.parent / "new.png", _mask(NEW_BOX))
    HardenedDatastore(str(root), auto_reload=False).save_label("a", str(root.parent / "old.png"), "final",
                                                               {"label": "distended", "box": OLD_BOX})


def _crash_on(name: str, nth: int):
    """Make the n-th call of ``os.<name>`` end the process at once, as a kill would."""
    real, calls = getattr(os, name), itertools.count(1)

    def crashing(*args, **kwargs):
        if next(calls) == nth:
            os._exit(9)
        return real(*args, **kwargs)

    setattr(os, name, crashing)


def _write_then_crash(root: str, operation: str, name: str, nth: int) -> None:
    store = HardenedDatastore(root, auto_reload=False)
    _crash_on(name, nth)
    if operation == "save_label":
        store.save_label("a", str(Path(root).parent / "new.png"), "final", {"label": "distended", "box": NEW_BOX})
    elif operation == "remove_label":
        store.remove_label("a", "final")
    else:
        store.add_image("c", str(Path(root).parent / "new.png"), {})
    os._exit(0)  # the crash point was not reached


def _final_label(root: Path, image_id: str):
    """``(box, mask box)`` of the stored final label after recovery, or None; checks the recorded SHA-1."""
    store = HardenedDatastore(str(root), auto_reload=False)
    info = store.get_label_info(image_id, "final")
    uri = store.get_label_uri(image_id, "final")
    if not info:
        assert not uri and not (root / "labels" / "final" / f"{image_id}.png").exists()
        return None
    assert info["mask_sha1"] == hashlib.sha1(Path(uri).read_bytes()).hexdigest()
    ys, xs = np.nonzero(read_mask(uri))
    return info["box"], [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _staged_or_temporary(root: Path) -> list:
    return [p for p in root.rglob(".*") if p.name != ".lock"]


CRASH_POINTS = [
    ("save_label", "fsync", 1, "old"),  # writing the pending mask
    ("save_label", "fsync", 2, "old"),  # writing the new index, not yet renamed
    ("save_label", "replace", 1, "old"),  # about to commit the index
    ("save_label", "fsync", 3, "new"),  # index committed, mask still pending
    ("save_label", "replace", 2, "new"),  # about to move the pending mask into place
    ("remove_label", "replace", 1, "old"),  # about to stage the file for removal
    ("remove_label", "replace", 2, "old"),  # staged, about to commit the index
    ("remove_label", "unlink", 1, None),  # committed, about to delete the staged file
    ("add_image", "replace", 1, "no image"),  # pending image written, about to commit the index
    ("add_image", "replace", 2, "image"),  # committed, about to move the image into place
]


@pytest.mark.parametrize("operation,call,nth,expected", CRASH_POINTS)
def test_a_write_killed_at_any_step_leaves_the_old_or_the_new_label_whole(tmp_path, operation, call, nth, expected):
    root = tmp_path / "ds"
    _store_with_a_label(root)
    child = multiprocessing.get_context("fork").Process(target=_write_then_crash,
                                                         args=(str(root), operation, call, nth))
    child.start()
    child.join(60)
    assert child.exitcode == 9, "the crash point was not reached"
    label = _final_label(root, "a")  # opening the store recovers
    if operation == "add_image":
        store = HardenedDatastore(str(root), auto_reload=False)
        assert store.has_image("c") == (expected == "image") == (root / "c.png").is_file()
        assert label == (OLD_BOX, OLD_BOX)
    elif expected is None:
        assert label is None
    else:
        assert label == ((OLD_BOX, OLD_BOX) if expected == "old" else (NEW_BOX, NEW_BOX))
    assert not _staged_or_temporary(root)


# ---------------------------------------------------------------------------------------------- a real server

CYCLES = 3
SIDE = 10


def _box(n: int) -> list:
    """A box that encodes submission ``n`` (< 1000) in a 96 x 64 image."""
    x0, y0 = 1 + n % 50, 1 + (n // 50) % 20
    return [x0, y0, x0 + SIDE, y0 + SIDE]


def _submission(box) -> int:
    return (box[1] - 1) * 50 + (box[0] - 1)


def _stored(s, image_id: str):
    """The submission the stored final label of ``image_id`` holds, checking that its mask and info agree."""
    index = json.loads((s.datastore / "datastore_v2.json").read_text())["objects"]
    info = index[image_id]["labels"]["final"]["info"]
    path = s.datastore / "labels" / "final" / f"{image_id}.png"
    mask = read_mask(path)
    ys, xs = np.nonzero(mask)
    mask_box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    assert mask_box == info.get("box"), (image_id, info, mask_box)  # mask and info from one submission
    assert info.get("mask_sha1") == hashlib.sha1(path.read_bytes()).hexdigest()
    return _submission(info["box"])


@pytest.mark.server
def test_no_acknowledged_label_is_lost_across_repeated_server_kills(secured_server):
    s = secured_server
    rng = random.Random(0)
    ids = sorted(p.stem for p in s.datastore.glob("*.png"))[:6]
    shape = (64, 96)
    numbers = itertools.count(1)
    sent = {i: [] for i in ids}
    acked: dict = {}
    errors = []

    def submit(my_ids, stop):
        while not stop.is_set():
            for image_id in my_ids:
                n = next(numbers)
                sent[image_id].append(n)
                mask = np.zeros(shape)
                x0, y0, x1, y1 = _box(n)
                mask[y0:y1, x0:x1] = 1
                try:
                    response = put_label(s.url, image_id, mask, {"label": "distended", "box": _box(n)},
                                         headers=s.auth)
                except requests.RequestException:
                    return  # the server is gone
                if response.status_code == 200:
                    acked[image_id] = n
                else:
                    errors.append((image_id, n, response.status_code, response.text))

    for cycle in range(CYCLES):
        stop = threading.Event()
        threads = [threading.Thread(target=submit, args=(ids[k::2], stop)) for k in range(2)]
        acked_before = sum(1 for _ in acked)
        first = dict(acked)
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while sum(1 for i in ids if acked.get(i) != first.get(i)) < len(ids) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        s.kill()
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
        assert not errors, errors
        s.start()
        for image_id in ids:
            stored = _stored(s, image_id)
            if image_id in acked:  # the last acknowledged submission, or a later one that was in flight
                assert stored >= acked[image_id] and stored in sent[image_id], (cycle, image_id, stored,
                                                                                 acked[image_id], sent[image_id][-3:])
        assert not [p for p in s.datastore.rglob(".*") if p.name not in (".lock", ".uploads")]
        assert not list((s.datastore / ".uploads").glob("*"))
        assert acked_before <= len(acked)
    assert len(acked) == len(ids)
    assert requests.get(f"{s.url}/info/", timeout=TIMEOUT).status_code == 200
