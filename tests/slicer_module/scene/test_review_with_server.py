"""The module's actions against a real ``monailabel start_server`` of this app, driven as the panel drives them.

Each test calls a logic action from the main thread, as a button does, then runs the
main thread's loop without a GUI (``logic.wait()``: poll until the worker is done).
Every HTTP request is recorded with the thread it ran on: none may run on the main
thread (the module's clients also refuse to), and "Run LoRIS" must be exactly one
inference request. What the actions put in the scene is compared, array to array
through the real nodes, with the server's own answer read independently (PIL for the
PNG, SimpleITK for the NRRD).
"""

import base64
import io
import re
import threading
import urllib.request

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import slicer
import slicer.util
import vtk
from frames import HEIGHT, WIDTH, asymmetric_frame, asymmetric_mask, png_as_nrrd, write_dicom, write_png
from LoRISLib import results
from LoRISLib.client import LoRISClient, LoRISClientError
from LoRISLib.review import ReviewLogic, Server
from LoRISLib.scene import IMAGE_ID_ATTRIBUTE


class Recorder:
    """Every request the logic's clients make: ``(thread name, is main thread, method, path)``."""

    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, method, path):
        thread = threading.current_thread()
        with self._lock:
            self.calls.append((thread.name, thread is threading.main_thread(), method, path))

    def infers(self):
        return [c for c in self.calls if c[2] == "POST" and c[3].startswith("/infer/")]

    def on_main_thread(self):
        return [c for c in self.calls if c[1]]


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def logic(slicer_core, recorder):
    review = ReviewLogic(onRequest=recorder)
    yield review
    review.shutdown()


class Outcome:
    """Collects an action's ``done`` value or ``failed`` exception, with the thread each ran on."""

    def __init__(self):
        self.value = self.error = None
        self.threads = []

    def done(self, value):
        self.threads.append(threading.current_thread())
        self.value = value

    def failed(self, error):
        self.threads.append(threading.current_thread())
        self.error = error


def _run(logic, start, timeout=300):
    """Start an action the way a button does and run the GUI loop until it is over."""
    outcome = Outcome()
    task = start(done=outcome.done, failed=outcome.failed)
    assert task is not None and logic.busy  # the button returned at once; the call runs on the worker
    logic.wait(timeout)
    assert outcome.threads == [threading.main_thread()], "results must be applied on the main thread"
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def _direct(server, image_id, box, folder):
    """The server's own answer for the same request, read without the module's code."""
    client = LoRISClient(server.url, timeout=120, infer_timeout=300)
    response = client.infer("loris_anomaly_map", image_id, {"box": box})
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.params["mask_png_base64"]))))
    path = folder / "direct_map.nrrd"
    path.write_bytes(response.label)
    amap = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return response.params, mask, amap.reshape(HEIGHT, WIDTH)


def _label_all_unlabelled(server):
    """Leave no unlabelled image behind (the next-image test expects to get its own)."""
    client = LoRISClient(server.url, timeout=60)
    for image_id, entry in client.datastore("all")["objects"].items():
        if "final" not in entry.get("labels", {}):
            png = io.BytesIO()
            with urllib.request.urlopen(f"{server.url}/datastore/image?image={image_id}") as answer:
                size = Image.open(io.BytesIO(answer.read())).size
            Image.fromarray(np.zeros(size[::-1], np.uint8)).save(png, format="PNG")
            client.save_label(image_id, png.getvalue(), {"label": "normal", "box": [0, 0, 2, 2]}, tag="final")


def test_review_loop_on_a_dicom_frame_next_run_correct_submit(logic, recorder, server, tmp_path):
    _label_all_unlabelled(server)
    frame_pixels = asymmetric_frame()
    dicom = write_dicom(tmp_path / "knee_dicom_1.dcm", frame_pixels)
    setup = LoRISClient(server.url, timeout=60)
    image_id = setup.upload_image(str(dicom), "knee_dicom_1", {"patient_id": "scene-test"})

    # Next image: the only unlabelled image is ours; downloaded on the worker, loaded on the main thread
    frame, roi, segmentation = _run(logic, lambda **kw: logic.nextImage(Server(server.url), "random", **kw))
    assert frame.GetAttribute(IMAGE_ID_ATTRIBUTE) == image_id
    assert np.array_equal(slicer.util.arrayFromVolume(frame)[0], frame_pixels)
    assert not logic.roiIsPlaced(roi) and not logic.maskFromSegmentation(segmentation, frame).any()

    # Run LoRIS with a box: one inference request, one network forward, never on the main thread
    box = [50, 3, 94, 30]
    logic.setRoiFromBox(roi, frame, box)
    recorder.calls.clear()
    forwards = _forwards(server)
    run = _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, None, 0.4, **kw))
    assert [c[2:] for c in recorder.infers()] == [("POST", "/infer/loris_anomaly_map")]
    assert _forwards(server) == forwards + 1
    assert recorder.calls and not recorder.on_main_thread()
    assert run.result.box == box and run.result.box_source == "request"
    assert run.result.image_size == [WIDTH, HEIGHT]
    assert "mask_png_base64" not in run.params and logic.hasUnsubmittedWork(frame)

    # the scene holds exactly the server's answer, on the frame's grid
    params, mask, amap = _direct(server, image_id, box, tmp_path)
    assert params["score"] == pytest.approx(run.result.score)
    assert np.array_equal(logic.maskFromSegmentation(segmentation, frame), (mask > 0).astype(np.uint8))
    assert np.array_equal(slicer.util.arrayFromVolume(run.mapNode)[0], amap)
    frame_matrix, map_matrix = [slicer.util.arrayFromVTKMatrix(_ijk(n)) for n in (frame, run.mapNode)]
    assert np.allclose(frame_matrix, map_matrix)
    low, high = results.map_display_range(run.result)
    display = run.mapNode.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((low, high))

    # the clinician corrects the segmentation (a Segment Editor stroke) and submits it as distended
    corrected = asymmetric_mask()
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected[np.newaxis], segmentation,
                                                     logic.segmentId(segmentation), frame)
    submitted = _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi,
                                                                "distended", **kw))
    assert submitted == image_id and not logic.hasUnsubmittedWork(frame)
    with Image.open(server.datastore / "labels" / "final" / f"{image_id}.png") as stored:
        assert np.array_equal(np.asarray(stored) > 0, corrected > 0)
    info = setup.datastore("all")["objects"][image_id]["labels"]["final"]["info"]
    assert info["label"] == "distended" and info["box"] == box
    assert not recorder.on_main_thread()

    # nothing unlabelled is left: Next image says so
    assert _run(logic, lambda **kw: logic.nextImage(Server(server.url), "random", frame, roi, segmentation,
                                                    run.mapNode, **kw)) is None


def test_review_loop_on_a_calibrated_cine_loop_shows_millimetres_and_its_most_anomalous_frame(
        logic, recorder, server, tmp_path, ultrasound_dicom):
    _label_all_unlabelled(server)
    loop = np.stack([asymmetric_frame(), asymmetric_frame() // 3, np.clip(asymmetric_frame() * 2, 0, 255)])
    cine = ultrasound_dicom(tmp_path / "knee_cine.dcm", loop.astype(np.uint8), (0.1, 0.1))
    setup = LoRISClient(server.url, timeout=60)
    image_id = setup.upload_image(str(cine), "knee_cine", {"patient_id": "scene-test"})

    # Next image: a frame of the loop, in millimetres at once (the server read the calibration)
    frame, roi, segmentation = _run(logic, lambda **kw: logic.nextImage(Server(server.url), "random", **kw))
    assert frame.GetAttribute(IMAGE_ID_ATTRIBUTE) == image_id and logic.frameIndex(frame) == (0, 3)
    assert frame.GetSpacing()[:2] == pytest.approx((0.1, 0.1)) and logic.pixelSpacing(frame)[1]
    assert np.array_equal(slicer.util.arrayFromVolume(frame)[0], loop[0])

    # Run LoRIS: the whole loop in one request; the module shows the frame the result is of
    box = [50, 3, 94, 30]
    logic.setRoiFromBox(roi, frame, box)
    recorder.calls.clear()
    run = _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, None, 0.4, **kw))
    assert [c[2:] for c in recorder.infers()] == [("POST", "/infer/loris_anomaly_map")]
    result = run.result
    assert result.frame_count == 3 and result.frame == int(np.argmax(result.frame_scores))
    assert logic.frameIndex(frame) == (result.frame, 3)
    assert np.array_equal(slicer.util.arrayFromVolume(frame)[0], loop[result.frame])
    assert run.mapNode.GetSpacing()[:2] == pytest.approx((0.1, 0.1)) and logic.boxFromRoi(roi, frame) == box
    assert result.pixel_spacing_mm == [0.1, 0.1] and result.measurements["unit"] == "mm"
    text = results.format_result(result)
    assert "mm²" in text and f"Frame: {result.frame} of 0..2 (the most anomalous)" in text

    # the correction is stored for that frame
    slicer.util.updateSegmentBinaryLabelmapFromArray(asymmetric_mask()[np.newaxis], segmentation,
                                                     logic.segmentId(segmentation), frame)
    _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi, "distended", **kw))
    info = setup.datastore("all")["objects"][image_id]["labels"]["final"]["info"]
    assert info["frame"] == result.frame and info["box"] == box and not recorder.on_main_thread()


def _forwards(server) -> int:
    """How many LoRIS network forwards the server has logged (each logs one "LoRIS network forward" line)."""
    return server.log.read_text(errors="replace").count("LoRIS network forward")


def _ijk(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_run_without_a_box_uploads_the_frame_and_places_the_detectors_box(logic, recorder, server, tmp_path):
    pixels = asymmetric_frame()
    nrrd = png_as_nrrd(write_png(tmp_path / "scene_upload.png", pixels), tmp_path / "scene_upload.nrrd")
    frame = logic.loadFrame(str(nrrd))
    roi, segmentation = logic.startFrame(frame)
    run = _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, **kw))
    assert run.result.box_source == "detector"
    assert logic.roiIsPlaced(roi) and logic.boxFromRoi(roi, frame) == run.result.box
    assert [c[2:] for c in recorder.infers()] == [("POST", "/infer/loris_anomaly_map")]
    uploads = [c for c in recorder.calls if c[2] == "PUT" and c[3] == "/datastore/image"]
    assert len(uploads) == 1 and not recorder.on_main_thread()
    image_id = frame.GetAttribute(IMAGE_ID_ATTRIBUTE)
    assert re.fullmatch(r"scene_upload-[0-9a-f]{10}", image_id)  # name + content hash: a retry finds it
    # the datastore got the frame's pixels, exactly
    with urllib.request.urlopen(f"{server.url}/datastore/image?image={image_id}") as answer:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.read()))), pixels)
    # a second run reuses the uploaded image
    recorder.calls.clear()
    _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, run.mapNode, **kw))
    assert not [c for c in recorder.calls if c[2] == "PUT"]
    assert run.mapNode.GetScene() is None  # the previous map was replaced
    _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi, "normal", **kw))


def test_cancel_abandons_the_call_and_changes_nothing(logic, server, tmp_path):
    nrrd = png_as_nrrd(write_png(tmp_path / "scene_cancel.png", asymmetric_frame()), tmp_path / "scene_cancel.nrrd")
    frame = logic.loadFrame(str(nrrd))
    roi, segmentation = logic.startFrame(frame)
    logic.setRoiFromBox(roi, frame, [10, 10, 40, 40])
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    outcome = Outcome()
    task = logic.runLoris(Server(server.url), frame, roi, segmentation, done=outcome.done, failed=outcome.failed)
    assert logic.cancel() and not logic.busy and task.cancelled
    task.thread.join(60)  # its connection was closed: the thread ends
    assert not task.thread.is_alive()
    logic.poll()
    assert outcome.threads == []  # neither done nor failed: nothing applied
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes and not logic.hasUnsubmittedWork(frame)
    # the worker takes the next action at once
    _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, **kw))
    _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi, "normal", **kw))


def test_detect_recess_places_the_roi_on_the_detected_box(logic, server, tmp_path):
    nrrd = png_as_nrrd(write_png(tmp_path / "scene_detect.png", asymmetric_frame()), tmp_path / "scene_detect.nrrd")
    frame = logic.loadFrame(str(nrrd))
    roi, segmentation = logic.startFrame(frame)
    detection, placed = _run(logic, lambda **kw: logic.detectRecess(Server(server.url), frame, roi, **kw))
    assert detection.found and placed is roi  # the tiny detector reports its best box (threshold 0)
    assert logic.boxFromRoi(roi, frame) == detection.box
    _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi, "normal", **kw))


def test_connect_reports_models_and_server_errors_reach_the_failed_callback(logic, server, tmp_path):
    status = _run(logic, lambda **kw: logic.connect(Server(server.url), **kw))
    assert status["missing_models"] == [] and "Datastore:" in status["summary"]
    with pytest.raises(LoRISClientError, match="cannot reach the server"):
        _run(logic, lambda **kw: logic.connect(Server("http://127.0.0.1:9"), **kw))  # port 9: nothing listens
    # a 50 x 40 frame that claims to be a 96 x 64 datastore image
    small = png_as_nrrd(write_png(tmp_path / "small.png", asymmetric_frame(50, 40)), tmp_path / "small.nrrd")
    frame = logic.loadFrame(str(small))
    frame.SetAttribute(IMAGE_ID_ATTRIBUTE, server.sample_image_id)
    roi, segmentation = logic.startFrame(frame)
    logic.setRoiFromBox(roi, frame, [5, 5, 30, 30])
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="is 96x64 pixels but 'small' in Slicer is 50x40"):
        _run(logic, lambda **kw: logic.runLoris(Server(server.url), frame, roi, segmentation, **kw))
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes  # nothing applied
    with pytest.raises(LoRISClientError) as error:  # the server's own 4xx and message
        _run(logic, lambda **kw: logic.submitCorrection(Server(server.url), frame, segmentation, roi, "normal", **kw))
    assert 400 <= error.value.status < 500 and "50x40" in error.value.message


def test_bad_input_is_refused_before_any_request(logic, recorder, server, tmp_path):
    nrrd = png_as_nrrd(write_png(tmp_path / "scene_bad.png", asymmetric_frame()), tmp_path / "scene_bad.nrrd")
    frame = logic.loadFrame(str(nrrd))
    roi, segmentation = logic.startFrame(frame)
    with pytest.raises(ValueError, match="place the box"):
        logic.submitCorrection(Server(server.url), frame, segmentation, roi, "normal")
    with pytest.raises(ValueError, match="Unknown strategy"):
        logic.nextImage(Server(server.url), "newest")
    with pytest.raises(LoRISClientError, match="server URL"):
        logic.connect(Server("localhost:8000"))
    assert recorder.calls == [] and not logic.busy


def test_training_status_is_polled_beside_the_users_actions(logic, recorder, server):
    statuses = []
    assert logic.pollTrainingStatus(Server(server.url), done=statuses.append, failed=pytest.fail)
    assert not logic.pollTrainingStatus(Server(server.url), done=statuses.append)  # previous poll still out
    assert not logic.busy  # the panel's buttons stay enabled
    logic.statusWorker.wait(60)
    assert len(statuses) == 1
    status = statuses[0]
    assert status is None or isinstance(status, results.TrainStatus)
    assert recorder.calls and all(not c[1] for c in recorder.calls)
    assert all(c[0].startswith("LoRIS training status") for c in recorder.calls)


def test_module_clients_refuse_to_run_on_the_gui_thread(logic, server):
    client = logic.client(Server(server.url, token="secret-token"))
    with pytest.raises(RuntimeError, match="GUI thread"):
        client.info()
    assert "secret-token" not in repr(client) and "secret-token" not in repr(Server(server.url, "secret-token"))
