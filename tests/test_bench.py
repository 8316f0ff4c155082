"""``python -m lib bench``: one small run through the real CLI (training, pipeline, a real server), JSON keys checked.

No timing is asserted: the numbers depend on the machine and its load.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.bench import TARGETS, format_table, percentiles
from lib.errors import LorisError
from lib.server.process import ServerError, start_server

REPO = Path(__file__).resolve().parent.parent

TOP_KEYS = {
    "schema", "quick", "device", "threads", "machine", "note", "settings", "frame_size",
    "matmul_gflops", "matmul_n",
    "unet_flops_per_image", "unet_gflops", "unet_gflops_plain", "unet_ratio", "unet_ratio_plain",
    "forward_ms", "pipeline_ms", "pipeline_to_forward_ratio", "pipeline_outside_forward_share",
    "pipeline_steps_ms", "pipeline_without_writes_ms", "pipeline_without_writes_to_forward_ratio",
    "pipeline_steps_alone_ms", "pipeline_steps_alone_to_forward_ratio",
    "rest_ms", "rest_overhead_ratio", "rest_overhead_ratio_min", "pipeline_to_forward_ratio_min", "server_peak_rss_mb", "server_rss_idle_mb",
    "presets", "backends", "scoring_images_per_s", "train_images_per_s", "bare_train_images_per_s", "train_ratio_to_bare",
    "train_seconds_per_epoch", "precision",
    "targets", "stage_seconds", "seconds",
}


@pytest.mark.server
@pytest.mark.slow
def test_quick_bench_writes_every_measurement_as_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lib", "bench", "--quick", "--image-size", "32", "--threads", "1",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert TOP_KEYS <= set(res), TOP_KEYS - set(res)
    assert res["quick"] is True and res["device"] == "cpu" and res["threads"] == 1
    assert res["settings"]["image_size"] == 32
    assert res["machine"]["thread_environment"]["OMP_NUM_THREADS"] == "1"  # recorded: it changes the timings
    assert set(res["unet_gflops"]) == set(res["unet_ratio"]) == {"1", "16"}
    for key in ("forward_ms", "pipeline_ms", "rest_ms"):
        assert set(res[key]) == {"p50", "p95", "min", "n"} and 0 < res[key]["min"] <= res[key]["p50"] <= res[key]["p95"]
    assert set(res["presets"]) == {"paper", "quick"}
    assert res["presets"]["paper"]["architecture"] == "reference" and res["presets"]["paper"]["parameters"] > 20e6
    for preset in res["presets"].values():
        assert preset["image_size"] == 32 and 0 < preset["forward_ms"]["min"] <= preset["forward_ms"]["p50"]
    assert list(res["backends"]) == ["eager", "torchscript", "onnxruntime"]
    for name, entry in res["backends"].items():  # ONNX Runtime is optional: then it says why it is missing
        assert set(entry) == {"forward_ms", "to_eager", "max_abs_diff"} or (name == "onnxruntime" and entry["unavailable"])
    assert res["backends"]["eager"]["max_abs_diff"] == 0 and res["backends"]["torchscript"]["max_abs_diff"] < 1e-4
    precision = res["precision"]  # bf16 runs on the CPU; fp16 needs CUDA and says so
    assert precision["tolerance"] == {"reconstruction_max_abs": 0.05, "score_rel": 0.05}
    assert "CUDA" in precision["fp16"]["unavailable"] and precision["float32"]["train_images_per_s"] > 0
    assert precision["bf16"]["forward_speedup"] > 0 and isinstance(precision["bf16"]["within_tolerance"], bool)
    assert set(precision["bf16"]["score_rel"]) == {"msgmsd", "dd"} and precision["bf16"]["reconstruction_max_abs"] >= 0
    assert "gpu_peak_memory_mb" not in res  # CUDA only
    assert set(res["pipeline_steps_ms"]) == {"read", "predict", "write"}
    for step in [*res["pipeline_steps_ms"].values(), res["pipeline_without_writes_ms"]]:
        assert step["n"] == res["pipeline_ms"]["n"] and 0 < step["min"] <= step["p50"]  # one entry per timed run
    assert res["pipeline_without_writes_to_forward_ratio"] > 0
    assert set(res["pipeline_steps_alone_ms"]) == {"forward", "read", "predict", "write"}
    assert all(step["n"] == res["pipeline_ms"]["n"] and step["min"] > 0 for step in res["pipeline_steps_alone_ms"].values())
    assert res["pipeline_steps_alone_to_forward_ratio"] > 0  # timed on a shared machine: no timing is asserted
    assert not list((tmp_path / "work").glob("pipeline/alone0/*.tmp*"))
    for key in ("matmul_gflops", "unet_flops_per_image", "scoring_images_per_s", "train_images_per_s",
                "bare_train_images_per_s", "server_peak_rss_mb"):
        assert res[key] > 0, key
    assert res["server_peak_rss_mb"] >= res["server_rss_idle_mb"] > 0
    assert set(res["targets"]) == {"rest_overhead_ratio", "pipeline_to_forward_ratio", "unet_ratio_b16"}
    assert all(isinstance(t["met"], bool) for t in res["targets"].values())
    assert "pipeline_ms" in proc.stdout and "rest_overhead_ratio" in proc.stdout  # the table is printed
    assert not list((tmp_path / "work").glob("pipeline/run0/*.tmp*"))  # outputs were written atomically


def test_percentiles_of_known_values():
    p = percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert p == {"p50": 3.0, "p95": pytest.approx(80.8), "min": 1.0, "n": 5}


def test_table_reports_unmet_targets():
    res = {
        "quick": True, "device": "cpu", "threads": 2, "note": "n",
        "machine": {"cpu": "x", "usable_cpus": 2, "load_average_start": [1.0], "load_average_end": [2.0],
                    "thread_environment": {"GOMP_SPINCOUNT": "3000"}},
        "frame_size": [160, 128], "settings": {"channels": [4, 8], "image_size": 32},
        "matmul_gflops": 10.0, "matmul_gflops_best": 11.0, "matmul_n": 64,
        "unet_gflops": {"1": 1.0, "16": 2.0}, "unet_gflops_plain": {"1": 1.0, "16": 2.0},
        "unet_ratio": {"1": 0.1, "16": 0.2}, "unet_ratio_plain": {"1": 0.1, "16": 0.2}, "unet_flops_per_image": 1e9,
        "presets": {"paper": {"architecture": "reference", "channels": [64], "image_size": 32, "parameters": 2.9e7,
                              "gflop_per_image": 1.7, "forward_ms": {"p50": 30.0, "p95": 31.0, "min": 29.0}}},
        "backends": {"eager": {"forward_ms": {"1": 10.0, "16": 100.0}, "to_eager": {"1": 1.0, "16": 1.0}, "max_abs_diff": 0.0},
                     "onnxruntime": {"unavailable": "not installed"}},
        "forward_ms": {"p50": 10.0, "p95": 12.0, "min": 9.0}, "pipeline_ms": {"p50": 20.0, "p95": 22.0, "min": 18.0},
        "pipeline_to_forward_ratio": 2.0, "pipeline_outside_forward_share": 0.5, "pipeline_to_forward_ratio_min": 2.0,
        "pipeline_steps_ms": {k: {"p50": 1.0, "p95": 2.0, "min": 0.5} for k in ("read", "predict", "write")},
        "pipeline_without_writes_ms": {"p50": 15.0, "p95": 16.0, "min": 14.0}, "pipeline_without_writes_to_forward_ratio": 1.5,
        "pipeline_steps_alone_ms": {k: {"p50": 1.0, "p95": 2.0, "min": 0.5} for k in ("forward", "read", "predict", "write")},
        "pipeline_steps_alone_to_forward_ratio": 3.0,
        "rest_ms": {"p50": 22.0, "p95": 30.0, "min": 20.0}, "rest_overhead_ratio": 1.1, "rest_overhead_ratio_min": 1.11, "server_peak_rss_mb": 900.0,
        "server_rss_idle_mb": 800.0, "scoring_images_per_s": 3.0, "scoring_images": 8, "scoring_batch_size": 8,
        "train_images_per_s": 1.0, "bare_train_images_per_s": 2.0, "train_ratio_to_bare": 0.5,
        "train_seconds_per_epoch": 8.0, "train_images": 8,
        "precision": {"forward_batch": 16, "fp16": {"unavailable": "precision fp16 needs a CUDA device"},
                      "float32": {"forward_ms": 100.0, "train_step_ms": 200.0, "train_images_per_s": 20.0},
                      "bf16": {"forward_ms": 50.0, "train_step_ms": 100.0, "train_images_per_s": 40.0,
                               "forward_speedup": 2.0, "train_speedup": 2.0, "reconstruction_max_abs": 0.2,
                               "score_rel": {"msgmsd": 0.01}, "within_tolerance": False}},
    }
    from lib.bench import check_targets

    res["targets"] = check_targets(res)
    table = format_table(res)
    assert f"pipeline_to_forward_ratio <= {TARGETS['pipeline_to_forward_ratio_max']}: 2.00 NOT met" in table
    assert "rest_overhead_ratio <= 1.3: 1.10 met" in table
    assert "forward in onnxruntime" in table and "not installed" in table
    assert "GOMP_SPINCOUNT=3000" in table.splitlines()[0]  # thread settings are part of the machine line
    assert "their sum 3.00 x forward alone" in table
    assert "x2.00 / x2.00 float32; reconstruction max |diff| 0.200, scores msgmsd 1.0% of their spread: OUTSIDE" in table
    assert "precision fp16 needs a CUDA device" in table


def test_bench_rejects_a_non_empty_workdir(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "lib", "bench", "--quick", "--workdir", str(tmp_path)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--workdir" in proc.stderr and "not empty" in proc.stderr


def test_start_server_needs_a_datastore():
    with pytest.raises(ServerError, match="datastore"):
        start_server(studies="")
    assert issubclass(ServerError, LorisError)
