"""The module's actions, each split between the GUI thread and a worker thread (no Qt).

Every action (connect, next image, detect, run LoRIS, submit, train, training
status) has three parts:

1. on the main thread, read what it needs from the scene (the box from the ROI,
   the correction from the segmentation, the pixels to upload) -- bad input
   raises ValueError here, before any request;
2. on a :class:`~LoRISLib.worker.Worker` thread, the HTTP calls (an upload when
   the datastore lacks the image, then the call itself), with no scene access;
3. back on the main thread (``Worker.poll``), apply the answer to the scene.

The clients made here refuse to run on the main thread (``forbid_thread``), so
a server call that slipped onto the GUI thread fails loudly instead of freezing
Slicer. "Run LoRIS" is one request: ``POST /infer/loris_anomaly_map``, whose
answer carries the map (file), the segmentation (``mask_png_base64``) and the
result.

From Slicer's Python console (main thread), start an action and wait::

    logic = slicer.util.getModuleLogic("LoRIS")
    server = Server("http://127.0.0.1:8000")
    logic.connect(server, done=print)
    logic.wait()
"""

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import slicer

from . import results
from .client import STRATEGIES, TRAINERS, LoRISClient
from .scene import IMAGE_ID_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE, SceneLogic
from .worker import Worker

__all__ = ["Server", "UploadSource", "RunOutcome", "ReviewLogic"]

log = logging.getLogger("LoRIS")


@dataclass(frozen=True)
class Server:
    """Where the server is: base URL and the optional API token (never shown in ``repr`` or logs)."""

    url: str
    token: str = field(default="", repr=False)


@dataclass
class UploadSource:
    """What the datastore gets when it lacks the image (see :meth:`SceneLogic.uploadSource`)."""

    imageId: str
    path: Optional[str]
    png: Optional[bytes]
    name: str


@dataclass
class RunOutcome:
    """What one "Run LoRIS" put in the scene.

    result: score, decision, box, ... as the server answered.
    params: the answer's params (without the base64 segmentation), for the panel and the scene.
    """

    result: results.LorisResult
    params: dict
    imageId: str
    mapNode: object
    segmentationNode: object
    roiNode: object


def _safeName(name):
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name or "image"))
    return keep.strip("_") or "image"


class ReviewLogic(SceneLogic):
    """Scene operations (:class:`SceneLogic`) plus the server actions, run through :attr:`worker`.

    Args:
        onRequest: called as ``onRequest(method, path)`` on the worker thread before every
            HTTP request (diagnostics; the tests count requests with it).

    Attributes:
        worker: runs the user's actions, one at a time (the panel disables its buttons meanwhile).
        statusWorker: polls the training status, beside the user's actions.
    """

    def __init__(self, onRequest=None):
        SceneLogic.__init__(self)
        self.worker = Worker("LoRIS")
        self.statusWorker = Worker("LoRIS training status")
        self.onRequest = onRequest
        self._watched = {}
        self._quiet = 0

    # ------------------------------------------------------------------ plumbing

    def client(self, server, timeout=30.0):
        """A new client for one action; it refuses to run on the main (GUI) thread."""
        return LoRISClient(server.url, token=server.token, timeout=timeout,
                           forbid_thread=threading.main_thread(), on_request=self._onRequest)

    def _onRequest(self, method, path):
        log.debug("LoRIS: %s %s", method, path)  # the token is a header: never logged
        if self.onRequest is not None:
            self.onRequest(method, path)

    def _start(self, worker, name, server, work, apply=None, done=None, failed=None, progress=None, timeout=30.0):
        client = self.client(server, timeout)
        return worker.submit(name, lambda report: work(client, report), apply=apply, done=done, failed=failed,
                             abort=client.cancel, progress=progress)

    @property
    def busy(self):
        """True while a user action runs."""
        return self.worker.busy

    def poll(self):
        """Apply what the workers finished (main thread; the panel's timer calls this)."""
        return self.worker.poll() + self.statusWorker.poll()

    def wait(self, timeout=None):
        """Poll until the running action is over (console and tests: a GUI loop without the GUI)."""
        self.worker.wait(timeout)

    def cancel(self):
        """Abandon the running action: its connection is closed, its answer is not applied."""
        return self.worker.cancel()

    def shutdown(self):
        """Cancel everything, stop watching segmentations, remove the temporary files."""
        self.worker.cancel()
        self.statusWorker.cancel()
        for segmentation, tag in self._watched.values():
            segmentation.RemoveObserver(tag)
        self._watched.clear()
        self.cleanupTemp()

    @staticmethod
    def _ensureImage(client, source, report):
        """The datastore id of the image (worker thread): uploads it first when the datastore lacks it.

        An image without an id is stored as ``<name>-<first 10 hex digits of its SHA-256>``: the
        same pixels get the same id, so a retry after a cancelled upload (which the server
        may have finished) finds the image instead of colliding with it, and two different
        images of the same name do not collide.
        """
        if source.imageId and client.has_image(source.imageId):
            return source.imageId
        if source.path:
            with open(source.path, "rb") as f:
                data = f.read()
            name, ext = os.path.splitext(os.path.basename(source.path))
        else:
            data, name, ext = source.png, source.name, ".png"
        imageId = source.imageId or f"{_safeName(name)}-{hashlib.sha256(data).hexdigest()[:10]}"
        if not source.imageId and client.has_image(imageId):
            return imageId
        report("Uploading the image to the datastore")
        return client.upload_image(data, imageId, filename=_safeName(name) + ext.lower())

    def _source(self, frameNode):
        imageId, path, png = self.uploadSource(frameNode)
        return UploadSource(imageId, path, png, frameNode.GetName())

    def _frameParams(self, frameNode, source):
        """``{"frame": k}`` for a frame of a cine loop whose loop file is what the server has, else ``{}``."""
        frame, count = self.frameIndex(frameNode)
        cine = self.cineOf(frameNode)
        loopFile = cine.GetAttribute(SOURCE_FILE_ATTRIBUTE) if cine is not None else None
        if count > 1 and (source.imageId or (source.path and source.path == loopFile)):
            return {"frame": frame}
        return {}

    @staticmethod
    def _check(frameNode, action):
        if frameNode is None or frameNode.GetScene() is None:
            raise ValueError(f"The image was closed while {action} ran; nothing was changed.")

    # ------------------------------------------------------------------ segmentation edits

    def watchSegmentation(self, segmentationNode):
        """Mark the frame of ``segmentationNode`` "pending" whenever its segment is edited (painting, erasing, ...)."""
        if segmentationNode is None:
            return
        segmentation = segmentationNode.GetSegmentation()
        watched = self._watched.get(segmentationNode.GetID())
        if watched is not None:
            if watched[0] is segmentation:
                return
            watched[0].RemoveObserver(watched[1])  # a node of a closed scene had this id

        def edited(caller, event, node=segmentationNode):
            if self._quiet:
                return
            frame = self.frameOf(node)
            if frame is not None and self.reviewState(frame) != "pending":
                self.setReviewState(frame, "pending")

        tag = segmentation.AddObserver(slicer.vtkSegmentation.SegmentModified, edited)
        self._watched[segmentationNode.GetID()] = (segmentation, tag)

    def _setMaskQuietly(self, segmentationNode, frameNode, mask):
        self._quiet += 1
        try:
            self.setSegmentationMask(segmentationNode, frameNode, mask)
        finally:
            self._quiet -= 1

    def paintedPixels(self, segmentationNode, frameNode):
        """How many pixels the "anomaly" segment holds on the frame."""
        return int(self.maskFromSegmentation(segmentationNode, frameNode).sum())

    # ------------------------------------------------------------------ frames

    def startFrame(self, frameNode, previousFrame=None, roiNode=None, segmentationNode=None, mapNode=None):
        """Make ``frameNode`` the frame under review (main thread): show it alone, empty box and segmentation.

        The previous frame is removed when the module downloaded it (role "frame"; a volume
        the user loaded stays), and so is the previous anomaly map. Returns ``(roiNode,
        segmentationNode)``, created when None.

        Raises:
            ValueError: ``frameNode`` is not a single 2D frame (nothing is changed then).
        """
        self.imageGeometry(frameNode)
        if mapNode is not None:
            self.removeNodes(mapNode)
        if previousFrame is not None and previousFrame is not frameNode and self.role(previousFrame) == "frame":
            self.removeNodes(previousFrame, self.cineOf(previousFrame))
        roiNode = self.ensureRoiNode(roiNode)
        roiNode.RemoveAllControlPoints()  # the previous frame's box: draw or detect a new one
        segmentationNode = self.ensureSegmentationNode(segmentationNode, frameNode)
        self.watchSegmentation(segmentationNode)
        self._setMaskQuietly(segmentationNode, frameNode, self._emptyMask(frameNode))
        self.showFrame(frameNode)
        return roiNode, segmentationNode

    def _emptyMask(self, frameNode):
        _ijkToRas, (width, height) = self.imageGeometry(frameNode)
        return np.zeros((height, width), np.uint8)

    # ------------------------------------------------------------------ actions

    def connect(self, server, done=None, failed=None):
        """``/info`` and the datastore counts; ``done(status)`` gets a dict with "info", "datastore",
        "missing_models" (names the app should serve but does not) and "summary" (text for the panel)."""

        def work(client, report):
            info = client.info() or {}
            stats = client.datastore("stats") or {}
            missing = client.check_models(info)
            models = ", ".join(sorted(info.get("models", {}))) or "none"
            trainers = ", ".join(sorted(info.get("trainers", {}))) or "none"
            summary = "{name}\nModels: {models}\nTrainers: {trainers}\nDatastore: {total} images, {done} labeled".format(
                name=info.get("name", server.url), models=models, trainers=trainers,
                total=stats.get("total", "?"), done=stats.get("completed", "?"))
            if missing:
                summary += "\nMissing: " + ", ".join(missing)
            return {"info": info, "datastore": stats, "missing_models": missing, "summary": summary}

        return self._start(self.worker, "Connecting", server, work, done=done, failed=failed)

    def nextImage(self, server, strategy, previousFrame=None, roiNode=None, segmentationNode=None, mapNode=None,
                  done=None, failed=None, progress=None):
        """Ask the active-learning strategy for the next image, download and show it.

        ``done(None)`` when no unlabeled image is left, else ``done((frameNode, roiNode, segmentationNode))``.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
        folder = self.tempDir()

        def work(client, report):
            answer = client.next_image(strategy)
            if answer is None:
                return None
            report("Downloading the image")
            return answer, client.download_image(answer["id"], folder)

        def apply(value):
            if value is None:
                return None
            answer, path = value
            imageId = answer["id"]
            frame = self.loadFrame(path, name=imageId, role="frame")
            for node in (frame, self.cineOf(frame)):
                if node is not None:
                    node.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
                    node.StorableModified()  # its file is temporary: saving the scene must write it
            if "pixel_spacing_mm" in answer:  # the server read the image's calibration
                self.applyPixelSpacing(frame, answer["pixel_spacing_mm"])
            roi, segmentation = self.startFrame(frame, previousFrame, roiNode, segmentationNode, mapNode)
            return frame, roi, segmentation

        return self._start(self.worker, "Getting the next image", server, work, apply, done, failed, progress,
                           timeout=300.0)

    def detectRecess(self, server, frameNode, roiNode=None, done=None, failed=None, progress=None):
        """``recess_detection`` on the frame; places the ROI on the box found.

        ``done((detection, roiNode))`` with a :class:`results.Detection` (``found`` False: no box placed).
        """
        source = self._source(frameNode)
        self.imageGeometry(frameNode)
        params = self._frameParams(frameNode, source)

        def work(client, report):
            imageId = self._ensureImage(client, source, report)
            report("Detecting the recess")
            return imageId, results.parse_detection(client.infer("recess_detection", imageId, params).params)

        def apply(value):
            imageId, detection = value
            self._check(frameNode, "the detection")
            frameNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
            roi = self.ensureRoiNode(roiNode)
            if detection.found:
                self.setRoiFromBox(roi, frameNode, detection.box)
            return detection, roi

        return self._start(self.worker, "Detecting the recess", server, work, apply, done, failed, progress,
                           timeout=300.0)

    def runLoris(self, server, frameNode, roiNode=None, segmentationNode=None, mapNode=None, opacity=0.5,
                 done=None, failed=None, progress=None, wholeLoop=True):
        """One request, ``loris_anomaly_map``, for map, segmentation, score and decision; shows them.

        The box is the placed ROI's (none placed: the server's detector proposes one, and
        the ROI is placed on it). The frame gets the server's pixel spacing (mm). On a frame
        of a cine loop, ``wholeLoop`` scores every frame and shows the most anomalous one
        (the answer's ``frame``); False runs the frame shown. ``done(RunOutcome)``.
        """
        box = self.boxFromRoi(roiNode, frameNode) if self.roiIsPlaced(roiNode) else None
        source = self._source(frameNode)
        _ijkToRas, (width, height) = self.imageGeometry(frameNode)
        params = {} if wholeLoop else self._frameParams(frameNode, source)
        if box is not None:
            params["box"] = box

        def work(client, report):
            imageId = self._ensureImage(client, source, report)
            report("Running LoRIS")
            response = client.infer("loris_anomaly_map", imageId, params)
            return imageId, results.parse_loris_answer(response.params, response.label)

        def apply(value):
            imageId, answer = value
            self._check(frameNode, "LoRIS")
            size = answer.result.image_size
            if size is not None and tuple(size) != (width, height):
                raise ValueError(f"the server's image '{imageId}' is {size[0]}x{size[1]} pixels "
                                 f"but '{frameNode.GetName()}' in Slicer is {width}x{height}")
            frameNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
            if answer.result.frame_count > 1 and self.cineOf(frameNode) is not None:
                self.showCineFrame(frameNode, answer.result.frame)  # the frame the result is of
            self.applyPixelSpacing(frameNode, answer.result.pixel_spacing_mm)  # before the map and the box
            mask = self.maskFromPng(answer.mask_png, width, height)
            newMap = self.loadAnomalyMap(answer.anomaly_map, frameNode, previousMapNode=mapNode)
            self.styleAnomalyMap(newMap, results.map_display_range(answer.result))
            segmentation = self.ensureSegmentationNode(segmentationNode, frameNode)
            self.watchSegmentation(segmentation)
            self._setMaskQuietly(segmentation, frameNode, mask)
            roi = self.ensureRoiNode(roiNode)
            self.setRoiFromBox(roi, frameNode, answer.result.box)
            self.setMapVisible(newMap, True)
            self.setOverlayOpacity(opacity)
            self.setReviewState(frameNode, "pending")
            return RunOutcome(answer.result, answer.params, imageId, newMap, segmentation, roi)

        return self._start(self.worker, "Running LoRIS", server, work, apply, done, failed, progress, timeout=300.0)

    def submitCorrection(self, server, frameNode, segmentationNode, roiNode, labelClass, done=None, failed=None,
                         progress=None):
        """Save the correction (``PUT /datastore/label``, tag "final"): the mask, the class and the box.

        The correction is built here, on the main thread, from the segmentation node (see
        :meth:`SceneLogic.correctionFor`); ``done(imageId)``.
        """
        png, info = self.correctionFor(segmentationNode, frameNode, roiNode, labelClass)
        source = self._source(frameNode)
        info.update(self._frameParams(frameNode, source))

        def work(client, report):
            imageId = self._ensureImage(client, source, report)
            report("Saving the correction")
            client.save_label(imageId, png, info, tag="final")
            return imageId

        def apply(imageId):
            if frameNode.GetScene() is not None:
                frameNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
                self.setReviewState(frameNode, "submitted")
            return imageId

        return self._start(self.worker, "Submitting the correction", server, work, apply, done, failed, progress,
                           timeout=120.0)

    def startTraining(self, server, model, params=None, done=None, failed=None):
        """``POST /train/<model>``; refused with the server's message when a training already runs."""
        if model not in TRAINERS:
            raise ValueError(f"Unknown model '{model}'; trainers are {', '.join(TRAINERS)}.")
        return self._start(self.worker, f"Starting training of {model}", server,
                           lambda client, report: client.train(model, dict(params or {})), done=done, failed=failed)

    def stopTraining(self, server, done=None, failed=None):
        return self._start(self.worker, "Stopping training", server,
                           lambda client, report: client.stop_train(), done=done, failed=failed)

    def pollTrainingStatus(self, server, done=None, failed=None):
        """The latest training as :class:`results.TrainStatus` (or None when none ran), on :attr:`statusWorker`.

        Returns False without a request when the previous poll has not answered yet.
        """
        if self.statusWorker.busy:
            return False

        def work(client, report):
            task = client.train_status()
            return None if task is None else results.parse_train_status(task)

        self._start(self.statusWorker, "Training status", server, work, done=done, failed=failed, timeout=10.0)
        return True

