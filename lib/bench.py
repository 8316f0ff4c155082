"""Measure LoRIS latency and throughput, each next to the machine's own limit, in one run.

``python -m lib bench [--quick] [--device cpu|cuda] [--out FILE.json] [--threads N]``

Prints a table and writes the same numbers as JSON (``--out``). Everything runs
on the same thread count (``--threads``, default: PyTorch's), the server too.
Shared, noisy machines make absolute times drift from run to run; the ratios,
measured in the same run, hold better.

What is measured (times in milliseconds; p50/p95 over repeated requests):

- ``matmul_gflops``: the machine's practical peak, a large float32 matrix
  multiply (``--device``, same threads); median of the repeats, which run
  round-robin with the network's (so both see the same load). It is the BLAS
  torch links (MKL): on CPUs where that BLAS is not at its best (MKL on AMD)
  oneDNN's convolutions can beat it, and ``unet_ratio`` exceeds 1.
- ``unet_gflops``: achieved FLOP/s of the LoRIS network forward as the
  predictor serves it, at batch 1 and batch 16 (``{"1": .., "16": ..}``), and
  ``unet_ratio`` = that / ``matmul_gflops``. FLOPs are counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on the plain network
  (convolutions; elementwise ops are not counted). ``unet_gflops_plain`` is the
  plain ``build_network`` module in eval mode, for comparison.
- ``forward_ms``: the network forward alone at batch 1 (masked input on the grid).
- ``presets``: the two presets' networks side by side, each as the predictor serves it, at batch 1:
  ``paper`` (the reference U-Net with its full-resolution stage, 256 px) and ``quick`` (the CPU preset's
  MONAI UNet, 128 px); ``--quick`` runs both at its small size. Parameters, GFLOP per image and the
  forward's p50/p95/min (interleaved, :func:`measure_presets`).
- ``pipeline_ms``: one image end to end in-process, through
  :func:`lib.pipeline.run_inference` with a loaded pipeline (read PNG,
  resize, mask, reconstruct, anomaly map, score, segmentation, write
  ``reconstruction.png``, ``anomaly_map.nrrd``, ``mask.png``, ``segmentation.nrrd``, ``result.json``
  into a new folder each time, as one ``infer --out`` per image does: on ext4,
  renaming over an earlier run's files costs ~0.6 ms more per file);
  ``pipeline_outside_forward_share`` = ``1 - forward_ms.p50 / pipeline_ms.p50``
  and ``pipeline_to_forward_ratio`` = ``pipeline_ms.p50 / forward_ms.p50`` (``_min``: the same of
  the fastest runs, the least disturbed by other processes on a shared machine).
  ``pipeline_steps_ms``: its ``read`` (image file), ``predict`` (network and maps) and ``write``
  (output files) steps, each as :func:`~lib.pipeline.run_inference` times them;
  ``pipeline_without_writes_ms``: read + predict of each run, and
  ``pipeline_without_writes_to_forward_ratio`` its p50 over ``forward_ms.p50`` (how much of the
  pipeline's cost is the files, which depend on the disk more than on the code).
  ``pipeline_steps_alone_ms``: the same steps and the forward, each timed alone, warm, in a block of
  back-to-back calls (:func:`measure_steps_alone`); ``pipeline_steps_alone_to_forward_ratio`` = the
  steps' summed p50 over the forward's: the ratio the pipeline would reach if no step slowed down for
  running right after another (cold caches, the CPU shared with threads the forward left running).
- ``rest_ms``: the same image through a real ``monailabel start_server`` of
  this app on 127.0.0.1 (``POST /infer/loris?image=<id>`` with the box, the
  multipart answer received whole); ``rest_overhead_ratio`` = ``rest_ms.p50 /
  pipeline_ms.p50`` (and ``_min``); ``server_peak_rss_mb``: the peak resident memory of the
  server's process tree during further, untimed requests of the same kind (psutil, sampled
  every 20 ms while a request is in flight; a sample takes ~1 ms of CPU, kept out of the timings).
- ``backends``: the served forward as is (``eager``), as a frozen TorchScript trace and in ONNX
  Runtime when it is installed, at batch 1 and 16 (:func:`measure_backends`): whether an exported
  CPU runtime would win.
- ``scoring_images_per_s``: the active-learning scoring method
  (:class:`lib.activelearning.scoring.LorisScoring`, batched) over a datastore
  of unlabelled images with stored boxes, images read from disk included.
- ``precision``: the served forward (batch 16) and a bare training step (batch ``batch_size``) in
  ``float32`` and in each mixed precision the device runs (:mod:`lib.training.precision`: ``bf16`` on
  the CPU and on recent GPUs, ``fp16`` on GPUs), round-robin: milliseconds, images per second, the
  speed-up over float32, peak GPU memory of the training step (CUDA), and how far the outputs of the
  same weights and images move from float32 (reconstruction, scores of ``msgmsd`` and ``dd``) against
  :data:`lib.training.precision.TOLERANCE` (:func:`measure_precision`).
- ``gpu_peak_memory_mb``: on CUDA, the peak memory PyTorch allocated during the training loop.
- ``train_images_per_s``: the real :func:`lib.loris.train.train` loop
  (augmentation, masked forward, loss, Adam, validation loss; the epoch's
  ``seconds`` as the loop reports them, before its checkpoint write), epochs
  after the first; ``bare_train_images_per_s``: a bare PyTorch step (masked
  forward, the same LoRIS loss, backward, Adam) of the same network and batch
  on tensors already in memory, one epoch's worth after each real epoch;
  ``train_ratio_to_bare`` = their ratio (1.0 = the loop adds nothing).

The forward, the in-process pipeline and the REST request also run
round-robin, one of each in turn, with a 5 ms pause after each
(:data:`SETTLE_S`).

Data and model: synthetic knee-ultrasound frames (:mod:`lib.data.synthetic`,
640 x 480 by default) in a temporary work folder (``--workdir`` keeps it); the
model is the one the training measurement produces (a few epochs: its weights
are meaningless, which does not change any timing; the JSON says so).
Full run: the default ``LorisSettings`` network at 256 px. ``--quick``: the
same network at 64 px on 160 x 128 frames, fewer repeats (CI; under 2 minutes
on 2 cores). ``targets`` in the JSON compares the run with the project's goals.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lib.errors import DataError

SCHEMA = "loris-bench/1"
WEIGHTS_NOTE = ("model weights come from a few training epochs on synthetic frames and are meaningless; "
                "timing does not depend on them")
TARGETS = {
    "rest_overhead_ratio_max": 1.3,
    "pipeline_to_forward_ratio_max": 1.5,
    "unet_ratio_b16_min": 0.6,
}


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one bench run."""

    quick: bool
    image_size: int  # network grid side S
    frame_size: tuple[int, int]  # synthetic frames (W, H)
    matmul_n: int
    unet_repeats: int
    latency_repeats: int  # pipeline, forward and REST requests each
    patients: int  # 4 frames each: the datastore and the scoring set
    train_images: int
    train_epochs: int


FULL = Plan(quick=False, image_size=256, frame_size=(640, 480), matmul_n=2048, unet_repeats=5,
            latency_repeats=40, patients=10, train_images=16, train_epochs=3)
QUICK = Plan(quick=True, image_size=64, frame_size=(160, 128), matmul_n=1024, unet_repeats=3,
             latency_repeats=5, patients=4, train_images=8, train_epochs=2)
BATCHES = (1, 16)
WARMUP = 2
SETTLE_S = 0.005
"""Pause after each latency task. Without it the forward timed right after a REST request ran 20-30 % slower
(the server still finishing that request: 14.8 ms against 11.4 ms p50 on the 2-core machine of the README);
5 ms was enough, and longer pauses only let caches and clocks cool."""
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
"""Environment variables recorded with the machine (``machine.thread_environment``) when set."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI, < 2 min on 2 cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads, here and in the server (default: PyTorch's default)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="network grid side S (default 256, --quick 64)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the generated data, model and server log here (default: a temporary folder)")


# ---------------------------------------------------------------------------------------------------- timing
def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(tasks: dict, repeats: int, warmup: int = WARMUP, device="cpu",
                settle_s: float = 0.0) -> dict[str, list[float]]:
    """Milliseconds of each ``tasks[name]()``, run round-robin (a, b, c, a, b, c, ...) after ``warmup`` rounds.

    Round-robin makes every task see the same background load, so that ratios between them hold on a
    shared machine even when absolute times drift. ``settle_s``: a pause after every task, so that work a
    task leaves running once it has returned (a server finishing a request after its answer is received)
    is not timed as part of the next task.
    """
    for _ in range(warmup):
        for fn in tasks.values():
            fn()
    _sync(device)
    out = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out[name].append((time.perf_counter() - t0) * 1e3)
            if settle_s:
                time.sleep(settle_s)
    return out


def percentiles(ms: list[float]) -> dict:
    """``{"p50", "p95", "min", "n"}`` of a list of milliseconds (linear interpolation).

    ``min`` is the least disturbed run: on a shared machine the best estimate of the cost itself.
    """
    arr = np.asarray(ms, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "min": float(arr.min()),
            "n": int(arr.size)}


# ---------------------------------------------------------------------------------------------------- measurements
def count_flops(network, x) -> int:
    """FLOPs of one forward of ``network`` on ``x``, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(x)
    return int(counter.get_total_flops())


def measure_limit(plain, served, size: int, plan: Plan, device) -> dict:
    """The matmul peak and the network's FLOP/s (served and plain, :data:`BATCHES`), interleaved; medians."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n = plan.matmul_n
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    tasks, flops = {"matmul": lambda: a @ b}, {}
    for batch in BATCHES:
        x = (torch.rand(batch, 1, size, size, generator=gen) * 2 - 1).to(device)
        flops[batch] = count_flops(plain, x)
        tasks[f"served_{batch}"] = lambda x=x: served(x)
        tasks[f"plain_{batch}"] = lambda x=x: plain(x)
    with torch.inference_mode():
        ms = interleaved(tasks, plan.unet_repeats, warmup=1, device=device)
    matmul = [2.0 * n ** 3 / (t / 1e3) / 1e9 for t in ms["matmul"]]
    out = {"matmul_gflops": statistics.median(matmul), "matmul_gflops_best": max(matmul), "matmul_n": n,
           "unet_flops_per_image": flops[BATCHES[0]] / BATCHES[0], "unet_gflops": {}, "unet_gflops_plain": {}}
    for batch in BATCHES:
        for key, name in (("unet_gflops", "served"), ("unet_gflops_plain", "plain")):
            out[key][str(batch)] = flops[batch] / (statistics.median(ms[f"{name}_{batch}"]) / 1e3) / 1e9
    out["unet_ratio"] = {k: v / out["matmul_gflops"] for k, v in out["unet_gflops"].items()}
    out["unet_ratio_plain"] = {k: v / out["matmul_gflops"] for k, v in out["unet_gflops_plain"].items()}
    return out


def _torchscript(served, x):
    """A frozen TorchScript trace of ``served`` (the API is deprecated in recent PyTorch; its warnings are muted)."""
    import warnings

    import torch

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.trace(served, x).eval())


def _onnxruntime(served, x, path: Path, threads: int):
    """An ONNX Runtime CPU session of ``served`` exported to ``path`` (batch axis dynamic), or raise."""
    import warnings

    import onnxruntime
    import torch

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(served, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # ONNX Runtime's idle threads spin by default and would slow the torch runs timed in turn with it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda t: torch.from_numpy(session.run(None, {"x": t.cpu().numpy()})[0])


def measure_presets(plan: Plan, device) -> dict:
    """The ``paper`` and ``quick`` presets' networks, served form, batch 1, interleaved (see the module docstring)."""
    import torch

    from lib.loris.network import InferenceNetwork, build_network, parameter_count
    from lib.loris.settings import LorisSettings

    gen = torch.Generator().manual_seed(0)
    tasks, out = {}, {}
    for name, settings in (("paper", LorisSettings()), ("quick", LorisSettings.quick())):
        size = plan.image_size if plan.quick else settings.image_size
        torch.manual_seed(0)
        plain = build_network(settings).to(device).eval()
        served = InferenceNetwork(plain)
        x = (torch.rand(1, 1, size, size, generator=gen) * 2 - 1).to(device)
        out[name] = {"architecture": settings.architecture, "channels": list(settings.channels), "image_size": size,
                     "parameters": parameter_count(plain), "gflop_per_image": count_flops(plain, x) / 1e9}
        tasks[name] = lambda served=served, x=x: served(x)
    with torch.inference_mode():
        ms = interleaved(tasks, plan.unet_repeats, warmup=1, device=device)
    for name in out:
        out[name]["forward_ms"] = percentiles(ms[name])
    return {"presets": out}


def measure_backends(served, size: int, plan: Plan, device, work: Path) -> dict:
    """The served network's forward as is (``eager``), as a frozen TorchScript trace, and in ONNX Runtime.

    The issue behind this bench asks for an exported CPU runtime *if it wins*; this is the measurement
    that decides. Batch 1 and 16, round-robin, medians. ONNX Runtime is not a dependency: when it is not
    installed (or the device is not the CPU) its entry says why instead of giving times.

    Returns:
        ``{"backends": {name: {"forward_ms": {"1": p50, "16": p50}, "to_eager": {...}, "max_abs_diff": float}
        or {"unavailable": reason}}}``; ``to_eager`` < 1 means faster than the served network.
    """
    import torch

    gen = torch.Generator().manual_seed(1)
    inputs = {b: (torch.rand(b, 1, size, size, generator=gen) * 2 - 1).to(device) for b in BATCHES}
    runners, out = {"eager": served}, {}
    try:
        runners["torchscript"] = _torchscript(served, inputs[1])
    except Exception as exc:  # noqa: BLE001 - reported, not fatal: the bench measures what it can
        out["torchscript"] = {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
    if torch.device(device).type != "cpu":
        out["onnxruntime"] = {"unavailable": "measured on the CPU only"}
    else:
        try:
            runners["onnxruntime"] = _onnxruntime(served, inputs[1], work / "network.onnx", torch.get_num_threads())
        except ImportError as exc:
            out["onnxruntime"] = {"unavailable": f"not installed ({exc.name}); pip install onnxruntime onnx to compare"}
        except Exception as exc:  # noqa: BLE001
            out["onnxruntime"] = {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
    with torch.inference_mode():
        reference = served(inputs[1]).float().cpu()
        diffs = {name: float((run(inputs[1]).float().cpu() - reference).abs().max()) for name, run in runners.items()}
        times = {}
        for batch, repeats in ((1, plan.latency_repeats), (16, plan.unet_repeats)):
            tasks = {name: (lambda run=run, x=inputs[batch]: run(x)) for name, run in runners.items()}
            for name, values in interleaved(tasks, repeats, warmup=1, device=device).items():
                times.setdefault(name, {})[str(batch)] = statistics.median(values)
    for name, ms in times.items():
        out[name] = {"forward_ms": ms, "to_eager": {b: ms[b] / times["eager"][b] for b in ms},
                     "max_abs_diff": diffs[name]}
    return {"backends": {name: out[name] for name in ("eager", "torchscript", "onnxruntime")}}


class _RssSampler:
    """Peak resident memory (bytes) of a process and its children, sampled every ``period`` s while active.

    Sampling runs in a thread only while :attr:`active` is set (during requests to the server), so that
    it does not take the GIL from the in-process measurements.
    """

    def __init__(self, pid: int, period: float = 0.02):
        import psutil

        self.root = psutil.Process(pid)
        self.period = period
        self.peak = self.sample()
        self.active = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            if self.active.wait(0.1):
                self.peak = max(self.peak, self.sample())
                self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.active.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.sample())


def _forward_task(predictor, image, box):
    """The served network's forward alone, as a task: on the input the pipeline builds from ``image``
    ``(H, W)`` and ``box`` (``(1, 1, S, S)`` on the grid, box filled)."""
    import torch

    from lib.loris import preprocess
    from lib.loris.masking import fill_box

    x, grid_boxes = preprocess.batch([image], [box], predictor.settings.image_size)
    x = fill_box(x.to(predictor.device), grid_boxes.to(predictor.device))

    def forward():
        with torch.inference_mode():
            predictor.network(x)

    return forward


def measure_steps_alone(predictor, model_dir: Path, files: list, out_root: Path, repeats: int, device: str) -> dict:
    """The pipeline's steps, each timed alone: ``repeats`` back-to-back calls of one step, then the next step.

    The steps are the functions :func:`lib.pipeline.run_inference` calls, on the first frame of ``files``:
    ``read`` (:func:`~lib.data.imageio.read_image`), ``predict`` (:meth:`lib.pipeline.Pipeline.run_one`, the
    forward included) and ``write`` (:func:`~lib.loris.predictor.write_outputs`, a new folder each time), and the
    ``forward`` alone. Each runs warm and undisturbed by the others, so ``read + predict + write`` over
    ``forward`` (``pipeline_steps_alone_to_forward_ratio``) is the pipeline ratio this code would reach if
    no step slowed down for running right after another one: what the work itself costs, against what
    running it cold costs in ``pipeline_ms``.
    """
    from lib.data.imageio import read_image
    from lib.loris.predictor import write_outputs
    from lib.pipeline import Pipeline, model_context

    path, box = files[0]
    image = read_image(path)
    pipeline = Pipeline(predictor)
    result = pipeline.run_one(image, box)
    extra = {**result.to_json(), "image": str(path), **model_context(model_dir)}
    runs = itertools.count()
    steps = {"forward": _forward_task(predictor, image, box), "read": lambda: read_image(path),
             "predict": lambda: pipeline.run_one(image, box),
             "write": lambda: write_outputs(result.prediction, out_root / f"alone{next(runs)}", extra)}
    out = {}
    for name, fn in steps.items():
        out[name] = percentiles(interleaved({name: fn}, repeats, device=device)[name])
    total = sum(out[k]["p50"] for k in ("read", "predict", "write"))
    return {"pipeline_steps_alone_ms": out, "pipeline_steps_alone_to_forward_ratio": total / out["forward"]["p50"]}


def measure_latency(predictor, model_dir: Path, files: list, out_root: Path, server, items: list, repeats: int,
                    device: str) -> dict:
    """One image: the forward alone, :func:`run_inference` in-process, and ``POST /infer/loris``, interleaved.

    Args:
        files: ``(image_path, box)`` of the frames, cycled; ``items``: the same as ``(image_id, box)``.
        server: a running :class:`lib.server.process.ServerHandle` on the datastore of ``items``.
    """
    import requests

    from lib.data.imageio import read_image
    from lib.pipeline import Pipeline, model_context, run_inference

    pipe = Pipeline(predictor)
    forward = _forward_task(predictor, read_image(files[0][0]), files[0][1])
    session = requests.Session()
    count = {"pipeline": 0, "rest": 0}
    steps = {"read_ms": [], "predict_ms": [], "write_ms": []}

    def pipeline():
        i = count["pipeline"] = count["pipeline"] + 1
        path, box = files[i % len(files)]
        timings: dict = {}
        run_inference(pipe, path, out_root / f"run{i}", box, context=model_context(model_dir),
                      timings=timings)  # a new folder
        for key, values in steps.items():
            values.append(timings[key])

    def rest():
        i = count["rest"] = count["rest"] + 1
        image_id, box = items[i % len(items)]
        response = session.post(f"{server.url}/infer/loris", params={"image": image_id},
                                data={"params": json.dumps({"box": [int(v) for v in box], "device": device})},
                                timeout=120)
        if response.status_code != 200:
            raise DataError(f"POST /infer/loris?image={image_id} answered {response.status_code}: {response.text[:500]}")
        if not response.content:
            raise DataError(f"POST /infer/loris?image={image_id} answered an empty body")

    sampler = _RssSampler(server.pid)
    idle = sampler.sample()
    try:
        ms = interleaved({"forward": forward, "pipeline": pipeline, "rest": rest}, repeats, device=device,
                         settle_s=SETTLE_S)
        # memory on further, untimed requests: a sample costs ~1 ms of CPU, which would slow the timed ones
        with sampler:
            for _ in range(max(4, repeats // 4)):
                sampler.active.set()
                try:
                    rest()
                finally:
                    sampler.active.clear()
    finally:
        session.close()
    # interleaved() drops its warm-up calls from the front of each list; drop the same steps
    steps = {key: values[len(values) - len(ms["pipeline"]):] for key, values in steps.items()}
    unwritten = [r + p for r, p in zip(steps["read_ms"], steps["predict_ms"])]
    return {"forward_ms": percentiles(ms["forward"]), "pipeline_ms": percentiles(ms["pipeline"]),
            "pipeline_steps_ms": {key[:-3]: percentiles(values) for key, values in steps.items()},
            "pipeline_without_writes_ms": percentiles(unwritten),
            "rest_ms": percentiles(ms["rest"]), "server_rss_idle_mb": idle / 2 ** 20,
            "server_peak_rss_mb": sampler.peak / 2 ** 20}


def measure_scoring(datastore: Path, models_dir: Path, device: str) -> dict:
    """The ``loris_scoring`` method over every unlabelled image of ``datastore`` (model loaded beforehand)."""
    from lib.activelearning.scoring import LorisScoring
    from lib.server.datastore import HardenedDatastore
    from lib.infers.loris import predictor_cache

    scoring = LorisScoring(models_dir / "loris", models_dir / "recess_detection")
    predictor_cache(models_dir / "loris").get(device)  # loading is not scoring
    store = HardenedDatastore(str(datastore), auto_reload=False)
    t0 = time.perf_counter()
    summary = scoring({"device": device}, store)
    seconds = time.perf_counter() - t0
    if not summary.get("scored"):
        raise DataError(f"scoring scored nothing: {summary}")
    return {"scoring_images_per_s": summary["scored"] / seconds, "scoring_images": summary["scored"],
            "scoring_batch_size": scoring.batch_size}


def measure_training(train_records, valid_records, settings, model_dir: Path, plan: Plan, device) -> dict:
    """The real training loop against a bare PyTorch step of the same network and batch, epoch by epoch.

    After each epoch of :func:`lib.loris.train.train` (its ``seconds``: mini-batches, augmentation,
    validation loss), ``on_epoch`` runs one epoch's worth of bare steps (masked forward, the same loss,
    backward, Adam on a batch already in memory), so that both see the same machine load. The first
    epoch of each warms up and is not counted.
    """
    import torch

    from lib.loris import preprocess
    from lib.loris.loss import LorisLoss
    from lib.loris.masking import fill_box
    from lib.loris.network import build_network
    from lib.data.imageio import read_boxed_images
    from lib.loris.train import train

    bs = settings.batch_size
    images = read_boxed_images(train_records[:bs])
    x, grid_boxes = preprocess.batch(images, [r.box for r in train_records[:bs]], settings.image_size)
    x, grid_boxes = x.to(device), grid_boxes.to(device)
    torch.manual_seed(settings.seed)
    network = build_network(settings).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    loss_fn = LorisLoss(settings.ssim_win_size, settings.msgms_scales, settings.msgms_c).to(device)

    def step():
        recon = network(fill_box(x, grid_boxes))
        loss = loss_fn(recon, x)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    epochs, bare = [], []

    def on_epoch(stats):
        epochs.append(stats)
        steps = max(1, len(train_records) // bs)
        bare.append(interleaved({"step": step}, steps, warmup=0, device=device)["step"])

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    summary = train(train_records, model_dir, settings, valid_records=valid_records, progress=False,
                    on_epoch=on_epoch, device=device)
    memory = ({"gpu_peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20}
              if torch.device(device).type == "cuda" else {})
    timed = slice(1, None) if len(epochs) > 1 else slice(None)  # the first epoch warms up
    n_train = summary["n_train"]
    loop_ips = n_train / statistics.median(e["seconds"] for e in epochs[timed])
    bare_ips = bs / (statistics.median(t for ms in bare[timed] for t in ms) / 1e3)
    return {
        "train_images_per_s": loop_ips,
        "bare_train_images_per_s": bare_ips,
        "train_ratio_to_bare": loop_ips / bare_ips,
        "train_batch_size": bs,
        "train_images": n_train,
        "train_epochs_timed": len(epochs[timed]),
        "train_seconds_per_epoch": statistics.median(e["seconds"] for e in epochs[timed]),
        **memory,
    }


def measure_precision(model_dir: Path, records, plan: Plan, device) -> dict:
    """float32 against each mixed precision the device runs: speed, memory and outputs (module docstring)."""
    import torch

    from lib.data.imageio import read_boxed_images
    from lib.loris import preprocess
    from lib.loris.loss import LorisLoss
    from lib.loris.masking import fill_box
    from lib.loris.network import build_network
    from lib.loris.predictor import LorisPredictor
    from lib.training.precision import PRECISIONS, TOLERANCE, Precision, autocast, check_precision, compare

    device = torch.device(device)
    out: dict = {"tolerance": dict(TOLERANCE), "forward_batch": BATCHES[-1]}
    names = []
    for name in PRECISIONS:
        try:
            check_precision(name, device)
            names.append(name)
        except DataError as exc:
            out[name] = {"unavailable": str(exc)}
    chosen = records[:BATCHES[-1]]
    images, boxes = read_boxed_images(chosen), [r.box for r in chosen]
    predictors = {name: LorisPredictor.load(model_dir, device, precision=name) for name in names}
    settings = predictors["float32"].settings
    metrics = ("msgmsd", "dd")
    results = {name: p.network_outputs(images, boxes, metrics) for name, p in predictors.items()}
    reference = {"reconstruction": results["float32"].reconstruction, "scores": results["float32"].scores}
    x, grid_boxes = preprocess.batch(images, boxes, settings.image_size)
    x, grid_boxes = x.to(device), grid_boxes.to(device)
    masked = fill_box(x, grid_boxes)

    def forward(name):
        def run():
            with torch.inference_mode(), autocast(name, device):
                predictors[name].network(masked)
        return run

    bs = settings.batch_size
    xb, mb = x[:bs], masked[:bs]
    steps, peaks = {}, {}
    for name in names:
        torch.manual_seed(settings.seed)
        network = build_network(settings).to(device).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
        loss_fn = LorisLoss(settings.ssim_win_size, settings.msgms_scales, settings.msgms_c).to(device)
        amp = Precision(name, device)

        def step(network=network, optimizer=optimizer, loss_fn=loss_fn, amp=amp):
            with amp.autocast():
                recon = network(mb)
            loss = loss_fn(recon.float(), xb)["loss"]
            optimizer.zero_grad(set_to_none=True)
            amp.step(loss, optimizer)

        steps[name] = step
    if device.type == "cuda":
        for name in names:  # alone, for its peak memory
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            steps[name]()
            torch.cuda.synchronize(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    forward_ms = interleaved({name: forward(name) for name in names}, plan.unet_repeats, warmup=1, device=device)
    step_ms = interleaved(steps, plan.unet_repeats, warmup=1, device=device)
    for name in names:
        entry = {"forward_ms": statistics.median(forward_ms[name]), "train_step_ms": statistics.median(step_ms[name])}
        entry["train_images_per_s"] = bs / (entry["train_step_ms"] / 1e3)
        if name in peaks:
            entry["train_peak_memory_mb"] = peaks[name]
        if name != "float32":
            entry["forward_speedup"] = statistics.median(forward_ms["float32"]) / entry["forward_ms"]
            entry["train_speedup"] = statistics.median(step_ms["float32"]) / entry["train_step_ms"]
            entry.update(compare(reference, {"reconstruction": results[name].reconstruction,
                                             "scores": results[name].scores}))
        out[name] = entry
    return {"precision": out}


# ---------------------------------------------------------------------------------------------------- setup
def machine_info(device) -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # set before the process started, these change how the CPU threads wait and so the timings
        "thread_environment": {k: os.environ[k] for k in THREAD_ENVIRONMENT if k in os.environ},
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def make_data(work: Path, plan: Plan):
    """Synthetic frames in the flat layout and a datastore of the same frames imported unlabelled (boxes kept)."""
    from lib.data.datastore import write_datastore
    from lib.data.synthetic import write_sample_data

    records = write_sample_data(work / "flat", patients=plan.patients, seed=0, image_size=plan.frame_size,
                                images_per_patient=(4, 4))
    unlabelled = [replace(r, label=None, mask_path=None) for r in records]
    write_datastore(unlabelled, work / "datastore", mode="create", description="LoRIS bench")
    return records


def split_for_training(records, plan: Plan):
    normal = [r for r in records if r.label == "normal"]
    if len(normal) < plan.train_images + 2:
        raise DataError(f"bench data: {len(normal)} normal frames, need {plan.train_images + 2}")
    train_records = normal[:plan.train_images]
    rest = [r for r in records if r not in train_records]
    valid = [r for r in rest if r.label == "normal"][:4] + [r for r in rest if r.label == "distended"][:2]
    return train_records, valid


def check_targets(res: dict) -> dict:
    return {
        "rest_overhead_ratio": {"value": res["rest_overhead_ratio"], "max": TARGETS["rest_overhead_ratio_max"],
                                "met": res["rest_overhead_ratio"] <= TARGETS["rest_overhead_ratio_max"]},
        "pipeline_to_forward_ratio": {"value": res["pipeline_to_forward_ratio"],
                                      "max": TARGETS["pipeline_to_forward_ratio_max"],
                                      "met": res["pipeline_to_forward_ratio"] <= TARGETS["pipeline_to_forward_ratio_max"]},
        "unet_ratio_b16": {"value": res["unet_ratio"]["16"], "min": TARGETS["unet_ratio_b16_min"],
                           "met": res["unet_ratio"]["16"] >= TARGETS["unet_ratio_b16_min"]},
    }


def run(plan: Plan, device: str, work: Path, threads: int | None = None, log=print) -> dict:
    """Every measurement of the module docstring, in one run; returns the JSON-ready result."""
    import torch

    from lib.loris.predictor import LorisPredictor
    from lib.training.loop import resolve_device
    from lib.loris.model_files import load_model
    from lib.loris.network import build_network
    from lib.loris.settings import LorisSettings
    from lib.server.process import QUIET_ENV, start_server

    dev = resolve_device(device)
    stages: dict[str, float] = {}  # seconds per stage
    current = {"name": None, "t0": time.monotonic()}

    def stage(name: str | None, message: str = "") -> None:
        now = time.monotonic()
        if current["name"] is not None:
            stages[current["name"]] = round(now - current["t0"], 2)
        current.update(name=name, t0=now)
        if message:
            log(message)

    stage("setup")
    if threads is not None:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()
    started = time.monotonic()
    res: dict = {"schema": SCHEMA, "quick": plan.quick, "device": str(dev), "threads": threads,
                 "machine": machine_info(dev), "note": WEIGHTS_NOTE}
    settings = LorisSettings(image_size=plan.image_size, max_epochs=plan.train_epochs,
                             patience=plan.train_epochs + 1, seed=0)
    res["settings"] = {k: settings.to_dict()[k] for k in ("image_size", "architecture", "channels", "strides",
                                                           "num_res_units", "norm", "metric", "batch_size")}
    res["frame_size"] = list(plan.frame_size)

    stage("data", "data: synthetic frames and a datastore ...")
    records = make_data(work, plan)
    train_records, valid_records = split_for_training(records, plan)
    models_dir = work / "models"
    model_dir = models_dir / "loris"

    stage("training", f"training loop: {len(train_records)} images x {plan.train_epochs} epochs, and a bare step ...")
    res.update(measure_training(train_records, valid_records, settings, model_dir, plan, dev))

    stage("limit", "machine limit (float32 matmul) and network FLOP/s at batch 1 and 16, interleaved ...")
    predictor = LorisPredictor.load(model_dir, dev)
    plain = build_network(predictor.settings).to(dev).eval()
    plain.load_state_dict(load_model(model_dir).state_dict)
    res.update(measure_limit(plain, predictor.network, plan.image_size, plan, dev))

    stage("presets", "the paper and quick presets' networks, forward at batch 1 ...")
    res.update(measure_presets(plan, dev))

    stage("backends", "the served forward in TorchScript and ONNX Runtime ...")
    res.update(measure_backends(predictor.network, plan.image_size, plan, dev, work))

    stage("precision", "mixed precision against float32: forward, training step, outputs ...")
    res.update(measure_precision(model_dir, valid_records + train_records, plan, dev))

    stage("scoring", "active-learning scoring over the datastore ...")
    res.update(measure_scoring(work / "datastore", models_dir, str(dev)))

    items = [(r.image, r.box) for r in records][:8]
    files = [(work / "datastore" / f"{image}.png", box) for image, box in items]
    stage("server_start", "MONAI Label server: start ...")
    env = {**QUIET_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MONAI_LABEL_SESSION_PATH": str(work / "sessions")}
    server = start_server(studies=work / "datastore", conf={"models_dir": str(models_dir)}, env=env,
                          log_path=work / "server.log")
    with server:
        res["server_start_s"] = server.started_s
        stage("latency", "one image: forward, in-process pipeline and POST /infer/loris, interleaved; memory ...")
        res.update(measure_latency(predictor, model_dir, files, work / "pipeline", server, items,
                                   plan.latency_repeats, str(dev)))
    # after the timed latency runs: run before them, the ~60 MB of files this writes slowed their write step
    # (3.7-4.3 against 2.8-3.3 ms p50, three full runs each; probably the kernel flushing them to disk meanwhile)
    stage("steps_alone", "the pipeline's steps, each timed alone ...")
    res.update(measure_steps_alone(predictor, model_dir, files, work / "pipeline", plan.latency_repeats, str(dev)))
    res["pipeline_to_forward_ratio"] = res["pipeline_ms"]["p50"] / res["forward_ms"]["p50"]
    res["pipeline_outside_forward_share"] = 1.0 - res["forward_ms"]["p50"] / res["pipeline_ms"]["p50"]
    res["pipeline_to_forward_ratio_min"] = res["pipeline_ms"]["min"] / res["forward_ms"]["min"]
    res["pipeline_without_writes_to_forward_ratio"] = res["pipeline_without_writes_ms"]["p50"] / res["forward_ms"]["p50"]
    res["rest_overhead_ratio"] = res["rest_ms"]["p50"] / res["pipeline_ms"]["p50"]
    res["rest_overhead_ratio_min"] = res["rest_ms"]["min"] / res["pipeline_ms"]["min"]
    res["targets"] = check_targets(res)
    res["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    stage(None)
    res["stage_seconds"] = stages
    res["seconds"] = time.monotonic() - started
    return res


# ---------------------------------------------------------------------------------------------------- output
def _backend_rows(backends: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, entry in backends.items():
        if "unavailable" in entry:
            rows.append((f"forward in {name}", "-", entry["unavailable"]))
            continue
        ms, rel = entry["forward_ms"], entry["to_eager"]
        rows.append((f"forward in {name}", f"{ms['1']:.1f} / {ms['16']:.0f}",
                     f"ms at batch 1 / 16 = {rel['1']:.2f} / {rel['16']:.2f} x eager; max |diff| {entry['max_abs_diff']:.1e}"))
    return rows


def _precision_rows(precision: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name in ("float32", "bf16", "fp16"):
        entry = precision.get(name, {})
        if "unavailable" in entry or not entry:
            rows.append((f"precision {name}", "-", entry.get("unavailable", "not measured")))
            continue
        note = (f"ms forward at batch {precision['forward_batch']} / train step; {entry['train_images_per_s']:.1f} "
                "train images/s")
        if "train_peak_memory_mb" in entry:
            note += f"; train step peak {entry['train_peak_memory_mb']:.0f} MB"
        if name != "float32":
            scores = ", ".join(f"{m} {v:.1%}" for m, v in entry["score_rel"].items())
            note += (f"; x{entry['forward_speedup']:.2f} / x{entry['train_speedup']:.2f} float32; reconstruction max "
                     f"|diff| {entry['reconstruction_max_abs']:.3f}, scores {scores} of their spread: "
                     + ("within" if entry["within_tolerance"] else "OUTSIDE") + " tolerance")
        rows.append((f"precision {name}", f"{entry['forward_ms']:.1f} / {entry['train_step_ms']:.1f}", note))
    return rows


def format_table(res: dict) -> str:
    """The human-readable table of a result dict."""
    m = res["machine"]
    steps, alone = res["pipeline_steps_ms"], res["pipeline_steps_alone_ms"]
    rows = [
        ("matmul_gflops", f"{res['matmul_gflops']:.1f}", f"float32 {res['matmul_n']}^2, best {res['matmul_gflops_best']:.1f}"),
    ]
    for b in res["unet_gflops"]:
        rows.append((f"unet_gflops (batch {b})", f"{res['unet_gflops'][b]:.1f}",
                     f"{res['unet_ratio'][b]:.0%} of matmul; plain module {res['unet_gflops_plain'][b]:.1f}"
                     f" ({res['unet_ratio_plain'][b]:.0%})"))
    rows += [
        ("unet GFLOP per image", f"{res['unet_flops_per_image'] / 1e9:.2f}", f"{res['settings']['image_size']} px"),
        *[(f"preset {name}: forward p50", f"{p['forward_ms']['p50']:.1f}",
           f"ms at batch 1, {p['architecture']} {p['channels']} at {p['image_size']} px, "
           f"{p['parameters'] / 1e6:.1f} M parameters, {p['gflop_per_image']:.1f} GFLOP")
          for name, p in res["presets"].items()],
        *_backend_rows(res["backends"]),
        ("forward_ms p50 / p95", f"{res['forward_ms']['p50']:.1f} / {res['forward_ms']['p95']:.1f}",
         f"batch 1; min {res['forward_ms']['min']:.1f}"),
        ("pipeline_ms p50 / p95", f"{res['pipeline_ms']['p50']:.1f} / {res['pipeline_ms']['p95']:.1f}",
         f"{res['pipeline_to_forward_ratio']:.2f} x forward ({res['pipeline_outside_forward_share']:.0%} outside it); "
         f"min {res['pipeline_ms']['min']:.1f} = {res['pipeline_to_forward_ratio_min']:.2f} x forward min"),
        ("  its steps p50", f"{steps['read']['p50']:.1f} / {steps['predict']['p50']:.1f} / {steps['write']['p50']:.1f}",
         "read image / predict (forward included) / write files"),
        ("  without writing", f"{res['pipeline_without_writes_ms']['p50']:.1f}",
         f"{res['pipeline_without_writes_to_forward_ratio']:.2f} x forward (read + predict, per run)"),
        ("  steps alone p50", f"{alone['read']['p50']:.1f} / {alone['predict']['p50']:.1f} / {alone['write']['p50']:.1f}",
         f"each repeated alone; their sum {res['pipeline_steps_alone_to_forward_ratio']:.2f} x forward alone "
         f"({alone['forward']['p50']:.1f})"),
        ("rest_ms p50 / p95", f"{res['rest_ms']['p50']:.1f} / {res['rest_ms']['p95']:.1f}",
         f"rest_overhead_ratio {res['rest_overhead_ratio']:.2f}; min {res['rest_ms']['min']:.1f}, ratio of mins "
         f"{res['rest_overhead_ratio_min']:.2f}"),
        ("server_peak_rss_mb", f"{res['server_peak_rss_mb']:.0f}", f"idle {res['server_rss_idle_mb']:.0f}"),
        ("scoring_images_per_s", f"{res['scoring_images_per_s']:.2f}",
         f"{res['scoring_images']} images, batch {res['scoring_batch_size']}"),
        ("train_images_per_s", f"{res['train_images_per_s']:.2f}",
         f"bare step {res['bare_train_images_per_s']:.2f}; ratio {res['train_ratio_to_bare']:.2f}; "
         f"{res['train_seconds_per_epoch']:.2f} s per epoch of {res['train_images']} images"
         + (f"; peak GPU memory {res['gpu_peak_memory_mb']:.0f} MB" if "gpu_peak_memory_mb" in res else "")),
        *_precision_rows(res["precision"]),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"LoRIS bench ({'quick' if res['quick'] else 'full'}) on {res['device']}, {res['threads']} threads; "
             f"{m.get('gpu') or m['cpu']}, {m['usable_cpus']} usable CPUs, load {m['load_average_start'][0]:.1f}"
             f" -> {m['load_average_end'][0]:.1f}"
             + "".join(f"; {k}={v}" for k, v in m.get("thread_environment", {}).items()),
             f"{res['frame_size'][0]}x{res['frame_size'][1]} frames, network {res['settings']['channels']} at "
             f"{res['settings']['image_size']} px; {res['note']}", ""]
    lines += [f"{name:<{width}}  {value:>{vwidth}}  {note}" for name, value, note in rows]
    lines.append("")
    for name, t in res["targets"].items():
        bound = f"<= {t['max']}" if "max" in t else f">= {t['min']}"
        lines.append(f"target {name} {bound}: {t['value']:.2f} {'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def main(args) -> int:
    plan = QUICK if args.quick else FULL
    if args.image_size is not None:
        plan = replace(plan, image_size=int(args.image_size))
    if args.threads is not None and args.threads < 1:
        raise DataError(f"--threads must be at least 1, got {args.threads}")
    if args.workdir is not None:
        work = Path(args.workdir)
        if work.exists() and any(work.iterdir()):
            raise DataError(f"--workdir {work}: the folder is not empty; give a new or empty folder")
        work.mkdir(parents=True, exist_ok=True)
        cleanup = False
    else:
        work = Path(tempfile.mkdtemp(prefix="loris-bench-"))
        cleanup = True
    try:
        res = run(plan, args.device, work, args.threads, log=lambda msg: print(msg, flush=True))
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_table(res))
    if args.out is not None:
        from lib.data.atomic import write_json

        write_json(args.out, res)
        print(f"\nwrote {args.out}")
    return 0
