"""Slicer's core libraries set up as 3D Slicer sets them up, for the module's scene-level tests.

Runs in the ``slicer-core`` environment (``.venv-slicer``, made by ``make test``), never in
the server's: the wheel pins its own VTK. What 3D Slicer's application does at start-up
without Qt is done here with the same classes:

- one ``vtkMRMLScene`` as ``slicer.mrmlScene``;
- ``vtkSlicerApplicationLogic`` on it (selection and interaction nodes, slice orientation
  presets), the Colors, Volumes and Segmentations module logics registered with it and
  reachable as ``slicer.modules.<name>.logic()`` (what Slicer's module manager provides);
- ``vtkMRMLLayoutLogic`` with the conventional layout (it creates the Red, Yellow and
  Green slice nodes with their default orientations), and one ``vtkMRMLSliceLogic`` per
  slice view registered with the application logic (what the layout manager's slice
  widgets do).

Every test gets a fresh scene. Nothing here replaces a Slicer class by a stand-in; what
needs Qt (widgets, dialogs, the layout manager's views) is not here and is listed in
``slicer_module/README.md`` as checked in Slicer only.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import slicer  # the slicer-core wheel: fails loudly (never skips) outside its environment
import slicer.util
import vtk

REPO = Path(__file__).resolve().parents[3]
MODULE_DIR = REPO / "slicer_module" / "LoRIS"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SLICE_VIEWS = ("Red", "Yellow", "Green")


class SlicerCore:
    """One scene with the logics 3D Slicer attaches to it (see the module docstring)."""

    def __init__(self):
        scene = slicer.vtkMRMLScene()
        app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(scene)
        colors = slicer.vtkSlicerColorLogic()
        colors.SetMRMLApplicationLogic(app)
        colors.SetMRMLScene(scene)
        app.SetColorLogic(colors)
        volumes = slicer.vtkSlicerVolumesLogic()
        volumes.SetMRMLApplicationLogic(app)
        volumes.SetMRMLScene(scene)
        segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        segmentations.SetMRMLApplicationLogic(app)
        segmentations.SetMRMLScene(scene)
        for name, logic in (("Colors", colors), ("Volumes", volumes), ("Segmentations", segmentations)):
            app.SetModuleLogic(name, logic)
        layout = slicer.vtkMRMLLayoutLogic()
        layout.SetMRMLScene(scene)
        layout.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
        sliceLogics = vtk.vtkCollection()
        self._sliceLogics = []
        for name in SLICE_VIEWS:
            sliceLogic = slicer.vtkMRMLSliceLogic()
            sliceLogic.SetMRMLApplicationLogic(app)
            sliceLogic.SetMRMLScene(scene)
            # the slice widget's controller hands the view's node to its logic (qMRMLSliceControllerWidget)
            sliceLogic.SetSliceNode(scene.GetNodeByID(f"vtkMRMLSliceNode{name}"))
            sliceLogics.AddItem(sliceLogic)
            self._sliceLogics.append(sliceLogic)
        app.SetSliceLogics(sliceLogics)
        self.scene, self.app, self.layout = scene, app, layout
        self.colors, self.volumes, self.segmentations = colors, volumes, segmentations
        self.modules = SimpleNamespace(
            colors=SimpleNamespace(logic=lambda: colors),
            volumes=SimpleNamespace(logic=lambda: volumes),
            segmentations=SimpleNamespace(logic=lambda: segmentations),
        )

    def install(self):
        slicer.mrmlScene = self.scene
        slicer.modules = self.modules

    def sliceNode(self, name="Red"):
        return self.app.GetSliceLogicByLayoutName(name).GetSliceNode()

    def compositeNode(self, name="Red"):
        return self.app.GetSliceLogicByLayoutName(name).GetSliceCompositeNode()

    def layoutNode(self):
        return self.layout.GetLayoutNode()

    def close(self):
        """Detach the logics from the scene (as Slicer does at exit); the objects go with their last reference."""
        self.app.SetSliceLogics(None)
        for logic in self._sliceLogics + [self.layout, self.segmentations, self.volumes, self.colors, self.app]:
            logic.SetMRMLScene(None)


@pytest.fixture
def slicer_core():
    core = SlicerCore()
    previous = (getattr(slicer, "mrmlScene", None), getattr(slicer, "modules", None))
    core.install()
    try:
        yield core
    finally:
        core.close()
        slicer.mrmlScene, slicer.modules = previous


@pytest.fixture
def logic(slicer_core, tmp_path):
    from LoRISLib.review import ReviewLogic

    review = ReviewLogic()
    yield review
    review.shutdown()


# --------------------------------------------------------------------------- server

SERVER_SCRIPT = HERE / "throwaway_server.py"


def _server_python():
    """The server environment's Python (``.venv`` of the repository, or ``LORIS_SERVER_PYTHON``)."""
    path = os.environ.get("LORIS_SERVER_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    if not Path(path).exists():
        raise RuntimeError(f"the server's Python {path} does not exist; run `make venv` (or set LORIS_SERVER_PYTHON)")
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real ``monailabel start_server`` of this app on a tiny throwaway datastore, started with the server's Python.

    Attributes: ``url``, ``unlabelled_ids``, ``datastore`` (Path), ``log`` (the server's log file).
    """
    root = tmp_path_factory.mktemp("loris-server")
    ready = root / "ready.json"
    log = open(root / "throwaway_server.log", "w")
    proc = subprocess.Popen(
        [_server_python(), str(SERVER_SCRIPT), "--root", str(root), "--ready", str(ready)],
        cwd=str(REPO), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 600
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the throwaway server exited ({proc.returncode}):\n"
                                   + (root / "throwaway_server.log").read_text()[-4000:])
            if time.monotonic() > deadline:
                raise RuntimeError("the throwaway server did not start within 600 s")
            time.sleep(0.2)
        import json

        info = json.loads(ready.read_text())
        yield SimpleNamespace(url=info["url"], unlabelled_ids=info["unlabelled_ids"],
                              datastore=Path(info["datastore"]), sample_image_id=info["sample_image_id"],
                              log=root / "server.log")
    finally:
        if proc.poll() is None:
            proc.stdin.close()  # the script stops its server when its stdin closes
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture(scope="session")
def ultrasound_dicom():
    """``write(path, frames uint8 (H, W) | (F, H, W), spacing_mm)``: an RGB DICOM ultrasound frame or cine loop with
    its region calibration, written by the project's own writer (``lib.data.dicom``) in the server's environment
    (this one has no pydicom)."""

    def write(path, frames, spacing_mm):
        import numpy as np

        raw = Path(str(path) + ".npy")
        np.save(raw, np.asarray(frames, np.uint8))
        code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from lib.data.dicom import "
                "write_ultrasound_dicom as w; w(sys.argv[2], np.load(sys.argv[3]), (float(sys.argv[4]), "
                "float(sys.argv[5])), rgb=True)")
        subprocess.run([_server_python(), "-c", code, str(REPO), str(path), str(raw), *map(str, spacing_mm)],
                       check=True, capture_output=True, timeout=120)
        raw.unlink()
        return Path(path)

    return write


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """These tests are never skipped: a skip (a missing piece of the environment) is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"scene tests must not be skipped: {report.longrepr}"
