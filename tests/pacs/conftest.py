"""Fixtures of the PACS tests: a real Orthanc with its DICOMweb plugin, filled with sample DICOM ultrasound.

``orthanc_pacs`` (session) starts Orthanc on a free loopback port with a temporary storage
folder and uploads through STOW-RS: the DICOM frames of three synthetic patients
(``python -m lib sample-data --format dicom``, 96 x 64, region calibration), one cine loop of
three frames, one CT instance (which the app must not list) and one ultrasound frame larger
than the app's pixel limit. Without Orthanc (and no way to install it here) the tests are
skipped, saying why.

``pacs_server`` (session) is ``monailabel start_server --studies <Orthanc>/dicom-web`` of this
app, with a copy of the ``server`` fixture's tiny models and its own local store.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.conftest import APP_DIR, STARTUP_TIMEOUT_S, ServerProcess
from tests.pacs.orthanc import Orthanc, install, locate

PIXEL_LIMIT = 50_000  # the app's --conf max_image_pixels here: the 96 x 64 frames pass, the large one does not


@dataclass
class PacsContent:
    """What the test PACS holds.

    Attributes:
        orthanc: the running server.
        records: the sample frames' records (``image_path`` = their DICOM file), by SOPInstanceUID.
        cine: the cine loop's SOPInstanceUID; ``cine_box`` a box holding the recess in every frame.
        ct: the CT instance's SOPInstanceUID.
        large: the oversized ultrasound frame's SOPInstanceUID.
        spacing: ``{uid: pixel_mm}`` of the frames.
    """

    orthanc: Orthanc
    records: dict = field(default_factory=dict)
    spacing: dict = field(default_factory=dict)
    cine: str = ""
    cine_box: tuple = ()
    ct: str = ""
    large: str = ""

    @property
    def ultrasound(self) -> set:
        return set(self.records) | {self.cine, self.large}


@pytest.fixture(scope="session")
def orthanc_binary():
    found = locate()
    if found is None:
        note = install()
        found = locate()
        if found is None:
            pytest.skip(f"needs Orthanc and its DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb): {note}")
    return found


def _uid(path) -> str:
    return str(pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="session")
def orthanc_pacs(orthanc_binary, tmp_path_factory):
    from lib.data.dicom import write_ultrasound_dicom
    from lib.data.synthetic import write_sample_data

    root = tmp_path_factory.mktemp("pacs")
    records = write_sample_data(root / "sample", patients=3, seed=4, image_size=(96, 64), image_format="dicom",
                                cine_frames=3)
    orthanc = Orthanc(*orthanc_binary, root / "orthanc").start()
    content = PacsContent(orthanc)
    for r in records:
        uid = _uid(r.image_path)
        content.records[uid] = r
        content.spacing[uid] = float(pydicom.dcmread(str(r.image_path)).SequenceOfUltrasoundRegions[0].PhysicalDeltaX) * 10
    cine = next((root / "sample" / "cine").glob("*.dcm"))
    content.cine = _uid(cine)
    import csv

    row = next(csv.DictReader(open(root / "sample" / "cine" / "loops.csv")))
    content.cine_box = tuple(int(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
    ct = pydicom.dcmread(str(records[0].image_path))
    ct.Modality = "CT"
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ct.SeriesInstanceUID = pydicom.uid.generate_uid()
    ct.save_as(str(root / "ct.dcm"))
    content.ct = _uid(root / "ct.dcm")
    large = write_ultrasound_dicom(root / "large.dcm", np.full((240, 320), 90, np.uint8), (0.1, 0.1),
                                   patient_id="large")
    content.large = _uid(large)
    orthanc.store([r.image_path for r in records] + [cine, root / "ct.dcm", large])
    try:
        yield content
    finally:
        orthanc.stop()


@dataclass
class PacsServer(ServerProcess):
    """The app served on the PACS: ``datastore`` is the DICOMweb URL (``--studies``); ``store`` its local store."""

    store: Path = None
    conf: dict = field(default_factory=dict)
    pacs: PacsContent = None

    def start(self) -> None:
        from lib.server.process import start_server

        port = int(self.url.rsplit(":", 1)[1])
        self.handle = start_server(self.app_dir, self.datastore, self.conf, "127.0.0.1", port, env=self.env,
                                   log_path=self.log_path, timeout=STARTUP_TIMEOUT_S)


@pytest.fixture(scope="session")
def pacs_server(server, orthanc_pacs, tmp_path_factory):
    from lib.server.process import QUIET_ENV, free_port

    root = tmp_path_factory.mktemp("pacs_app")
    models_dir = root / "models"
    shutil.copytree(server.models_dir, models_dir)
    store = root / "store"
    conf = {"models_dir": models_dir, "dicomweb_store": store, "max_image_pixels": PIXEL_LIMIT,
            "max_upload_bytes": 2_000_000}
    env = {**QUIET_ENV, "MONAI_LABEL_SESSION_PATH": str(root / "sessions"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "MONAI_LABEL_DICOMWEB_CACHE_EXPIRY": "1"}
    proc = PacsServer(url=f"http://127.0.0.1:{free_port()}", datastore=orthanc_pacs.orthanc.dicomweb,
                      models_dir=models_dir, app_dir=APP_DIR, log_path=root / "server.log", env=env, store=store,
                      conf=conf, pacs=orthanc_pacs)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
