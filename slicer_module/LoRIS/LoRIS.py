"""LoRIS: knee-ultrasound recess anomaly detection in 3D Slicer, through the LoRIS MONAI Label app.

Box the recess, run LoRIS, see the anomaly map and the segmentation, correct
them, submit, retrain. The HTTP client, the IJK/RAS box conversion and the
result parsing live in ``LoRISLib`` (no Slicer needed, tested outside Slicer);
this file holds only the Slicer parts: the module, the widget (panel from
``Resources/UI/LoRIS.ui``, state in a parameter node so it survives scene
save/reload), the logic (no widgets; usable from the Python console) and the
self-test.
"""

import contextlib
import json
import logging
import os
import tempfile
from typing import Annotated, Optional

import numpy as np
import qt
import vtk

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LoRISLib import geometry, nrrdfile, pngfile, results
from LoRISLib.client import DEFAULT_URL, MODELS, STRATEGIES, TRAINERS, LoRISClient, LoRISClientError

LABELS = ("normal", "distended")
SEGMENT_NAME = "anomaly"
SEGMENT_COLOR = (1.0, 0.35, 0.1)
# Color tables (IDs as vtkMRMLColorLogic names them): Inferno ships with Slicer >= 5.2; Rainbow is built in.
MAP_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeRainbow")
IMAGE_ID_ATTRIBUTE = "LoRIS.imageId"
SOURCE_FILE_ATTRIBUTE = "LoRIS.sourceFile"
UPLOADABLE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
STATUS_POLL_MS = 2000


#
# LoRIS
#


class LoRIS(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LoRIS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Ultrasound")]
        self.parent.dependencies = ["Markups", "Segmentations", "SegmentEditor"]
        self.parent.contributors = ["LoRIS for MONAI Label and 3D Slicer contributors"]
        self.parent.helpText = _(
            "Knee-ultrasound recess anomaly detection (LoRIS) through a MONAI Label server: "
            "get the next image, box the recess, run LoRIS to see the anomaly map, the segmentation, "
            "the score and the decision; correct the segmentation and the class, submit, retrain. "
            "See slicer_module/README.md in the LoRIS repository."
        )
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer's scripted module template and MONAI Label's REST API."
        )


#
# Parameter node
#


@parameterNodeWrapper
class LoRISParameterNode:
    """Everything the panel shows, saved with the scene.

    serverUrl: MONAI Label server base URL.
    strategy: active learning strategy used by "Next image".
    inputVolume: the image (scalar volume) being reviewed.
    imageId: its datastore id ("" until it is known or uploaded).
    roiNode: the recess box (markups ROI).
    anomalyMapVolume: float anomaly map on the image's pixel grid (foreground layer).
    segmentationNode: the segmentation ("anomaly" segment) being corrected.
    overlayOpacity: foreground opacity of the anomaly map, 0..1.
    mapThreshold: anomaly-map values below this are transparent (map units).
    labelClass: the class submitted with the correction.
    submitAndNext: load the next image after a successful submit.
    trainModel, trainMaxEpochs, trainQuick: training request.
    resultJson: the last LoRIS result (params JSON) shown in the panel.
    """

    serverUrl: str = DEFAULT_URL
    strategy: Annotated[str, Choice(list(STRATEGIES))] = STRATEGIES[0]
    inputVolume: vtkMRMLScalarVolumeNode
    imageId: str = ""
    roiNode: vtkMRMLMarkupsROINode
    anomalyMapVolume: vtkMRMLScalarVolumeNode
    segmentationNode: vtkMRMLSegmentationNode
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    mapThreshold: float = 0.0
    labelClass: Annotated[str, Choice(list(LABELS))] = "normal"
    submitAndNext: bool = True
    trainModel: Annotated[str, Choice(list(TRAINERS))] = TRAINERS[0]
    trainMaxEpochs: Annotated[int, WithinRange(1, 100000)] = 50
    trainQuick: bool = False
    resultJson: str = ""


#
# LoRISWidget
#


class LoRISWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: buttons call the logic inside ``_busy`` (wait cursor, status line, server message on error)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._trainTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LoRIS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LoRISLogic()

        # Box placement: one ROI, placed by clicking twice in a slice view.
        self.ui.roiPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.roiPlaceWidget.setButtonsVisible(False)
        self.ui.roiPlaceWidget.placeButton().show()
        self.ui.roiPlaceWidget.deleteButton().show()

        # Embedded Segment Editor for corrections (shares the Segment Editor module's parameter node).
        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.getSegmentEditorNode())
        self.ui.segmentEditorWidget.setSegmentationNodeSelectorVisible(False)
        self.ui.segmentEditorWidget.setSourceVolumeNodeSelectorVisible(False)

        self._trainTimer = qt.QTimer()
        self._trainTimer.setInterval(STATUS_POLL_MS)
        self._trainTimer.connect("timeout()", self.onPollTraining)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.nextImageButton.connect("clicked(bool)", self.onNextImage)
        self.ui.openFileButton.connect("clicked(bool)", self.onOpenFile)
        self.ui.useLoadedImageButton.connect("clicked(bool)", self.onUseLoadedImage)
        self.ui.detectButton.connect("clicked(bool)", self.onDetectRecess)
        self.ui.runButton.connect("clicked(bool)", self.onRunLoris)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.stopTrainButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.mapThresholdSlider.connect("valueChanged(double)", self.onMapThresholdChanged)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._trainTimer:
            self._trainTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[LoRISParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" property in LoRIS.ui are bound here.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    # ------------------------------------------------------------------ GUI state

    def _updateGUI(self, caller=None, event=None) -> None:
        """Show what the parameter node holds that no bound widget shows, and enable the buttons that can run."""
        p = self._parameterNode
        if p is None:
            return
        volume = p.inputVolume
        # The datastore id belongs to the volume (node attribute, saved with the scene): when the user
        # selects another volume, show that volume's id, never the previous one's.
        volumeImageId = (volume.GetAttribute(IMAGE_ID_ATTRIBUTE) or "") if volume is not None else ""
        if p.imageId != volumeImageId:
            p.imageId = volumeImageId  # re-enters _updateGUI once, then the ids agree
            return
        self.ui.roiPlaceWidget.setCurrentNode(p.roiNode)
        if p.segmentationNode is not None:
            self.ui.segmentEditorWidget.setSegmentationNode(p.segmentationNode)
        if volume is not None:
            self.ui.segmentEditorWidget.setSourceVolumeNode(volume)
        result = None
        if p.resultJson:
            try:
                result = results.parse_loris_result(json.loads(p.resultJson))
            except (ValueError, results.ResultError):
                result = None
        self.ui.resultLabel.text = results.format_result(result) if result else _("No result yet.")
        self._updateThresholdRange()
        self.ui.detectButton.enabled = volume is not None
        self.ui.runButton.enabled = volume is not None
        self.ui.useLoadedImageButton.enabled = volume is not None
        self.ui.submitButton.enabled = volume is not None and p.roiNode is not None

    def _updateThresholdRange(self) -> None:
        p = self._parameterNode
        mapNode = p.anomalyMapVolume if p else None
        slider = self.ui.mapThresholdSlider
        slider.enabled = mapNode is not None and mapNode.GetImageData() is not None
        if not slider.enabled:
            return
        low, high = mapNode.GetImageData().GetScalarRange()
        high = max(high, low + 1e-6)
        wasBlocked = slider.blockSignals(True)
        slider.minimum = low
        slider.maximum = high
        slider.singleStep = (high - low) / 200.0
        slider.value = min(max(p.mapThreshold, low), high)
        slider.blockSignals(wasBlocked)

    def _setStatus(self, text) -> None:
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(text, 5000)

    @contextlib.contextmanager
    def _busy(self, what):
        """Wait cursor and status line around a server call; errors shown with the server's message."""
        self._setStatus(_("{what}...").format(what=what))
        slicer.app.processEvents()  # paint the status line before blocking
        try:
            with slicer.util.tryWithErrorDisplay(_("{what} failed.").format(what=what), waitCursor=True):
                yield
        except Exception as exc:  # already shown to the user by tryWithErrorDisplay
            message = exc.message if isinstance(exc, LoRISClientError) else str(exc)
            self._setStatus(_("{what} failed: {message}").format(what=what, message=message))
            logging.error("LoRIS: %s failed: %s", what, message)
        else:
            self._setStatus(_("{what}: done.").format(what=what))

    # ------------------------------------------------------------------ actions

    def onConnect(self) -> None:
        with self._busy(_("Connecting to {url}").format(url=self._parameterNode.serverUrl)):
            status = self.logic.connect(self._parameterNode.serverUrl)
            self.ui.serverInfoLabel.text = status["summary"]
            if status["missing_models"]:
                slicer.util.warningDisplay(
                    _("The server does not serve: {models}.").format(models=", ".join(status["missing_models"]))
                )

    def onNextImage(self) -> None:
        p = self._parameterNode
        with self._busy(_("Getting the next image ({strategy})").format(strategy=p.strategy)):
            loaded = self.logic.loadNextImage(p.serverUrl, p.strategy)
            if loaded is None:
                slicer.util.infoDisplay(_("No unlabeled image is left in the datastore."))
                return
            imageId, volume = loaded
            self._startImage(volume, imageId)

    def onOpenFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Open ultrasound image"), "", _("Images (*.png *.jpg *.jpeg *.dcm)")
        )
        if not path:
            return
        with self._busy(_("Loading {name}").format(name=os.path.basename(path))):
            volume = self.logic.loadScalarVolume(path)
            self._startImage(volume, "")

    def onUseLoadedImage(self) -> None:
        p = self._parameterNode
        with self._busy(_("Sending the loaded image to the datastore")):
            volume = self.logic.ensureScalarVolume(p.inputVolume)
            imageId = self.logic.ensureImageInDatastore(p.serverUrl, volume)
            self._startImage(volume, imageId)

    def _startImage(self, volume, imageId) -> None:
        """Make ``volume`` the current image: show it, reset box, map, segmentation and result."""
        p = self._parameterNode
        with slicer.util.NodeModify(p):
            p.inputVolume = volume
            p.imageId = imageId or ""
            p.roiNode = self.logic.ensureRoiNode(p.roiNode)
            p.segmentationNode = self.logic.ensureSegmentationNode(p.segmentationNode, volume)
            p.resultJson = ""
            p.labelClass = "normal"
        p.roiNode.RemoveAllControlPoints()  # the previous image's box: draw or detect a new one
        self.logic.clearSegmentation(p.segmentationNode, volume)
        self.logic.showImage(volume)

    def onDetectRecess(self) -> None:
        p = self._parameterNode
        with self._busy(_("Detecting the recess")):
            p.imageId = self.logic.ensureImageInDatastore(p.serverUrl, p.inputVolume)
            p.roiNode = self.logic.ensureRoiNode(p.roiNode)
            detection = self.logic.detectRecess(p.serverUrl, p.imageId, p.inputVolume, p.roiNode)
            if not detection.found:
                slicer.util.warningDisplay(_("No recess was found; draw the box by hand."))

    def onRunLoris(self) -> None:
        p = self._parameterNode
        with self._busy(_("Running LoRIS")):
            p.imageId = self.logic.ensureImageInDatastore(p.serverUrl, p.inputVolume)
            p.segmentationNode = self.logic.ensureSegmentationNode(p.segmentationNode, p.inputVolume)
            box = None
            if p.roiNode is not None and self.logic.roiIsPlaced(p.roiNode):
                box = self.logic.boxFromRoi(p.roiNode, p.inputVolume)
            result, mapNode = self.logic.runLoris(
                p.serverUrl, p.imageId, p.inputVolume, box, p.segmentationNode, p.anomalyMapVolume
            )
            p.roiNode = self.logic.ensureRoiNode(p.roiNode)
            self.logic.setRoiFromBox(p.roiNode, p.inputVolume, result.box)
            threshold = result.pixel_threshold if result.pixel_threshold is not None else 0.0
            with slicer.util.NodeModify(p):
                p.anomalyMapVolume = mapNode
                p.mapThreshold = threshold
                p.resultJson = json.dumps(self.logic.lastResultParams)
                p.labelClass = result.label
            self.logic.showAnomalyMap(p.inputVolume, mapNode, p.overlayOpacity, threshold)

    def onOpacityChanged(self, value) -> None:
        self.logic.setOverlayOpacity(value)

    def onMapThresholdChanged(self, value) -> None:
        p = self._parameterNode
        if p is None or p.anomalyMapVolume is None:
            return
        p.mapThreshold = value
        self.logic.setMapThreshold(p.anomalyMapVolume, value)

    def onSubmit(self) -> None:
        p = self._parameterNode
        submitted = False
        with self._busy(_("Submitting the correction")):
            p.imageId = self.logic.ensureImageInDatastore(p.serverUrl, p.inputVolume)
            self.logic.submitCorrection(
                p.serverUrl, p.imageId, p.inputVolume, p.segmentationNode, p.roiNode, p.labelClass
            )
            submitted = True
        if submitted and p.submitAndNext:
            self.onNextImage()

    def onTrain(self) -> None:
        p = self._parameterNode
        with self._busy(_("Starting training of {model}").format(model=p.trainModel)):
            self.logic.startTraining(p.serverUrl, p.trainModel, {"max_epochs": p.trainMaxEpochs, "quick": p.trainQuick})
            self.ui.trainStatusLabel.text = _("{model}: submitted").format(model=p.trainModel)
            self._trainTimer.start()

    def onStopTraining(self) -> None:
        with self._busy(_("Stopping training")):
            self.logic.stopTraining(self._parameterNode.serverUrl)
        self.onPollTraining()

    def onPollTraining(self) -> None:
        """Timer slot: show the training status; stop polling when it is done, failed or stopped."""
        if self._parameterNode is None:  # scene closed while polling
            self._trainTimer.stop()
            return
        try:
            status = self.logic.trainingStatus(self._parameterNode.serverUrl)
        except (LoRISClientError, results.ResultError) as exc:
            message = exc.message if isinstance(exc, LoRISClientError) else str(exc)
            self.ui.trainStatusLabel.text = _("Status unavailable: {message}").format(message=message)
            self._trainTimer.stop()
            return
        if status is None:
            self.ui.trainStatusLabel.text = _("No training has run yet.")
            self._trainTimer.stop()
            return
        text = status.summary()
        if status.last_line:
            text += "\n" + status.last_line[-200:]
        self.ui.trainStatusLabel.text = text
        if not status.running:
            self._trainTimer.stop()


#
# LoRISLogic
#


class LoRISLogic(ScriptedLoadableModuleLogic):
    """All the work, no widgets: usable from the Python console and the self-test.

    Server calls raise :class:`LoRISClientError` (status + the server's
    message); bad input raises ValueError naming the problem.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._clients = {}
        self.lastResultParams = None
        self._tempDir = None

    def getParameterNode(self):
        return LoRISParameterNode(super().getParameterNode())

    def client(self, url, timeout=30.0):
        """The HTTP client for ``url`` (one per URL and timeout, reused)."""
        key = (url.strip().rstrip("/"), timeout)
        if key not in self._clients:
            self._clients[key] = LoRISClient(url, timeout=timeout)
        return self._clients[key]

    def tempDir(self):
        """A folder for downloads, removed when Slicer exits (a fresh sub-folder per download avoids name clashes)."""
        if self._tempDir is None:
            self._tempDir = tempfile.TemporaryDirectory(prefix="LoRIS-")
        return tempfile.mkdtemp(dir=self._tempDir.name)

    # ------------------------------------------------------------------ server

    def connect(self, url):
        """Read ``/info`` and the datastore status.

        Returns:
            dict with "info", "datastore", "missing_models" (names the app should serve but does not)
            and "summary" (text for the panel).
        """
        client = self.client(url)
        info = client.info()
        stats = client.datastore("stats")
        missing = client.check_models(info)
        models = ", ".join(sorted(info.get("models", {}))) or "none"
        trainers = ", ".join(sorted(info.get("trainers", {}))) or "none"
        total = stats.get("total", "?") if isinstance(stats, dict) else "?"
        completed = stats.get("completed", "?") if isinstance(stats, dict) else "?"
        summary = _("{name}\nModels: {models}\nTrainers: {trainers}\nDatastore: {total} images, {completed} labeled").format(
            name=info.get("name", url), models=models, trainers=trainers, total=total, completed=completed
        )
        if missing:
            summary += "\n" + _("Missing: {models}").format(models=", ".join(missing))
        return {"info": info, "datastore": stats, "missing_models": missing, "summary": summary}

    # ------------------------------------------------------------------ images

    def loadScalarVolume(self, path, name=None):
        """Load one PNG/JPEG/DICOM frame as a grayscale scalar volume.

        ``singleFile`` keeps Slicer from stacking numbered neighbours
        (frame_001.png, frame_002.png, ...) into a 3D volume; a color frame,
        which Slicer loads as an RGB(A) vector volume the Segment Editor
        cannot use, is converted to luminance.
        """
        name = name or os.path.splitext(os.path.basename(path))[0]
        node = slicer.util.loadVolume(path, {"singleFile": True, "name": name, "show": False})
        node = self.ensureScalarVolume(node)
        node.SetAttribute(SOURCE_FILE_ATTRIBUTE, path)
        return node

    def ensureScalarVolume(self, volumeNode):
        """``volumeNode`` itself when it is scalar; else a new grayscale scalar volume replacing it in the scene."""
        if volumeNode is None:
            raise ValueError("No image is selected.")
        if not volumeNode.IsA("vtkMRMLVectorVolumeNode"):
            return volumeNode
        rgb = slicer.util.arrayFromVolume(volumeNode)  # (K, J, I, C)
        if rgb.shape[-1] >= 3:
            gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            gray = np.clip(np.round(gray), np.iinfo(rgb.dtype).min, np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else gray
            gray = gray.astype(rgb.dtype)
        else:
            gray = rgb[..., 0].copy()
        scalar = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volumeNode.GetName())
        scalar.CopyOrientation(volumeNode)
        slicer.util.updateVolumeFromArray(scalar, gray)
        scalar.CreateDefaultDisplayNodes()
        for attribute in (IMAGE_ID_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE):
            if volumeNode.GetAttribute(attribute):
                scalar.SetAttribute(attribute, volumeNode.GetAttribute(attribute))
        storage = volumeNode.GetStorageNode()
        if storage is not None and storage.GetFileName() and not scalar.GetAttribute(SOURCE_FILE_ATTRIBUTE):
            scalar.SetAttribute(SOURCE_FILE_ATTRIBUTE, storage.GetFileName())
        slicer.mrmlScene.RemoveNode(volumeNode)
        return scalar

    def loadNextImage(self, url, strategy):
        """Ask the server for the next image; download and load it. Returns ``(imageId, volumeNode)`` or None."""
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
        client = self.client(url)
        answer = client.next_image(strategy)
        if answer is None:
            return None
        imageId = answer["id"]
        path = client.download_image(imageId, self.tempDir())
        volume = self.loadScalarVolume(path, name=imageId)
        volume.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
        return imageId, volume

    def ensureImageInDatastore(self, url, volumeNode):
        """The datastore id of ``volumeNode``, uploading the image first when the datastore lacks it.

        The id is kept on the volume (node attribute ``LoRIS.imageId``, saved
        with the scene). The upload sends the original file when the volume
        came from a PNG/JPEG/DICOM file, else the volume's pixels as an 8-bit PNG.
        """
        if volumeNode is None:
            raise ValueError("No image is selected.")
        client = self.client(url)
        imageId = volumeNode.GetAttribute(IMAGE_ID_ATTRIBUTE) or ""
        if imageId and client.has_image(imageId):
            volumeNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
            return imageId
        source = volumeNode.GetAttribute(SOURCE_FILE_ATTRIBUTE)
        if not source and volumeNode.GetStorageNode() is not None:
            source = volumeNode.GetStorageNode().GetFileName()
        if source and os.path.isfile(source) and source.lower().endswith(UPLOADABLE_EXTENSIONS):
            path = source
        else:
            path = os.path.join(self.tempDir(), self._safeName(volumeNode.GetName()) + ".png")
            with open(path, "wb") as f:
                f.write(self._volumeAsPng(volumeNode))
        newId = client.upload_image(path, imageId or None)
        volumeNode.SetAttribute(IMAGE_ID_ATTRIBUTE, newId)
        return newId

    @staticmethod
    def _safeName(name):
        keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name or "image"))
        return keep.strip("_") or "image"

    def _volumeAsPng(self, volumeNode):
        """8-bit grayscale PNG of a single-slice volume (values rescaled to 0..255 unless already uint8)."""
        array = slicer.util.arrayFromVolume(volumeNode)
        if array.ndim != 3 or array.shape[0] != 1:
            raise ValueError(f"'{volumeNode.GetName()}' is not a single 2D frame (voxel array shape {array.shape}).")
        frame = array[0]
        if frame.dtype != np.uint8:
            low, high = float(frame.min()), float(frame.max())
            frame = np.zeros(frame.shape, np.uint8) if high <= low else np.round((frame - low) * (255.0 / (high - low))).astype(np.uint8)
        return pngfile.encode_gray8(np.ascontiguousarray(frame).tobytes(), frame.shape[1], frame.shape[0])

    def imageGeometry(self, volumeNode):
        """``(ijkToRas, (width, height))`` of a 2D volume: the 4x4 IJK->RAS matrix as nested lists and its size in pixels."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("No image is loaded.")
        if volumeNode.GetParentTransformNode() is not None:
            raise ValueError(
                f"'{volumeNode.GetName()}' is under a transform; harden or remove the transform so pixel boxes map to RAS."
            )
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        ijkToRas = [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]
        width, height, depth = volumeNode.GetImageData().GetDimensions()
        if depth != 1:
            raise ValueError(f"'{volumeNode.GetName()}' has {depth} slices; LoRIS works on single 2D frames.")
        return ijkToRas, (width, height)

    @staticmethod
    def showImage(volumeNode):
        """Show the image in the slice views (no anomaly map until LoRIS runs) and fit it."""
        slicer.util.setSliceViewerLayers(background=volumeNode, foreground=None, fit=True)

    # ------------------------------------------------------------------ box

    def ensureRoiNode(self, roiNode=None):
        """An ROI node for the box (``roiNode`` when given), displayed as an outline."""
        if roiNode is not None:
            return roiNode
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "LoRIS box")
        roiNode.CreateDefaultDisplayNodes()
        roiNode.GetDisplayNode().SetFillOpacity(0.05)
        return roiNode

    @staticmethod
    def roiIsPlaced(roiNode):
        """True when the ROI has a box: placed (a control point exists) and not of zero size."""
        return roiNode.GetNumberOfControlPoints() > 0 and max(roiNode.GetSize()) > 0

    def boxFromRoi(self, roiNode, volumeNode):
        """The ROI as a pixel box ``[x_min, y_min, x_max, y_max]`` of ``volumeNode``, clipped to the image."""
        if roiNode is None:
            raise ValueError("No box: place the box (ROI) on the image first.")
        ijkToRas, size = self.imageGeometry(volumeNode)
        bounds = [0.0] * 6
        roiNode.GetRASBounds(bounds)  # world (RAS) axis-aligned bounds, rotation and parent transforms included
        return geometry.ras_bounds_to_pixel_box(bounds, ijkToRas, size)

    def setRoiFromBox(self, roiNode, volumeNode, box):
        """Place ``roiNode`` on the pixel box ``box`` of ``volumeNode`` (axis-aligned, one slice thick)."""
        ijkToRas, _size = self.imageGeometry(volumeNode)
        center, size = geometry.pixel_box_to_roi(box, ijkToRas)
        with slicer.util.NodeModify(roiNode):
            roiNode.SetAndObserveTransformNodeID(None)
            roiNode.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())  # identity: axis-aligned in RAS
            roiNode.SetROIType(slicer.vtkMRMLMarkupsROINode.ROITypeBox)
            roiNode.SetSize(size)  # size first: with a zero size the ROI has no control point to move
            roiNode.SetCenter(center)
            # SetSize/SetCenter return early on unchanged values; make sure the control point exists
            # (it was removed when a new image started).
            roiNode.UpdateControlPointsFromROI()

    def detectRecess(self, url, imageId, volumeNode, roiNode):
        """``recess_detection`` on the image; places ``roiNode`` on the found box. Returns a :class:`results.Detection`."""
        response = self.client(url).infer("recess_detection", imageId, {})
        detection = results.parse_detection(response.params)
        if detection.found:
            self.setRoiFromBox(roiNode, volumeNode, detection.box)
        return detection

    # ------------------------------------------------------------------ LoRIS

    def runLoris(self, url, imageId, volumeNode, box, segmentationNode, anomalyMapNode=None):
        """Run ``loris`` (segmentation + score) and ``loris_anomaly_map`` (float map) on the image.

        Args:
            box: pixel box, or None to let the server detect the recess first.
            segmentationNode: receives the "anomaly" segment.
            anomalyMapNode: scalar volume to fill with the map (created when None).

        Returns:
            ``(LorisResult, anomalyMapNode)``; ``self.lastResultParams`` keeps the raw params.
        """
        client = self.client(url)
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        params = {"box": list(box)} if box is not None else {}
        response = client.infer("loris", imageId, params)
        result = results.parse_loris_result(response.params)
        if response.label is None:
            raise LoRISClientError(200, "the loris answer has no segmentation file")
        mask = self._maskFromPng(response.label, width, height)
        self.setSegmentationMask(segmentationNode, volumeNode, mask)

        # Same box as the segmentation, so map and segmentation describe the same run.
        mapResponse = client.infer("loris_anomaly_map", imageId, {"box": result.box})
        if mapResponse.label is None:
            raise LoRISClientError(200, "the loris_anomaly_map answer has no map file")
        amap = self._mapFromNrrd(mapResponse.label, width, height)
        if anomalyMapNode is None:
            anomalyMapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "LoRIS anomaly map")
        anomalyMapNode.CopyOrientation(volumeNode)  # the map shares the image's pixel grid
        slicer.util.updateVolumeFromArray(anomalyMapNode, amap[np.newaxis])
        anomalyMapNode.CreateDefaultDisplayNodes()
        self.lastResultParams = response.params
        return result, anomalyMapNode

    @staticmethod
    def _maskFromPng(data, width, height):
        png = pngfile.decode(data)
        if (png.width, png.height) != (width, height):
            raise ValueError(f"segmentation is {png.width}x{png.height} but the image is {width}x{height}")
        values = np.array(png.first_channel(), dtype=np.uint16).reshape(height, width)
        return (values > 0).astype(np.uint8)

    @staticmethod
    def _mapFromNrrd(data, width, height):
        image = nrrdfile.decode(data)
        if (image.width, image.height) != (width, height) or any(s != 1 for s in image.sizes[2:]):
            raise ValueError(f"anomaly map is {image.sizes} but the image is {width}x{height}")
        values = np.frombuffer(image.data, dtype=image.dtype, count=width * height)
        return values.reshape(height, width).astype(np.float32)

    def showAnomalyMap(self, volumeNode, mapNode, opacity, threshold):
        """Anomaly map as a colored foreground over the image: values below ``threshold`` transparent."""
        display = mapNode.GetDisplayNode()
        colorId = next((c for c in MAP_COLOR_NODE_IDS if slicer.mrmlScene.GetNodeByID(c)), None)
        if colorId:
            display.SetAndObserveColorNodeID(colorId)
        self.setMapThreshold(mapNode, threshold)
        slicer.util.setSliceViewerLayers(background=volumeNode, foreground=mapNode, foregroundOpacity=opacity)

    def setMapThreshold(self, mapNode, threshold):
        """Window the colors from ``threshold`` to the map maximum and hide values below ``threshold``."""
        display = mapNode.GetDisplayNode()
        if display is None or mapNode.GetImageData() is None:
            return
        low, high = mapNode.GetImageData().GetScalarRange()
        threshold = min(max(float(threshold), low), high)
        with slicer.util.NodeModify(display):
            display.SetAutoWindowLevel(0)
            display.SetWindowLevelMinMax(threshold, max(high, threshold + 1e-6))
            display.SetAutoThreshold(0)
            display.SetThreshold(threshold, high + 1.0)
            display.SetApplyThreshold(1)

    @staticmethod
    def setOverlayOpacity(opacity):
        """Foreground (anomaly map) opacity in every slice view, 0..1."""
        slicer.util.setSliceViewerLayers(foregroundOpacity=float(opacity))

    # ------------------------------------------------------------------ segmentation

    def getSegmentEditorNode(self):
        """The Segment Editor module's singleton parameter node (so switching to Segment Editor keeps the selection)."""
        tag = "SegmentEditor"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def ensureSegmentationNode(self, segmentationNode, volumeNode):
        """A segmentation node on ``volumeNode``'s geometry with an "anomaly" segment."""
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "LoRIS segmentation")
            segmentationNode.CreateDefaultDisplayNodes()
        if volumeNode is not None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        self._segmentId(segmentationNode)
        return segmentationNode

    @staticmethod
    def _segmentId(segmentationNode):
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment(SEGMENT_NAME, SEGMENT_NAME, SEGMENT_COLOR)
        return segmentId

    def setSegmentationMask(self, segmentationNode, volumeNode, mask):
        """Write a ``(H, W)`` 0/1 mask (image pixel grid) into the "anomaly" segment."""
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = self._segmentId(segmentationNode)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            np.asarray(mask, dtype=np.uint8)[np.newaxis], segmentationNode, segmentId, volumeNode
        )

    def clearSegmentation(self, segmentationNode, volumeNode):
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        self.setSegmentationMask(segmentationNode, volumeNode, np.zeros((height, width), np.uint8))

    def maskFromSegmentation(self, segmentationNode, volumeNode):
        """The "anomaly" segment as a ``(H, W)`` uint8 0/1 mask on the image's pixel grid."""
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        if segmentationNode is None:
            return np.zeros((height, width), np.uint8)
        segmentId = self._segmentId(segmentationNode)
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        if array.shape != (1, height, width):
            raise ValueError(f"segmentation exported as {array.shape}, expected (1, {height}, {width})")
        return (array[0] > 0).astype(np.uint8)

    def submitCorrection(self, url, imageId, volumeNode, segmentationNode, roiNode, labelClass):
        """Save the correction: ``PUT /datastore/label`` (tag "final") with the mask, the class and the box.

        A "normal" image is saved with an all-zero mask (the dataset format
        keeps masks for distended images only); a "distended" one needs a
        non-empty segmentation.
        """
        if labelClass not in LABELS:
            raise ValueError(f"Class must be one of {', '.join(LABELS)}, got '{labelClass}'.")
        box = self.boxFromRoi(roiNode, volumeNode)
        mask = self.maskFromSegmentation(segmentationNode, volumeNode)
        if labelClass == "normal":
            mask = np.zeros_like(mask)
        elif not mask.any():
            raise ValueError("The class is 'distended' but the segmentation is empty: paint the anomaly first.")
        height, width = mask.shape
        png = pngfile.encode_gray8(np.ascontiguousarray(mask).tobytes(), width, height)
        return self.client(url).save_label(imageId, png, {"label": labelClass, "box": box}, tag="final")

    # ------------------------------------------------------------------ training

    def startTraining(self, url, model, params=None):
        """``POST /train/<model>``; refused with the server's message when a training is already running."""
        if model not in TRAINERS:
            raise ValueError(f"Unknown model '{model}'; trainers are {', '.join(TRAINERS)}.")
        return self.client(url).train(model, params or {})

    def trainingStatus(self, url):
        """The latest training as :class:`results.TrainStatus`, or None when none ran (short timeout: polled)."""
        task = self.client(url, timeout=5.0).train_status()
        return None if task is None else results.parse_train_status(task)

    def stopTraining(self, url):
        return self.client(url).stop_train()


#
# LoRISTest
#


class LoRISTest(ScriptedLoadableModuleTest):
    """Self-test. Geometry and image loading run always; the server part runs when
    the environment variable ``LORIS_TEST_SERVER`` holds a server URL with a loaded datastore.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_png_loads_as_scalar_and_box_round_trips()
        self.setUp()
        self.test_segmentation_mask_round_trip()
        url = os.environ.get("LORIS_TEST_SERVER")
        if url:
            self.setUp()
            self.test_workflow_against_server(url)
        else:
            self.delayDisplay("LORIS_TEST_SERVER not set: server workflow test skipped")

    def _writeRgbPng(self, path, width=64, height=48):
        image = vtk.vtkImageData()
        image.SetDimensions(width, height, 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
        pixels = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        pixels[:] = 0
        pixels.reshape(height, width, 3)[5:15, 40:60] = (200, 100, 50)  # asymmetric block
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(path)
        writer.SetInputData(image)
        writer.Write()

    def test_png_loads_as_scalar_and_box_round_trips(self):
        import vtk.util.numpy_support  # noqa: F401  (used by _writeRgbPng)

        self.delayDisplay("RGB PNG -> scalar volume; pixel box <-> ROI")
        logic = LoRISLogic()
        folder = tempfile.mkdtemp()
        for name in ("frame_001.png", "frame_002.png"):
            self._writeRgbPng(os.path.join(folder, name))
        volume = logic.loadScalarVolume(os.path.join(folder, "frame_001.png"))
        self.assertFalse(volume.IsA("vtkMRMLVectorVolumeNode"))
        self.assertEqual(volume.GetImageData().GetDimensions(), (64, 48, 1))  # singleFile: neighbour not stacked
        ijkToRas, _size = logic.imageGeometry(volume)
        self.assertEqual([round(v, 6) for v in geometry.transform_point(ijkToRas, (5, 7, 0))][:2], [-5.0, -7.0])
        roi = logic.ensureRoiNode()
        for box in ([40, 5, 60, 15], [0, 0, 64, 48], [3, 30, 4, 31]):
            logic.setRoiFromBox(roi, volume, box)
            self.assertTrue(logic.roiIsPlaced(roi))
            self.assertEqual(logic.boxFromRoi(roi, volume), box)
        roi.RemoveAllControlPoints()  # what a new image does
        self.assertFalse(logic.roiIsPlaced(roi))
        logic.setRoiFromBox(roi, volume, [3, 30, 4, 31])  # same box again: the control point must come back
        self.assertTrue(logic.roiIsPlaced(roi))

    def test_segmentation_mask_round_trip(self):
        self.delayDisplay("mask -> segment -> mask")
        logic = LoRISLogic()
        mask = np.zeros((48, 64), np.uint8)
        mask[5:15, 40:60] = 1
        volume = slicer.util.addVolumeFromArray(
            np.zeros((1, 48, 64), np.uint8), np.array(geometry.png_ijk_to_ras()), "frame"
        )
        segmentation = logic.ensureSegmentationNode(None, volume)
        logic.setSegmentationMask(segmentation, volume, mask)
        self.assertTrue(np.array_equal(logic.maskFromSegmentation(segmentation, volume), mask))

    def test_workflow_against_server(self, url):
        self.delayDisplay(f"Workflow against {url}")
        logic = LoRISLogic()
        status = logic.connect(url)
        self.assertEqual(status["missing_models"], [])
        loaded = logic.loadNextImage(url, "random")
        self.assertIsNotNone(loaded, "the datastore has no unlabeled image")
        imageId, volume = loaded
        _ijkToRas, (width, height) = logic.imageGeometry(volume)
        roi = logic.ensureRoiNode()
        box = [width // 4, height // 4, width // 2, height // 2]
        logic.setRoiFromBox(roi, volume, box)
        segmentation = logic.ensureSegmentationNode(None, volume)
        result, mapNode = logic.runLoris(url, imageId, volume, logic.boxFromRoi(roi, volume), segmentation)
        self.assertEqual(result.box, box)
        self.assertEqual(slicer.util.arrayFromVolume(mapNode).shape, (1, height, width))
        logic.showAnomalyMap(volume, mapNode, 0.5, result.pixel_threshold or 0.0)
        answer = logic.submitCorrection(url, imageId, volume, segmentation, roi, "normal")
        self.assertEqual(answer.get("image"), imageId)
        task = logic.startTraining(url, "loris", {"max_epochs": 1, "quick": True})
        self.assertIn("status", task)
        self.assertIsNotNone(logic.trainingStatus(url))
        self.delayDisplay("Server workflow passed")
