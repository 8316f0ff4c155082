"""App-layer pieces without a server: request parsing, train-param merging, the datastore's lock across processes."""

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException

from lib.data.imageio import write_png
from lib.datastore import HardenedDatastore, check_name
from lib.errors import DataError
from lib.infers.params import request_box


@pytest.mark.parametrize("request_params,expected", [
    ({"box": [1, 2, 30, 20]}, (1, 2, 30, 20)),
    ({"roi": [30, 20, 1, 2]}, (1, 2, 30, 20)),
    ({"roi": [30, 1, 2, 20, 0, 0]}, (1, 2, 30, 20)),  # MONAI Label Slicer plugin: [i0, i1, j0, j1, k0, k1]
    ({"box": [1, 2, 30, 20], "roi": [0, 0, 5, 5]}, (1, 2, 30, 20)),  # box wins
    ({}, None),
    ({"box": []}, None),
])
def test_request_box_accepts_box_and_roi_and_sorts_roi_corners(request_params, expected):
    assert request_box(request_params, 40, 30) == expected


@pytest.mark.parametrize("request_params", [{"box": [30, 20, 1, 2]}, {"box": [0, 0, 41, 5]}, {"roi": [1, 2, 3]},
                                            {"roi": "1,2,3,4"}, {"box": ["a", 0, 1, 1]}])
def test_request_box_rejects_inverted_outside_or_malformed(request_params):
    with pytest.raises(DataError):
        request_box(request_params, 40, 30)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", ".hidden", "", "x\x00y", "a" * 201])
def test_unsafe_ids_and_tags_are_refused(name):
    with pytest.raises(HTTPException) as err:
        check_name(name, "image id")
    assert err.value.status_code == 400


def test_train_params_merge_over_declared_defaults(tmp_path):
    from lib.loris.settings import LorisSettings
    from lib.trainers.loris import LorisTrainer  # heavy (MONAI Label's train stack): not imported by the workers

    trainer = LorisTrainer(tmp_path / "loris", quick_default=True)
    quick, paper = LorisSettings.quick(), LorisSettings()
    declared = trainer.config()
    assert declared["max_epochs"] == quick.max_epochs and declared["quick"] is True

    assert trainer.settings_for({}) == quick
    assert trainer.settings_for({"max_epochs": 3, "learning_rate": 0.01}).max_epochs == 3
    # a client that sends the whole declared config back with quick=false gets the paper's values
    paper_request = {**declared, "quick": False}
    s = trainer.settings_for(paper_request)
    assert (s.max_epochs, s.patience, s.learning_rate, s.image_size) == (paper.max_epochs, paper.patience,
                                                                         paper.learning_rate, paper.image_size)
    assert trainer.settings_for({**paper_request, "max_epochs": 7}).max_epochs == 7
    assert trainer.settings_for({"max_epochs": 5, "early_stop_patience": -1}).patience == 5
    for bad in ({"learning_rate": -1}, {"max_epochs": "many"}, {"max_epochs": 2.5}, {"quick": "maybe"}):
        with pytest.raises(DataError):
            trainer.settings_for(bad)


def _make_datastore(root: Path, n: int) -> None:
    for i in range(n):
        write_png(root / f"img{i:02d}.png", np.full((12, 16), i, dtype=np.uint8))


def _save_labels(root: str, ids: list, seed: int, start: float) -> None:
    store = HardenedDatastore(root, auto_reload=False)
    mask = Path(root).parent / f"mask{seed}.png"
    write_png(mask, np.zeros((12, 16), dtype=np.uint8))
    while time.time() < start:  # all writers start together
        time.sleep(0.001)
    for image_id in ids:
        k = int(image_id[3:])
        store.save_label(image_id, str(mask), "final", {"label": "normal", "box": [k % 12, 0, k % 12 + 4, 4]})


def test_label_writes_from_four_processes_are_all_kept(tmp_path):
    # monailabel 0.8.5's LocalDatastore keeps about a quarter of these label infos: each process
    # rewrites the index from its own stale copy
    root = tmp_path / "ds"
    root.mkdir()
    _make_datastore(root, 40)
    HardenedDatastore(str(root), auto_reload=False)  # index the images
    ids = [f"img{i:02d}" for i in range(40)]
    ctx = multiprocessing.get_context("fork")  # the children reuse the imported modules: fast
    start = time.time() + 1.0
    workers = [ctx.Process(target=_save_labels, args=(str(root), ids[i::4], i, start)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    index = json.loads((root / "datastore_v2.json").read_text())["objects"]
    boxes = {k: v["labels"].get("final", {}).get("info", {}).get("box") for k, v in index.items()}
    assert boxes == {f"img{k:02d}": [k % 12, 0, k % 12 + 4, 4] for k in range(40)}
