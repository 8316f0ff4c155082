"""Fixtures of the dataset-format tests: small valid datasets in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from format_builders import make_flat, make_reference


@pytest.fixture
def flat_dir(tmp_path) -> Path:
    """A valid flat dataset (see :func:`format_builders.make_flat`)."""
    return make_flat(tmp_path / "flat")


@pytest.fixture
def reference_dir(tmp_path) -> Path:
    """A valid two-fold reference layout (see :func:`format_builders.make_reference`)."""
    return make_reference(tmp_path / "reference")
