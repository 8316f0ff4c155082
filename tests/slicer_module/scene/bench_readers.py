"""How long the GUI thread is busy applying one "Run LoRIS" answer, on Slicer's core libraries.

Run with the scene tests' environment::

    .venv-slicer/bin/python tests/slicer_module/scene/bench_readers.py

Prints, per frame size, the median milliseconds of each main-thread step of the module
(Slicer's volume reader for the anomaly map, VTK's PNG reader for the segmentation and
its PNG writer for a correction, the segmentation import and export) and their sum for
one Run. The server's work and the network are not included: they run on the worker.
"""

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import SlicerCore  # noqa: E402  (puts the module folder on sys.path)
from frames import write_nrrd  # noqa: E402

SIZES = ((320, 240), (1024, 768))
REPEATS = 15


def _median_ms(step):
    step()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main():
    core = SlicerCore()
    core.install()
    from LoRISLib.review import ReviewLogic

    logic = ReviewLogic()
    folder = Path(tempfile.mkdtemp(prefix="loris-bench-"))
    print(f"median of {REPEATS} runs, ms")
    for width, height in SIZES:
        rng = np.random.default_rng(0)
        frame = logic.loadFrame(str(write_nrrd(folder / f"frame_{width}.nrrd", (rng.random((height, width)) * 255)
                                               .astype(np.uint8))))
        amap = rng.random((height, width)).astype(np.float32)
        map_bytes = write_nrrd(folder / f"map_{width}.nrrd", amap).read_bytes()
        mask = (amap > 0.8).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, format="PNG")
        mask_png = buffer.getvalue()
        segmentation = logic.ensureSegmentationNode(None, frame)
        holder = {"map": None}

        def load_map():
            holder["map"] = logic.loadAnomalyMap(map_bytes, frame, previousMapNode=holder["map"])

        steps = {
            "anomaly map (Slicer volume reader)": load_map,
            "segmentation PNG (vtkPNGReader)": lambda: logic.maskFromPng(mask_png, width, height),
            "segmentation import": lambda: logic.setSegmentationMask(segmentation, frame, mask),
            "map colours + legend": lambda: logic.styleAnomalyMap(holder["map"], (0.5, 1.0)),
        }
        timings = {name: _median_ms(step) for name, step in steps.items()}
        correction = {
            "segmentation export": lambda: logic.maskFromSegmentation(segmentation, frame),
            "correction PNG (vtkPNGWriter)": lambda: logic.pngFromArray(mask),
        }
        correction_timings = {name: _median_ms(step) for name, step in correction.items()}
        print(f"{width} x {height}:")
        for name, ms in {**timings, **correction_timings}.items():
            print(f"  {name:48s} {ms:7.2f}")
        print(f"  {'one Run answer applied (sum of the first four)':48s} {sum(timings.values()):7.2f}")
        print(f"  {'one Submit built (export + PNG)':48s} {sum(correction_timings.values()):7.2f}")
    logic.shutdown()
    core.close()


if __name__ == "__main__":
    main()
