"""App-layer pieces without a server: request parsing, train-param merging, the datastore's lock across processes."""

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException

from lib.data.imageio import write_png
from lib.server.datastore import HardenedDatastore, check_name
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


@pytest.mark.parametrize("text,message", [
    ("{bad", "not valid JSON"), ("[1, 2]", "JSON object"), ('"str"', "JSON object"), ("null", "JSON object"),
    ('{"box": [NaN, 1, 2, 3]}', "NaN"), ('{"box": [Infinity, 1, 2, 3]}', "Infinity"), ('{"x": 1e400}', "1e400"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"), ('{"a":' * 40 + "1" + "}" * 40, "nested too deeply"),
    ('{"x": ' + "9" * 5000 + "}", "not valid JSON"), (b"\xff\xfe", "UTF-8"),
])
def test_params_that_are_not_a_plain_json_object_are_refused_naming_the_field(text, message):
    from lib.infers.params import parse_params

    with pytest.raises(DataError) as err:
        parse_params(text, "params")
    assert str(err.value).startswith("params") and message in str(err.value)


def test_params_parse_to_a_dict_and_empty_means_none():
    from lib.infers.params import parse_params

    assert parse_params('{"box": [1, 2, 3.0, 4], "deep": [[[1]]]}') == {"box": [1, 2, 3.0, 4], "deep": [[[1]]]}
    assert parse_params("") == parse_params(None) == parse_params("  ") == {}


@pytest.mark.parametrize("box", ["1234", [True, 2, 30, 20], [1, 2, 30, "20"], {"x": 1}, [1, 2, 30], [1.5, 2, 30, 20],
                                 [float("nan"), 2, 30, 20], [1, 2, 10 ** 400, 20]])
def test_a_box_is_four_whole_finite_numbers(box):
    from lib.infers.params import strict_box

    with pytest.raises(DataError) as err:
        strict_box(box, 40, 30, "params.box")
    assert "params.box" in str(err.value)


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_upload_size_and_pixels_are_checked_from_the_header_before_decoding(tmp_path):
    from lib.server.upload_checks import OverLimit, UploadLimits, check_upload, header_size

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))  # no pixel data at all: only the header can be read
    assert header_size(bomb, "file") == (30000, 30000)
    with pytest.raises(OverLimit, match="30000x30000 pixels is over the limit"):
        check_upload(bomb, UploadLimits(), "file")
    with pytest.raises(OverLimit, match="bytes is over the limit"):
        check_upload(bomb, UploadLimits(max_bytes=10), "file")
    jpeg = tmp_path / "frame.jpg"
    from PIL import Image

    Image.new("L", (33, 21)).save(jpeg)
    assert check_upload(jpeg, UploadLimits(), "file") == (33, 21)


def test_nrrd_labels_are_read_when_single_slice_and_refused_by_size_first(tmp_path):
    import SimpleITK as sitk

    from lib.server.upload_checks import read_label_upload

    mask = np.zeros((1, 12, 16), dtype=np.uint8)
    mask[0, 2:5, 3:9] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "one.nrrd"))
    np.testing.assert_array_equal(read_label_upload(str(tmp_path / "one.nrrd"), 16, 12), mask[0] != 0)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 12, 16), dtype=np.uint8)), str(tmp_path / "two.nrrd"))
    with pytest.raises(DataError, match="one 2D frame"):
        read_label_upload(str(tmp_path / "two.nrrd"), 16, 12)
    (tmp_path / "big.png").write_bytes(_png_header(20000, 20000))
    with pytest.raises(DataError, match="20000x20000"):
        read_label_upload(str(tmp_path / "big.png"), 16, 12)


@pytest.mark.parametrize("info,foreground,message", [
    ({"label": "normal"}, 3, "contradicts"), ({"label": 1}, 0, "params.label"), ({"label": ["normal"]}, 0, "params.label"),
    ({"box": "1234"}, 0, "params.box"), ({"patient_id": True}, 0, "params.patient_id"),
])
def test_label_params_are_typed_strictly_and_a_class_never_contradicts_its_mask(info, foreground, message):
    from lib.server.upload_checks import validate_label_info

    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        validate_label_info(info, 40, 30, final=True, foreground=foreground)
    kept = validate_label_info({"mask_sha1": "forged", "label_source": "forged", "ts": 1}, 40, 30, final=True,
                               foreground=0)
    assert kept == {"label": "normal", "label_source": "mask"}


def test_app_config_reads_the_token_from_a_file_never_the_command_line(tmp_path):
    from lib.configs.app_config import AppConfig

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-enough-length\n")
    config = AppConfig.from_conf({"auth_token_file": str(token_file), "cors_origins": "https://a.example, "
                                                                                      "https://b.example/"},
                                 tmp_path, environ={})
    assert config.auth_token == "s3cret-token-of-enough-length" and "s3cret" not in repr(config)
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert AppConfig.from_conf({}, tmp_path, environ={"LORIS_AUTH_TOKEN": "x" * 16}).auth_token == "x" * 16
    assert AppConfig.from_conf({}, tmp_path, environ={}).auth_token is None
    for conf, environ, message in (({"auth_token_file": str(tmp_path / "missing")}, {}, "cannot read"),
                                   ({}, {"LORIS_AUTH_TOKEN": "short"}, "at least 16"),
                                   ({"auth_scope": "some"}, {}, "auth_scope"),
                                   ({"cors_origins": "evil.example"}, {}, "cors_origins")):
        with pytest.raises(DataError, match=message):
            AppConfig.from_conf(conf, tmp_path, environ=environ)


def test_a_cine_loop_upload_is_checked_for_its_frames_from_the_header(tmp_path):
    import numpy as np

    from lib.data.dicom import write_ultrasound_dicom
    from lib.server.upload_checks import OverLimit, UploadLimits, check_upload, header_frames

    loop = write_ultrasound_dicom(tmp_path / "cine.dcm", np.zeros((4, 20, 30), np.uint8), (0.1, 0.1))
    assert header_frames(loop, "file") == (30, 20, 4) and check_upload(loop, UploadLimits(), "file") == (30, 20)
    with pytest.raises(OverLimit, match="a cine loop of 4 frames is over the limit of 3 frames .--conf max_frames"):
        check_upload(loop, UploadLimits(max_frames=3), "file")


def test_app_config_reads_the_pacs_filter_store_and_frame_limit(tmp_path):
    from lib.configs.app_config import AppConfig

    config = AppConfig.from_conf({}, tmp_path, environ={"MONAI_LABEL_DICOMWEB_SEARCH_FILTER": '{"Modality": "CT"}'})
    assert config.dicomweb_filter == {"Modality": "US"} and config.dicomweb_store is None  # MONAI Label's CT default
    config = AppConfig.from_conf({"dicomweb_filter": '{"Modality": "US", "BodyPartExamined": "KNEE"}',
                                  "dicomweb_store": str(tmp_path / "store"), "max_frames": "40"}, tmp_path, environ={})
    assert config.dicomweb_filter == {"Modality": "US", "BodyPartExamined": "KNEE"}
    assert config.dicomweb_store == tmp_path / "store" and config.limits.max_frames == 40
    for text, message in (("{not json", "not JSON"), ('["US"]', "expected a JSON object"),
                          ('{"Modality": ["US"]}', "expected a JSON object")):
        with pytest.raises(DataError, match=f"--conf dicomweb_filter: {message}"):
            AppConfig.from_conf({"dicomweb_filter": text}, tmp_path, environ={})


def test_the_first_run_setup_retrains_a_detector_folder_of_the_older_layout(tmp_path, capsys):
    import torch

    from lib.server.setup import usable

    old = tmp_path / "recess_detection"
    old.mkdir()  # what the detector wrote before it moved onto the shared model folder
    torch.save({"format": "loris-recess-detector", "version": 2, "settings": {}, "network": {}}, old / "model.pt")
    (old / "detector.json").write_text("{}")
    assert usable("recess_detection", old) is False
    said = capsys.readouterr().out
    assert f"the model in {old} cannot be used" in said and "older version of this project" in said
    assert "POST /train/recess_detection" in said and "training a new one" in said
    assert usable("recess_detection", tmp_path / "absent") is False and capsys.readouterr().out == ""
