"""A tiny flat data set for the training tests (synthetic frames, 6 patients, 96 x 64 px)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_flat(tmp_path_factory):
    from lib.data.synthetic import write_sample_data

    root = tmp_path_factory.mktemp("training_data") / "flat"
    write_sample_data(root, patients=6, seed=0, image_size=(96, 64))
    return root
