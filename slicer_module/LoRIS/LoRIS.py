"""LoRIS: knee-ultrasound recess anomaly detection in 3D Slicer, through the LoRIS MONAI Label app.

Box the recess, run LoRIS, see the anomaly map and the segmentation, correct
them, submit, retrain. This file holds only what needs Slicer's GUI (Qt): the
module, the panel (``Resources/UI/LoRIS.ui``, state in a parameter node so it
survives scene save/reload), the logic's Slicer-application glue and the
self-test. The work is in ``LoRISLib``: ``review`` (each action: inputs from the
scene, HTTP on a worker thread, answer applied to the scene on the main
thread), ``scene`` (MRML only; tested on Slicer's core libraries), ``client``,
``geometry``, ``results`` and ``worker`` (standard library only).
"""

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

from LoRISLib import geometry, results
from LoRISLib.client import DEFAULT_URL, STRATEGIES, TRAINERS, LoRISClientError
from LoRISLib.review import ReviewLogic, Server
from LoRISLib.scene import IMAGE_ID_ATTRIBUTE

LABELS = ("normal", "distended")
POLL_MS = 50  # how often the panel hands finished server calls to the scene while one runs
STATUS_POLL_MS = 5000  # training status: every 5 s, off the GUI thread
SETTINGS_URL = "LoRIS/serverUrl"
SETTINGS_TOKEN = "LoRIS/apiToken"
SHORTCUTS = (  # (key sequence, widget method): installed while the module is shown
    ("Ctrl+Shift+R", "onRunLoris"),
    ("Ctrl+Shift+S", "onSubmit"),
    ("Ctrl+Shift+M", "onToggleMap"),
)


#
# LoRIS
#


class LoRIS(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LoRIS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Ultrasound")]
        self.parent.dependencies = ["Markups", "Segmentations", "SegmentEditor", "Colors"]
        self.parent.contributors = ["LoRIS for MONAI Label and 3D Slicer contributors"]
        self.parent.helpText = _(
            "Knee-ultrasound recess anomaly detection (LoRIS) through a MONAI Label server: "
            "get the next image, box the recess, run LoRIS to see the anomaly map, the segmentation, "
            "the score and the decision; correct the segmentation and the class, submit, retrain. "
            "Shortcuts: Ctrl+Shift+R run LoRIS, Ctrl+Shift+S submit (and next image), Ctrl+Shift+M show/hide the map. "
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
    """Everything the panel shows, saved with the scene (the API token is not: it stays in the application settings).

    serverUrl: MONAI Label server base URL (also remembered in the application settings).
    strategy: active learning strategy used by "Next image".
    inputVolume: the image (scalar volume) being reviewed.
    imageId: its datastore id ("" until it is known or uploaded).
    roiNode: the recess box (markups ROI).
    anomalyMapVolume: float anomaly map on the image's pixel grid (foreground layer).
    segmentationNode: the segmentation ("anomaly" segment) being corrected.
    overlayOpacity: foreground opacity of the anomaly map, 0..1.
    showMap: whether the map is shown over the image.
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
    showMap: bool = True
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
    """The panel. Buttons start logic actions; a timer applies their answers; nothing here waits for the server."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pollTimer = None
        self._trainTimer = None
        self._shortcuts = []
        self._observedRoi = None

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

        # Embedded Segment Editor, set up as Slicer's Segment Editor module sets up its own:
        # parameter node first (the singleton shared with that module), then the scene.
        self.ui.segmentEditorWidget.setMaximumNumberOfUndoStates(10)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setSegmentationNodeSelectorVisible(False)
        self.ui.segmentEditorWidget.setSourceVolumeNodeSelectorVisible(False)

        # Remembered connection: URL and token live in the application settings.
        settings = qt.QSettings()
        self.ui.tokenLineEdit.text = str(settings.value(SETTINGS_TOKEN, "") or "")
        self.ui.tokenLineEdit.connect("editingFinished()", self.onTokenEdited)
        self.ui.serverUrlLineEdit.connect("editingFinished()", self.onServerUrlEdited)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_MS)
        self._pollTimer.connect("timeout()", self.onPoll)
        self._trainTimer = qt.QTimer()
        self._trainTimer.setInterval(STATUS_POLL_MS)
        self._trainTimer.connect("timeout()", self.onPollTraining)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.nextImageButton.connect("clicked(bool)", self.onNextImage)
        self.ui.openFileButton.connect("clicked(bool)", self.onOpenFile)
        self.ui.useLoadedImageButton.connect("clicked(bool)", self.onUseLoadedImage)
        self.ui.detectButton.connect("clicked(bool)", self.onDetectRecess)
        self.ui.runButton.connect("clicked(bool)", self.onRunLoris)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.stopTrainButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.showMapCheckBox.connect("toggled(bool)", self.onShowMapToggled)

        self.initializeParameterNode()
        self._setBusy(False)

    def cleanup(self) -> None:
        for timer in (self._pollTimer, self._trainTimer):
            if timer:
                timer.stop()
        self._removeShortcuts()
        self.removeObservers()
        if self.logic:
            self.logic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()
        # as Slicer's Segment Editor module does when it is shown
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.segmentEditorWidget.updateWidgetFromMRML()
        self._installShortcuts()
        self._updateSelectorFilter()

    def exit(self) -> None:
        # as Slicer's Segment Editor module does when it is left: no effect stays active in the views
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.ui.segmentEditorWidget.removeViewObservations()
        self._removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def _installShortcuts(self) -> None:
        self._removeShortcuts()
        for keys, method in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
            shortcut.connect("activated()", getattr(self, method))
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self._observeRoi(None)
        self.ui.segmentEditorWidget.setSegmentationNode(None)
        self.ui.segmentEditorWidget.removeViewObservations()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def onSceneEndImport(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self._updateSelectorFilter()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
            # attributes are set right after the node is added: filter once the current call is over
            qt.QTimer.singleShot(0, self._updateSelectorFilter)

    def _updateSelectorFilter(self) -> None:
        """The input selector lists plain scalar volumes (set in the .ui) minus the module's anomaly maps."""
        self.ui.inputVolumeSelector.sortFilterProxyModel().hiddenNodeIDs = self.logic.moduleOutputVolumeIDs()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if p is not None and p.serverUrl == DEFAULT_URL:
            remembered = str(qt.QSettings().value(SETTINGS_URL, "") or "")
            if remembered:
                p.serverUrl = remembered

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

    # ------------------------------------------------------------------ settings

    def onServerUrlEdited(self) -> None:
        qt.QSettings().setValue(SETTINGS_URL, self.ui.serverUrlLineEdit.text.strip())

    def onTokenEdited(self) -> None:
        qt.QSettings().setValue(SETTINGS_TOKEN, self.ui.tokenLineEdit.text.strip())

    def _server(self) -> Server:
        return Server(self._parameterNode.serverUrl.strip(), self.ui.tokenLineEdit.text.strip())

    # ------------------------------------------------------------------ GUI state

    def _updateGUI(self, caller=None, event=None) -> None:
        """Show what the parameter node holds that no bound widget shows, and enable what can run now."""
        p = self._parameterNode
        if p is None:
            return
        volume = p.inputVolume
        # The datastore id belongs to the volume (node attribute, saved with the scene).
        volumeImageId = (volume.GetAttribute(IMAGE_ID_ATTRIBUTE) or "") if volume is not None else ""
        if p.imageId != volumeImageId:
            p.imageId = volumeImageId  # re-enters _updateGUI once, then the ids agree
            return
        self.ui.roiPlaceWidget.setCurrentNode(p.roiNode)
        self._observeRoi(p.roiNode)
        if p.segmentationNode is not None:
            self.ui.segmentEditorWidget.setSegmentationNode(p.segmentationNode)
        if volume is not None:
            self.ui.segmentEditorWidget.setSourceVolumeNode(volume)
        self.ui.spacingLabel.text = self._spacingText(volume)
        result = self._result()
        self.ui.resultLabel.text = results.format_result(result) if result else _("No result yet.")
        if result is not None:
            low, high = self._displayRange(result)
            self.ui.mapRangeLabel.text = _("Map colours: {low:.3g} (dark red) to {high:.3g} (pale yellow)").format(
                low=low, high=high)
        else:
            self.ui.mapRangeLabel.text = ""
        self._updateButtons()

    ROI_EVENTS = (
        slicer.vtkMRMLMarkupsNode.PointAddedEvent,
        slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
        slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
        slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
    )

    def _observeRoi(self, roiNode) -> None:
        """Submit is enabled once a box is placed: follow the ROI's control point (placed, moved, removed)."""
        if roiNode is self._observedRoi:
            return
        if self._observedRoi is not None:
            for event in self.ROI_EVENTS:
                self.removeObserver(self._observedRoi, event, self._onRoiChanged)
        self._observedRoi = roiNode
        if roiNode is not None:
            for event in self.ROI_EVENTS:
                self.addObserver(roiNode, event, self._onRoiChanged)

    def _onRoiChanged(self, caller=None, event=None) -> None:
        self._updateButtons()

    def _spacingText(self, volume) -> str:
        spacing, calibrated = self.logic.pixelSpacing(volume)
        if spacing is None:
            return ""
        if calibrated:
            return _("{spacing} (the image's calibration)").format(spacing=results.format_spacing(spacing))
        return _("{spacing} as loaded; no calibration known, measurements are in pixels").format(
            spacing=results.format_spacing(spacing))

    def _result(self):
        p = self._parameterNode
        if p is None or not p.resultJson:
            return None
        try:
            return results.parse_loris_result(json.loads(p.resultJson))
        except (ValueError, results.ResultError):
            return None

    @staticmethod
    def _displayRange(result):
        try:
            return results.map_display_range(result)
        except results.ResultError:
            return float("nan"), float("nan")

    def _updateButtons(self) -> None:
        p = self._parameterNode
        busy = self.logic.busy
        volume = p.inputVolume if p is not None else None
        idle = not busy and p is not None
        for button in (self.ui.connectButton, self.ui.nextImageButton, self.ui.openFileButton,
                       self.ui.trainButton, self.ui.stopTrainButton):
            button.enabled = idle
        self.ui.inputVolumeSelector.enabled = idle
        self.ui.useLoadedImageButton.enabled = idle and volume is not None
        self.ui.detectButton.enabled = idle and volume is not None
        self.ui.runButton.enabled = idle and volume is not None
        self.ui.submitButton.enabled = idle and volume is not None and self.logic.roiIsPlaced(p.roiNode)
        self.ui.submitButton.toolTip = (
            _("Save the segmentation, the class and the box (label tag 'final'). Ctrl+Shift+S")
            if self.ui.submitButton.enabled else _("Place the box on the recess first (or run LoRIS or Detect recess).")
        )
        self.ui.cancelButton.enabled = busy
        hasMap = p is not None and p.anomalyMapVolume is not None
        self.ui.showMapCheckBox.enabled = hasMap
        self.ui.overlayOpacitySlider.enabled = hasMap

    def _setBusy(self, busy) -> None:
        self.ui.progressBar.visible = busy
        self.ui.cancelButton.visible = busy
        if busy:
            self._pollTimer.start()
        self._updateButtons()

    def _setStatus(self, text) -> None:
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(text, 5000)

    # ------------------------------------------------------------------ running actions

    def _run(self, start, what, done=None):
        """Start a logic action (``start(done=, failed=, progress=)``); its answer arrives through :meth:`onPoll`.

        Bad input (ValueError) is reported at once, without a request.
        """
        def finished(result):
            self._setStatus(_("{what}: done ({seconds:.1f} s).").format(what=what, seconds=task.elapsed()))
            self._setBusy(False)
            if done is not None:
                done(result)

        def failed(exc):
            self._setBusy(False)
            message = exc.message if isinstance(exc, LoRISClientError) else str(exc)
            self._setStatus(_("{what} failed: {message}").format(what=what, message=message))
            logging.error("LoRIS: %s failed: %s", what, message)
            slicer.util.errorDisplay(_("{what} failed.\n\n{message}").format(what=what, message=message))

        def progress(task):
            self._setStatus(f"{what}: {task.step}...")

        try:
            task = start(done=finished, failed=failed, progress=progress)
        except (ValueError, LoRISClientError) as exc:
            message = exc.message if isinstance(exc, LoRISClientError) else str(exc)
            self._setStatus(message)
            slicer.util.warningDisplay(message)
            return None
        self._setStatus(_("{what}...").format(what=what))
        self._setBusy(True)
        return task

    def onPoll(self) -> None:
        """Timer slot (main thread): apply finished server calls; show the elapsed time; stop when idle."""
        self.logic.poll()
        task = self.logic.worker.current
        if task is None:
            if self.ui.progressBar.visible:
                self._setBusy(False)
            if not self.logic.statusWorker.busy:
                self._pollTimer.stop()
            return
        step = task.step or task.name
        self.ui.statusLabel.text = _("{step}... {seconds:.0f} s").format(step=step, seconds=task.elapsed())

    def onCancel(self) -> None:
        if self.logic.cancel():
            self._setStatus(_("Cancelled; nothing of that call was applied."))
        self._setBusy(False)

    def _previousFrame(self):
        """The frame whose correction the segmentation holds (the selector may already show another volume)."""
        p = self._parameterNode
        if p is None:
            return None
        return self.logic.frameOf(p.segmentationNode) or p.inputVolume

    def _confirmDropping(self) -> bool:
        """Ask before a new frame replaces one whose LoRIS result or correction was not submitted."""
        volume = self._previousFrame()
        if not self.logic.hasUnsubmittedWork(volume):
            return True
        return slicer.util.confirmYesNoDisplay(
            _("The result or correction of '{name}' has not been submitted. Drop it?").format(name=volume.GetName()),
            windowTitle=_("Unsubmitted correction"),
        )

    # ------------------------------------------------------------------ actions

    def onConnect(self) -> None:
        def done(status):
            self.ui.serverInfoLabel.text = status["summary"]
            self.onServerUrlEdited()
            if status["missing_models"]:
                slicer.util.warningDisplay(
                    _("The server does not serve: {models}.").format(models=", ".join(status["missing_models"]))
                )

        server = self._server()
        self._run(lambda **kw: self.logic.connect(server, **kw), _("Connecting to {url}").format(url=server.url), done)

    def onNextImage(self) -> None:
        if self.logic.busy or not self._confirmDropping():
            return
        p = self._parameterNode

        def done(loaded):
            if loaded is None:
                slicer.util.infoDisplay(_("No unlabeled image is left in the datastore."))
                return
            self._useFrame(*loaded)

        self._run(lambda **kw: self.logic.nextImage(self._server(), p.strategy, self._previousFrame(), p.roiNode,
                                                    p.segmentationNode, p.anomalyMapVolume, **kw),
                  _("Getting the next image ({strategy})").format(strategy=p.strategy), done)

    def _useFrame(self, frame, roi, segmentation) -> None:
        p = self._parameterNode
        with slicer.util.NodeModify(p):
            p.inputVolume = frame
            p.imageId = frame.GetAttribute(IMAGE_ID_ATTRIBUTE) or ""
            p.roiNode = roi
            p.segmentationNode = segmentation
            p.anomalyMapVolume = None
            p.resultJson = ""
            p.labelClass = "normal"
        self._updateSelectorFilter()

    def onOpenFile(self) -> None:
        if self.logic.busy or not self._confirmDropping():
            return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Open ultrasound image"), "", _("Images (*.png *.jpg *.jpeg *.dcm *.nrrd)")
        )
        if not path:
            return
        # opened here: removed when the next frame starts
        if self._reviewFrame(lambda: self.logic.loadFrame(path, role="frame")):
            self._setStatus(_("Loaded {name}.").format(name=os.path.basename(path)))

    def onUseLoadedImage(self) -> None:
        """Review the selected volume: shown alone, with an empty box and segmentation (uploaded when first needed)."""
        p = self._parameterNode
        if self.logic.busy or p.inputVolume is None or not self._confirmDropping():
            return
        self._reviewFrame(lambda: self.logic.ensureScalarVolume(p.inputVolume))

    def _reviewFrame(self, makeFrame) -> bool:
        """Make ``makeFrame()``'s volume the frame under review (no server call); False, with a message, on bad input."""
        p = self._parameterNode
        try:
            frame = makeFrame()
            roi, segmentation = self.logic.startFrame(frame, self._previousFrame(), p.roiNode, p.segmentationNode,
                                                      p.anomalyMapVolume)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc))
            return False
        self._useFrame(frame, roi, segmentation)
        return True

    def onDetectRecess(self) -> None:
        p = self._parameterNode
        if self.logic.busy or p.inputVolume is None:
            return

        def done(value):
            detection, roi = value
            p.roiNode = roi
            if not detection.found:
                slicer.util.warningDisplay(_("No recess was found; draw the box by hand."))

        self._run(lambda **kw: self.logic.detectRecess(self._server(), p.inputVolume, p.roiNode, **kw),
                  _("Detecting the recess"), done)

    def onRunLoris(self) -> None:
        p = self._parameterNode
        if self.logic.busy or p is None or p.inputVolume is None:
            return

        def done(outcome):
            with slicer.util.NodeModify(p):
                p.anomalyMapVolume = outcome.mapNode
                p.segmentationNode = outcome.segmentationNode
                p.roiNode = outcome.roiNode
                p.imageId = outcome.imageId
                p.resultJson = json.dumps(outcome.params)
                p.labelClass = outcome.result.label
                p.showMap = True
            self._updateSelectorFilter()

        self._run(lambda **kw: self.logic.runLoris(self._server(), p.inputVolume, p.roiNode, p.segmentationNode,
                                                   p.anomalyMapVolume, p.overlayOpacity, **kw),
                  _("Running LoRIS"), done)

    def onOpacityChanged(self, value) -> None:
        self.logic.setOverlayOpacity(value)

    def onShowMapToggled(self, shown) -> None:
        p = self._parameterNode
        if p is not None and p.anomalyMapVolume is not None:
            self.logic.setMapVisible(p.anomalyMapVolume, shown)

    def onToggleMap(self) -> None:
        p = self._parameterNode
        if p is not None and p.anomalyMapVolume is not None:
            p.showMap = not p.showMap

    def onSubmit(self) -> None:
        p = self._parameterNode
        if self.logic.busy or p is None or p.inputVolume is None:
            return
        if not self.logic.roiIsPlaced(p.roiNode):
            slicer.util.warningDisplay(_("Place the box on the recess first."))
            return
        if p.labelClass == "normal" and p.segmentationNode is not None:
            painted = self.logic.paintedPixels(p.segmentationNode, p.inputVolume)
            if painted and not slicer.util.confirmYesNoDisplay(
                _("The class is 'normal', so the {n} segmented pixels will not be saved (a normal image has an "
                  "empty mask). Submit as normal?").format(n=painted),
                windowTitle=_("Submit as normal"),
            ):
                return

        def done(imageId):
            if p.submitAndNext:
                self.onNextImage()

        self._run(lambda **kw: self.logic.submitCorrection(self._server(), p.inputVolume, p.segmentationNode,
                                                           p.roiNode, p.labelClass, **kw),
                  _("Submitting the correction"), done)

    def onTrain(self) -> None:
        p = self._parameterNode

        def done(task):
            self.ui.trainStatusLabel.text = _("{model}: submitted").format(model=p.trainModel)
            self._trainTimer.start()

        self._run(lambda **kw: self.logic.startTraining(
            self._server(), p.trainModel, {"max_epochs": p.trainMaxEpochs, "quick": p.trainQuick}, **kw),
            _("Starting training of {model}").format(model=p.trainModel), done)

    def onStopTraining(self) -> None:
        self._run(lambda **kw: self.logic.stopTraining(self._server(), **kw), _("Stopping training"),
                  lambda task: self.onPollTraining())

    def onPollTraining(self) -> None:
        """Timer slot (every 5 s): ask for the training status on the status worker; the answer comes via poll."""
        if self._parameterNode is None:  # scene closed while polling
            self._trainTimer.stop()
            return

        def done(status):
            if status is None:
                self.ui.trainStatusLabel.text = _("No training has run yet.")
                self._trainTimer.stop()
                return
            text = status.summary()
            if status.last_line:
                text += "\n" + status.last_line[-200:]
            self.ui.trainStatusLabel.text = text
            progress = status.progress()
            if progress is not None:
                self.ui.trainProgressBar.maximum = progress[1]
                self.ui.trainProgressBar.value = progress[0]
            if not status.running:
                self._trainTimer.stop()

        def failed(exc):
            message = exc.message if isinstance(exc, LoRISClientError) else str(exc)
            self.ui.trainStatusLabel.text = _("Status unavailable: {message}").format(message=message)
            self._trainTimer.stop()

        if self.logic.pollTrainingStatus(self._server(), done=done, failed=failed):
            self._pollTimer.start()


#
# LoRISLogic
#


class LoRISLogic(ScriptedLoadableModuleLogic, ReviewLogic):
    """All the work, no widgets: usable from the Python console and the self-test (see ``LoRISLib.review``)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # its super().__init__() also reaches ReviewLogic.__init__
        ReviewLogic.__init__(self)  # explicit, in case a Slicer version does not chain: only sets up idle workers

    def getParameterNode(self):
        return LoRISParameterNode(super().getParameterNode())

    @staticmethod
    def segmentEditorNode():
        """The Segment Editor module's singleton parameter node (switching to Segment Editor keeps the selection)."""
        tag = "SegmentEditor"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node


#
# LoRISTest
#


class LoRISTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer: what Slicer's core libraries alone cannot show (its PNG reader, the panel's logic
    end to end). The server part runs when ``LORIS_TEST_SERVER`` holds the URL of a throwaway server.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_png_frames_load_as_scalar_volumes_with_png_geometry()
        self.setUp()
        self.test_segmentation_mask_round_trip()
        url = os.environ.get("LORIS_TEST_SERVER")
        if url:
            self.setUp()
            self.test_workflow_against_server(url)
        else:
            self.delayDisplay("LORIS_TEST_SERVER not set: server workflow test not run")

    def _writePng(self, path, rgb):
        height, width = 48, 64
        image = vtk.vtkImageData()
        image.SetDimensions(width, height, 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3 if rgb else 1)
        pixels = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        pixels[:] = 0
        # asymmetric block in the file's top right (VTK writes y = height - 1 as the top row)
        block = pixels.reshape(height, width, -1)[height - 15:height - 5, 40:60]
        block[:] = (200, 100, 50) if rgb else 150
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(path)
        writer.SetInputData(image)
        writer.Write()

    def test_png_frames_load_as_scalar_volumes_with_png_geometry(self):
        import vtk.util.numpy_support  # noqa: F401

        self.delayDisplay("PNG (gray and RGB) -> scalar volume; numbered neighbour not stacked; pixel box <-> ROI")
        logic = LoRISLogic()
        folder = tempfile.mkdtemp()
        for name in ("frame_001.png", "frame_002.png"):
            self._writePng(os.path.join(folder, name), rgb=True)
        self._writePng(os.path.join(folder, "gray.png"), rgb=False)
        for name in ("frame_001.png", "gray.png"):
            volume = logic.loadFrame(os.path.join(folder, name))
            self.assertEqual(volume.GetClassName(), "vtkMRMLScalarVolumeNode")
            self.assertEqual(volume.GetImageData().GetDimensions(), (64, 48, 1))
            ijkToRas, _size = logic.imageGeometry(volume)
            self.assertEqual(np.round(np.array(ijkToRas), 6).tolist(), geometry.png_ijk_to_ras())
            array = slicer.util.arrayFromVolume(volume)[0]
            self.assertTrue(array[5:15, 40:60].all() and not array[:5].any() and not array[33:].any())
        roi = logic.ensureRoiNode()
        for box in ([40, 5, 60, 15], [0, 0, 64, 48], [3, 30, 4, 31]):
            logic.setRoiFromBox(roi, volume, box)
            self.assertEqual(logic.boxFromRoi(roi, volume), box)
        logic.shutdown()

    def test_segmentation_mask_round_trip(self):
        self.delayDisplay("mask -> segment -> mask")
        logic = LoRISLogic()
        mask = np.zeros((48, 64), np.uint8)
        mask[5:15, 40:60] = 1
        volume = slicer.util.addVolumeFromArray(np.zeros((1, 48, 64), np.uint8), np.array(geometry.png_ijk_to_ras()))
        segmentation = logic.ensureSegmentationNode(None, volume)
        logic.setSegmentationMask(segmentation, volume, mask)
        self.assertTrue(np.array_equal(logic.maskFromSegmentation(segmentation, volume), mask))
        logic.shutdown()

    def test_workflow_against_server(self, url):
        self.delayDisplay(f"Workflow against {url}")
        logic = LoRISLogic()
        server = Server(url)
        outcome = {}
        fail = self.fail

        logic.connect(server, done=lambda status: outcome.update(status=status), failed=fail)
        logic.wait(120)
        self.assertEqual(outcome["status"]["missing_models"], [])
        logic.nextImage(server, "random", done=lambda loaded: outcome.update(loaded=loaded), failed=fail)
        logic.wait(300)
        self.assertIsNotNone(outcome["loaded"], "the datastore has no unlabeled image")
        frame, roi, segmentation = outcome["loaded"]
        _ijkToRas, (width, height) = logic.imageGeometry(frame)
        box = [width // 4, height // 4, width // 2, height // 2]
        logic.setRoiFromBox(roi, frame, box)
        logic.runLoris(server, frame, roi, segmentation, done=lambda run: outcome.update(run=run), failed=fail)
        logic.wait(300)
        self.assertEqual(outcome["run"].result.box, box)
        self.assertEqual(slicer.util.arrayFromVolume(outcome["run"].mapNode).shape, (1, height, width))
        logic.submitCorrection(server, frame, segmentation, roi, "normal", done=lambda i: outcome.update(id=i),
                               failed=fail)
        logic.wait(120)
        self.assertEqual(outcome["id"], frame.GetAttribute(IMAGE_ID_ATTRIBUTE))
        logic.shutdown()
        self.delayDisplay("Server workflow passed")
