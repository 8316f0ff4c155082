"""load_dataset: the layout is detected, and a folder in no layout gets an error saying what each needs."""

from __future__ import annotations

import pytest

from format_builders import gray, save_png
from lib.data.dataset import detect_layout, load_dataset
from lib.data.datastore import write_datastore
from lib.data.flat import read_flat
from lib.errors import DataError


def test_flat_folder_loads_as_flat_without_folds(flat_dir):
    dataset = load_dataset(flat_dir)
    assert dataset.layout == "flat" and dataset.folds is None and dataset.records == read_flat(flat_dir)
    assert dataset.summary()["classes"] == {"normal": 3, "distended": 1, "unlabelled": 0}
    assert dataset.summary()["patients"] == 2


def test_reference_folder_loads_with_its_folds(reference_dir):
    dataset = load_dataset(reference_dir)
    assert dataset.layout == "reference" and len(dataset.folds) == 2 and len(dataset.records) == 4


def test_reference_patient_rule_can_be_changed(reference_dir):
    dataset = load_dataset(reference_dir, patient_regex=r"^(p\d_[ab])")
    assert sorted(r.patient_id for r in dataset.records) == ["p1_a", "p1_b", "p2_a", "p2_b"]


def test_datastore_folder_loads_as_datastore(flat_dir, tmp_path):
    written = write_datastore(read_flat(flat_dir), tmp_path / "ds")
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.layout == "datastore" and dataset.records == written and dataset.folds is None


def test_a_folder_in_no_layout_is_rejected_with_what_each_layout_needs(tmp_path):
    save_png(tmp_path / "stray" / "a.png", gray(0))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "stray")
    message = str(info.value)
    assert "stray: not a dataset in any known layout" in message
    assert "labels.csv" in message and "anomaly_<fold>/sqr" in message and "datastore_v2.json" in message


def test_missing_folder_and_ambiguous_folder_are_rejected(flat_dir, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        detect_layout(tmp_path / "nowhere")
    (flat_dir / "datastore_v2.json").write_text("{}")
    with pytest.raises(DataError, match=r"several layouts at once \(flat, datastore\)"):
        detect_layout(flat_dir)
