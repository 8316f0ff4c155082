"""`python -m lib import`: summary printed, bad input rejected before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from format_builders import leftovers
from lib.__main__ import main
from lib.data.datastore import read_datastore

REPO = Path(__file__).resolve().parents[2]


def test_import_flat_prints_the_summary_and_writes_the_datastore(flat_dir, tmp_path, capsys):
    assert main(["import", "--from", str(flat_dir), "--to", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "normal 3, distended 1, unlabelled 0" in out and "patients: 2" in out
    assert len(read_datastore(tmp_path / "ds")) == 4


def test_import_reference_layout_reports_its_folds(reference_dir, tmp_path, capsys):
    assert main(["import", "--from", str(reference_dir), "--to", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "layout:   reference" in out and "folds:    2" in out
    assert sorted(r.image for r in read_datastore(tmp_path / "ds")) == ["p1_a", "p1_b", "p2_a", "p2_b"]


def test_bad_input_exits_2_naming_the_file_and_writes_nothing(flat_dir, tmp_path, capsys):
    (flat_dir / "images" / "p2_a.png").write_bytes(b"not an image")
    assert main(["import", "--from", str(flat_dir), "--to", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "images/p2_a.png: not a readable image" in err
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


def test_existing_datastore_is_refused_then_merged_or_overwritten(flat_dir, tmp_path, capsys):
    target = str(tmp_path / "ds")
    assert main(["import", "--from", str(flat_dir), "--to", target]) == 0
    assert main(["import", "--from", str(flat_dir), "--to", target]) == 2
    assert "--merge" in capsys.readouterr().err
    assert main(["import", "--from", str(flat_dir), "--to", target, "--overwrite"]) == 0
    assert main(["import", "--from", str(flat_dir), "--to", target, "--merge"]) == 2  # same ids again


def test_dry_run_validates_and_writes_nothing(flat_dir, tmp_path, capsys):
    assert main(["import", "--from", str(flat_dir), "--to", str(tmp_path / "ds"), "--dry-run"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert not (tmp_path / "ds").exists()


def test_help_describes_the_layouts():
    result = subprocess.run([sys.executable, "-m", "lib", "import", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "labels.csv" in result.stdout and "anomaly_<fold>" in result.stdout and "--overwrite" in result.stdout
