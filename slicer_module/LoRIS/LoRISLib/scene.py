"""The module's work on Slicer's scene: frames, box, segmentation, anomaly map, views (no Qt, no network).

Everything here uses MRML, Slicer's module logics, VTK and numpy only, through
``slicer.mrmlScene`` and ``slicer.modules.<module>.logic()`` as Slicer sets them
up, so the same code runs inside 3D Slicer and on Slicer's core libraries
alone (the ``slicer-core`` wheel), where ``tests/slicer_module/scene`` runs it.
It runs on the main thread only (MRML and VTK objects are not thread-safe);
:mod:`LoRISLib.review` calls it from the worker's ``apply`` steps.

Readers and writers are Slicer's and VTK's own:

- a frame loads with the Volumes module's logic, ``AddArchetypeVolume`` with
  the single-file option -- exactly what ``slicer.util.loadVolume(path,
  {"singleFile": True, "show": False})`` does through Slicer's volume reader
  (ITK's image IO: PNG/JPEG/DICOM/NRRD/...);
- the anomaly map (NRRD) the same way, then put on the frame's grid;
- the server's 0/1 PNG segmentation with ``vtkPNGReader``, the correction and
  an upload with ``vtkPNGWriter`` (VTK has no ITK PNG dependency, and its file
  API is the same in Slicer 5.8's VTK 9.2 and in VTK 9.6).

Rows: a numpy ``(H, W)`` mask here is indexed ``[y, x]`` with row 0 the top
row of the image file, which is voxel ``j = 0`` of a frame loaded by Slicer.
VTK's PNG reader and writer put the file's top row at ``y = H - 1``; the two
codec functions flip, and the tests pin it with asymmetric masks.

Node roles: every node the module creates carries the attribute
``LoRIS.role`` (see :data:`ROLES`), so the input selector can leave them out
and a new frame can remove the previous frame's nodes.

Millimetres: Slicer's DICOM reader (ITK/GDCM) gives an ultrasound frame a spacing
of 1 -- it does not read the Sequence of Ultrasound Regions. The server does; its
``pixel_spacing_mm`` (in a result, and in the next-image answer) becomes the frame's
spacing (:meth:`SceneLogic.applyPixelSpacing`), and with it the map's, the
segmentation's and the box's.

Cine loops: a multi-frame file loads as a volume of several slices. The module keeps
it hidden (role "cine") and reviews one of its frames as a single-slice volume on
the same grid (:meth:`SceneLogic.loadFrame`, :meth:`SceneLogic.showCineFrame`);
the frame's ``LoRIS.frame`` attribute says which (0 = the first).
"""

import os
import shutil
import tempfile

import numpy as np
import vtk
import vtk.util.numpy_support

import slicer
import slicer.util

from . import geometry

__all__ = [
    "ROLE_ATTRIBUTE",
    "ROLES",
    "IMAGE_ID_ATTRIBUTE",
    "SOURCE_FILE_ATTRIBUTE",
    "REVIEW_ATTRIBUTE",
    "PIXEL_SPACING_ATTRIBUTE",
    "FRAME_ATTRIBUTE",
    "FRAME_COUNT_ATTRIBUTE",
    "CINE_REFERENCE",
    "SEGMENT_NAME",
    "SceneLogic",
]

ROLE_ATTRIBUTE = "LoRIS.role"
ROLES = ("frame", "anomalyMap", "segmentation", "box", "mapColors", "cine")
IMAGE_ID_ATTRIBUTE = "LoRIS.imageId"
SOURCE_FILE_ATTRIBUTE = "LoRIS.sourceFile"
# "" (nothing to submit), "pending" (a result or an edit not submitted yet), "submitted"
REVIEW_ATTRIBUTE = "LoRIS.review"
# "x y" millimetres per pixel the server read from the image's DICOM calibration ("" when it knows none)
PIXEL_SPACING_ATTRIBUTE = "LoRIS.pixelSpacing"
FRAME_ATTRIBUTE = "LoRIS.frame"  # the frame of a cine loop a frame volume shows (0 = the first)
FRAME_COUNT_ATTRIBUTE = "LoRIS.frameCount"
CINE_REFERENCE = "LoRIS.cine"  # node reference from a frame volume to its (hidden) cine loop volume
SEGMENT_NAME = "anomaly"
SEGMENT_COLOR = (0.0, 0.85, 1.0)  # cyan: stands out on the map's red-to-yellow colours
UPLOADABLE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
# vtkSlicerVolumesLogic loading options, bit-coded (vtkSlicerVolumesLogic.h); the volume reader
# sets bit 2 for the property "singleFile": numbered neighbours (frame_001.png, frame_002.png)
# are not stacked into a 3D volume.
SINGLE_FILE = 0x4
MAP_COLOR_NAME = "LoRIS anomaly map"
# The map's colour table: dark red at the low end (visible on a dark ultrasound frame, unlike
# black) through orange and yellow to pale yellow at the high end. (position 0..1, r, g, b)
MAP_COLOR_STOPS = (
    (0.0, (0.75, 0.05, 0.05)),
    (0.35, (1.0, 0.40, 0.0)),
    (0.70, (1.0, 0.85, 0.10)),
    (1.0, (1.0, 1.0, 0.80)),
)
MAP_COLORS = 256


def _nodeAlive(node):
    return node is not None and node.GetScene() is not None


class SceneLogic:
    """Scene operations of the LoRIS module (main thread only); see the module docstring."""

    def __init__(self):
        self._temp = None

    # ------------------------------------------------------------------ helpers

    def tempDir(self):
        """A fresh folder inside this logic's temporary folder (removed with :meth:`cleanupTemp` or at exit)."""
        if self._temp is None:
            self._temp = tempfile.TemporaryDirectory(prefix="LoRIS-")
        return tempfile.mkdtemp(dir=self._temp.name)

    def cleanupTemp(self):
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    @staticmethod
    def volumesLogic():
        return slicer.modules.volumes.logic()

    @staticmethod
    def applicationLogic():
        """Slicer's application logic (selection node, slice logics), as every module logic knows it."""
        return slicer.modules.volumes.logic().GetApplicationLogic()

    @staticmethod
    def role(node):
        return (node.GetAttribute(ROLE_ATTRIBUTE) or "") if node is not None else ""

    @staticmethod
    def setRole(node, role):
        if role not in ROLES:
            raise ValueError(f"unknown node role {role!r}; roles are {', '.join(ROLES)}")
        node.SetAttribute(ROLE_ATTRIBUTE, role)

    @staticmethod
    def removeNodes(*nodes):
        """Remove nodes from the scene with their display and storage nodes."""
        scene = slicer.mrmlScene
        for node in nodes:
            if not _nodeAlive(node):
                continue
            owned = []
            if node.IsA("vtkMRMLDisplayableNode"):
                owned += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
            if node.IsA("vtkMRMLStorableNode"):
                owned += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
            scene.RemoveNode(node)
            for other in owned:
                if _nodeAlive(other):
                    scene.RemoveNode(other)

    # ------------------------------------------------------------------ frames

    def loadFrame(self, path, name=None, role=None, frame=0):
        """Load one image file (PNG/JPEG/DICOM/NRRD...) as a single-slice grayscale scalar volume.

        A cine loop (a file of several frames) is kept as a hidden volume (role "cine") and its
        frame ``frame`` (0 = the first) is returned as a single-slice volume on the same grid.

        Args:
            path: the file.
            name: the node name (default: the file name without extension).
            role: "frame" for a file the module downloaded (removed when the next frame starts);
                None for the user's own file.
            frame: the frame of a cine loop to show.

        Raises:
            ValueError: Slicer could not read the file.
        """
        name = name or os.path.splitext(os.path.basename(path))[0]
        node = self.volumesLogic().AddArchetypeVolume(path, name, SINGLE_FILE)
        if node is None:
            raise ValueError(f"Slicer could not read '{path}' as an image.")
        node = self.ensureScalarVolume(node)
        node.SetAttribute(SOURCE_FILE_ATTRIBUTE, path)
        if role is not None:
            self.setRole(node, role)
        depth = node.GetImageData().GetDimensions()[2]
        if depth > 1:
            node = self.frameOfCine(node, frame)
        return node

    def frameOfCine(self, cineNode, frame=0):
        """A single-slice volume showing frame ``frame`` of ``cineNode`` (which is hidden and given role "cine")."""
        count = cineNode.GetImageData().GetDimensions()[2]
        if not 0 <= int(frame) < count:
            raise ValueError(f"frame {frame} does not exist; '{cineNode.GetName()}' has frames 0 .. {count - 1}")
        frameNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", cineNode.GetName())
        frameNode.CopyOrientation(cineNode)
        for attribute in (IMAGE_ID_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE, ROLE_ATTRIBUTE, PIXEL_SPACING_ATTRIBUTE):
            if cineNode.GetAttribute(attribute):
                frameNode.SetAttribute(attribute, cineNode.GetAttribute(attribute))
        frameNode.SetAttribute(FRAME_COUNT_ATTRIBUTE, str(count))
        frameNode.SetNodeReferenceID(CINE_REFERENCE, cineNode.GetID())
        self.setRole(cineNode, "cine")
        cineNode.SetHideFromEditors(True)
        self.showCineFrame(frameNode, frame)
        frameNode.CreateDefaultDisplayNodes()
        return frameNode

    @staticmethod
    def cineOf(frameNode):
        """The cine loop volume a frame volume shows a frame of, or None."""
        return frameNode.GetNodeReference(CINE_REFERENCE) if frameNode is not None else None

    @staticmethod
    def frameIndex(frameNode):
        """``(frame, frameCount)`` of a frame volume: ``(0, 1)`` for a single frame."""
        if frameNode is None:
            return 0, 1
        try:
            count = int(frameNode.GetAttribute(FRAME_COUNT_ATTRIBUTE) or 1)
            frame = int(frameNode.GetAttribute(FRAME_ATTRIBUTE) or 0)
        except ValueError:
            return 0, 1
        return frame, count

    def showCineFrame(self, frameNode, frame):
        """Put frame ``frame`` of the frame volume's cine loop into it (same grid; the module's attribute follows)."""
        cine = self.cineOf(frameNode)
        if cine is None:
            if int(frame) != 0:
                raise ValueError(f"'{frameNode.GetName()}' is a single frame; there is no frame {frame}")
            return
        pixels = slicer.util.arrayFromVolume(cine)
        if not 0 <= int(frame) < pixels.shape[0]:
            raise ValueError(f"frame {frame} does not exist; the loop has frames 0 .. {pixels.shape[0] - 1}")
        slicer.util.updateVolumeFromArray(frameNode, np.ascontiguousarray(pixels[int(frame):int(frame) + 1]))
        frameNode.SetAttribute(FRAME_ATTRIBUTE, str(int(frame)))
        frameNode.StorableModified()

    def applyPixelSpacing(self, volumeNode, spacing):
        """Give a frame (and its cine loop) the server's pixel spacing ``[x, y]`` in mm, keeping origin and
        directions; ``None`` (the server knows none) leaves Slicer's spacing and records that it is not calibrated.

        Returns:
            True when the spacing changed.
        """
        if volumeNode is None:
            return False
        if spacing is None:
            volumeNode.SetAttribute(PIXEL_SPACING_ATTRIBUTE, "")
            return False
        sx, sy = (float(v) for v in spacing)
        volumeNode.SetAttribute(PIXEL_SPACING_ATTRIBUTE, f"{sx:.17g} {sy:.17g}")
        changed = False
        for node in (volumeNode, self.cineOf(volumeNode)):
            if node is None:
                continue
            old = node.GetSpacing()
            if abs(old[0] - sx) > 1e-9 * sx or abs(old[1] - sy) > 1e-9 * sy:
                node.SetSpacing(sx, sy, old[2])
                changed = True
        return changed

    @staticmethod
    def pixelSpacing(volumeNode):
        """``([x, y] mm, calibrated)``: the frame's spacing in Slicer, and whether it is the server's calibration."""
        if volumeNode is None:
            return None, False
        spacing = list(volumeNode.GetSpacing()[:2])
        return spacing, bool(volumeNode.GetAttribute(PIXEL_SPACING_ATTRIBUTE))

    def ensureScalarVolume(self, volumeNode):
        """``volumeNode`` itself when it is a scalar volume; a color frame becomes a new grayscale one.

        Slicer loads a color PNG/JPEG as an RGB(A) vector volume, which the Segment
        Editor cannot use; it is replaced (in the scene) by its luminance
        ``0.299 R + 0.587 G + 0.114 B`` on the same grid, keeping the module's attributes.
        """
        if volumeNode is None:
            raise ValueError("No image is selected.")
        if not volumeNode.IsA("vtkMRMLVectorVolumeNode"):
            if volumeNode.IsA("vtkMRMLLabelMapVolumeNode") or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
                raise ValueError(f"'{volumeNode.GetName()}' is not a grayscale image volume.")
            return volumeNode
        rgb = slicer.util.arrayFromVolume(volumeNode)  # (K, J, I, C)
        if rgb.shape[-1] >= 3:
            gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            if rgb.dtype.kind in "ui":
                info = np.iinfo(rgb.dtype)
                gray = np.clip(np.round(gray), info.min, info.max)
            gray = gray.astype(rgb.dtype)
        else:
            gray = rgb[..., 0].copy()
        scalar = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volumeNode.GetName())
        scalar.CopyOrientation(volumeNode)
        slicer.util.updateVolumeFromArray(scalar, gray)
        scalar.CreateDefaultDisplayNodes()
        for attribute in (IMAGE_ID_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE, ROLE_ATTRIBUTE):
            if volumeNode.GetAttribute(attribute):
                scalar.SetAttribute(attribute, volumeNode.GetAttribute(attribute))
        storage = volumeNode.GetStorageNode()
        if storage is not None and storage.GetFileName() and not scalar.GetAttribute(SOURCE_FILE_ATTRIBUTE):
            scalar.SetAttribute(SOURCE_FILE_ATTRIBUTE, storage.GetFileName())
        self.removeNodes(volumeNode)
        return scalar

    @staticmethod
    def isReviewableVolume(node):
        """True for a volume the input selector offers: a plain scalar volume that the module did not make.

        Labelmaps, vector (color) volumes and other subclasses are not offered, nor the
        module's own anomaly maps and the cine loops whose frames it shows.
        """
        return (
            node is not None
            and node.GetClassName() == "vtkMRMLScalarVolumeNode"
            and SceneLogic.role(node) not in ("anomalyMap", "cine")
        )

    def moduleOutputVolumeIDs(self):
        """IDs of the scalar volumes that the input selector must hide (the module's anomaly maps)."""
        scene = slicer.mrmlScene
        nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        return [n.GetID() for n in nodes if n.GetClassName() == "vtkMRMLScalarVolumeNode" and not self.isReviewableVolume(n)]

    @staticmethod
    def imageGeometry(volumeNode):
        """``(ijkToRas, (width, height))`` of a 2D volume: the IJK->RAS matrix (4x4 nested lists) and its size in pixels."""
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

    def uploadSource(self, volumeNode):
        """What an upload of ``volumeNode`` sends: ``(imageId, path, pngBytes)`` (main thread).

        ``imageId`` is the datastore id the volume carries ("" when none); ``path`` its
        original PNG/JPEG/DICOM file when it has one; otherwise ``pngBytes`` holds its
        pixels as an 8-bit PNG (rescaled to 0..255 unless already 8-bit).
        """
        if volumeNode is None:
            raise ValueError("No image is selected.")
        imageId = volumeNode.GetAttribute(IMAGE_ID_ATTRIBUTE) or ""
        source = volumeNode.GetAttribute(SOURCE_FILE_ATTRIBUTE)
        if not source and volumeNode.GetStorageNode() is not None:
            source = volumeNode.GetStorageNode().GetFileName()
        if source and os.path.isfile(source) and source.lower().endswith(UPLOADABLE_EXTENSIONS):
            return imageId, source, None
        _ijkToRas, (_width, _height) = self.imageGeometry(volumeNode)
        frame = slicer.util.arrayFromVolume(volumeNode)[0]
        if frame.dtype != np.uint8:
            low, high = float(frame.min()), float(frame.max())
            if high <= low:
                frame = np.zeros(frame.shape, np.uint8)
            else:
                frame = np.round((frame.astype(np.float64) - low) * (255.0 / (high - low))).astype(np.uint8)
        return imageId, None, self.pngFromArray(frame)

    # ------------------------------------------------------------------ PNG codecs (VTK)

    def maskFromPng(self, data, width, height):
        """A 0/1 PNG's bytes -> ``(height, width)`` uint8 0/1 array, row 0 = the file's top row.

        Raises:
            ValueError: not a PNG, or not ``width`` x ``height``.
        """
        if not bytes(data[:8]) == b"\x89PNG\r\n\x1a\n":
            raise ValueError("the segmentation is not a PNG")
        folder = self.tempDir()
        path = os.path.join(folder, "mask.png")
        try:
            with open(path, "wb") as f:
                f.write(data)
            reader = vtk.vtkPNGReader()
            reader.SetFileName(path)
            reader.Update()
            image = reader.GetOutput()
            w, h, _d = image.GetDimensions()
            if (w, h) != (width, height):
                raise ValueError(f"segmentation is {w}x{h} but the image is {width}x{height}")
            values = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
            values = values.reshape(h, w, -1)[..., 0]
            # VTK puts the file's top row at y = h - 1
            return (values[::-1] > 0).astype(np.uint8)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def pngFromArray(array):
        """``(height, width)`` uint8 array -> 8-bit grayscale PNG bytes, row 0 written as the top row."""
        array = np.ascontiguousarray(np.asarray(array, dtype=np.uint8)[::-1])  # VTK writes y = h - 1 first
        height, width = array.shape
        image = vtk.vtkImageData()
        image.SetDimensions(width, height, 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
        writer = vtk.vtkPNGWriter()
        writer.WriteToMemoryOn()
        writer.SetInputData(image)
        writer.Write()
        return bytes(vtk.util.numpy_support.vtk_to_numpy(writer.GetResult()).tobytes())

    # ------------------------------------------------------------------ box

    @staticmethod
    def ensureRoiNode(roiNode=None):
        """An ROI node for the box (``roiNode`` when given), drawn as an outline."""
        if roiNode is not None:
            return roiNode
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "LoRIS box")
        roiNode.CreateDefaultDisplayNodes()
        roiNode.GetDisplayNode().SetFillOpacity(0.05)
        SceneLogic.setRole(roiNode, "box")
        return roiNode

    @staticmethod
    def roiIsPlaced(roiNode):
        """True when the ROI has a box: placed (a control point exists) and not of zero size."""
        return roiNode is not None and roiNode.GetNumberOfControlPoints() > 0 and max(roiNode.GetSize()) > 0

    def boxFromRoi(self, roiNode, volumeNode):
        """The ROI as a pixel box ``[x_min, y_min, x_max, y_max]`` of ``volumeNode``, clipped to the image.

        Raises:
            ValueError: no box is placed, or it does not overlap the image.
        """
        if not self.roiIsPlaced(roiNode):
            raise ValueError("No box: place the box (ROI) on the recess first.")
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
            # (it was removed when a new frame started).
            roiNode.UpdateControlPointsFromROI()

    # ------------------------------------------------------------------ segmentation

    @staticmethod
    def segmentId(segmentationNode):
        """The id of the "anomaly" segment, created when missing."""
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment(SEGMENT_NAME, SEGMENT_NAME, SEGMENT_COLOR)
        return segmentId

    def ensureSegmentationNode(self, segmentationNode, volumeNode):
        """A segmentation node on ``volumeNode``'s geometry with an "anomaly" segment, outlined and lightly filled."""
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "LoRIS segmentation")
            segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
            display.SetOpacity2DFill(0.25)
            display.SetOpacity2DOutline(1.0)
            self.setRole(segmentationNode, "segmentation")
        if volumeNode is not None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        self.segmentId(segmentationNode)
        return segmentationNode

    def setSegmentationMask(self, segmentationNode, volumeNode, mask):
        """Write a ``(H, W)`` 0/1 mask (the frame's pixel grid, row 0 = ``j = 0``) into the "anomaly" segment."""
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        mask = np.asarray(mask, dtype=np.uint8)
        if mask.shape != (height, width):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}")
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = self.segmentId(segmentationNode)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (mask > 0).astype(np.uint8)[np.newaxis], segmentationNode, segmentId, volumeNode
        )

    def clearSegmentation(self, segmentationNode, volumeNode):
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        self.setSegmentationMask(segmentationNode, volumeNode, np.zeros((height, width), np.uint8))

    def maskFromSegmentation(self, segmentationNode, volumeNode):
        """The "anomaly" segment as a ``(H, W)`` uint8 0/1 mask on the frame's pixel grid."""
        _ijkToRas, (width, height) = self.imageGeometry(volumeNode)
        if segmentationNode is None:
            return np.zeros((height, width), np.uint8)
        segmentId = self.segmentId(segmentationNode)
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        if array.shape != (1, height, width):
            raise ValueError(f"segmentation exported as {array.shape}, expected (1, {height}, {width})")
        return (array[0] > 0).astype(np.uint8)

    def correctionFor(self, segmentationNode, volumeNode, roiNode, labelClass):
        """The correction to submit: ``(pngBytes, {"label": labelClass, "box": box})``.

        A "normal" image is saved with an all-zero mask (the dataset keeps masks of
        distended images only); a "distended" one needs a non-empty segmentation.

        Raises:
            ValueError: no box placed, an unknown class, or "distended" with an empty segmentation.
        """
        if labelClass not in ("normal", "distended"):
            raise ValueError(f"Class must be normal or distended, got '{labelClass}'.")
        box = self.boxFromRoi(roiNode, volumeNode)
        mask = self.maskFromSegmentation(segmentationNode, volumeNode)
        if labelClass == "normal":
            mask = np.zeros_like(mask)
        elif not mask.any():
            raise ValueError("The class is 'distended' but the segmentation is empty: paint the anomaly first.")
        return self.pngFromArray(mask), {"label": labelClass, "box": box}

    # ------------------------------------------------------------------ review state

    @staticmethod
    def reviewState(volumeNode):
        return (volumeNode.GetAttribute(REVIEW_ATTRIBUTE) or "") if volumeNode is not None else ""

    @staticmethod
    def setReviewState(volumeNode, state):
        if state not in ("", "pending", "submitted"):
            raise ValueError(f"unknown review state {state!r}")
        if volumeNode is not None:
            volumeNode.SetAttribute(REVIEW_ATTRIBUTE, state)

    @staticmethod
    def frameOf(segmentationNode):
        """The volume whose grid ``segmentationNode`` was last set on (the frame its correction belongs to), or None."""
        if segmentationNode is None:
            return None
        return segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())

    def hasUnsubmittedWork(self, volumeNode):
        """True when ``volumeNode`` has a LoRIS result or an edited segmentation that was not submitted."""
        return _nodeAlive(volumeNode) and self.reviewState(volumeNode) == "pending"

    # ------------------------------------------------------------------ anomaly map

    def loadAnomalyMap(self, data, frameNode, previousMapNode=None):
        """Load the server's anomaly map (NRRD bytes) as a scalar volume on ``frameNode``'s pixel grid.

        The map is read by Slicer's volume reader and then given the frame's origin,
        spacing and axis directions (``CopyOrientation``): the server computes it on the
        image's own pixel grid, whatever geometry Slicer gave the frame. The previous
        map is removed. The node is marked modified, so saving the scene writes it.

        Raises:
            ValueError: the file cannot be read, or its size is not the frame's.
        """
        _ijkToRas, (width, height) = self.imageGeometry(frameNode)
        folder = self.tempDir()
        path = os.path.join(folder, "anomaly_map.nrrd")
        try:
            with open(path, "wb") as f:
                f.write(data)
            mapNode = self.volumesLogic().AddArchetypeVolume(path, f"{frameNode.GetName()} anomaly map", SINGLE_FILE)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if mapNode is None:
            raise ValueError("Slicer could not read the anomaly map the server sent.")
        dims = mapNode.GetImageData().GetDimensions()
        if tuple(dims) != (width, height, 1) or mapNode.GetImageData().GetNumberOfScalarComponents() != 1:
            self.removeNodes(mapNode)
            raise ValueError(f"the anomaly map is {dims[0]}x{dims[1]}x{dims[2]} but the image is {width}x{height}")
        mapNode.CopyOrientation(frameNode)
        self.setRole(mapNode, "anomalyMap")
        mapNode.StorableModified()
        if previousMapNode is not None and previousMapNode is not mapNode:
            self.removeNodes(previousMapNode)
        return mapNode

    def mapColorNode(self):
        """The module's colour table for the map (one per scene, created on first use); see :data:`MAP_COLOR_STOPS`."""
        scene = slicer.mrmlScene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
            if self.role(node) == "mapColors":
                return node
        node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
        node.UnRegister(None)
        node.SetTypeToUser()
        node.SetName(MAP_COLOR_NAME)
        node.SetNumberOfColors(MAP_COLORS)
        positions = [p for p, _ in MAP_COLOR_STOPS]
        channels = [np.interp(np.linspace(0.0, 1.0, MAP_COLORS), positions, [c[k] for _, c in MAP_COLOR_STOPS])
                    for k in range(3)]
        for i in range(MAP_COLORS):
            node.SetColor(i, float(channels[0][i]), float(channels[1][i]), float(channels[2][i]), 1.0)
        node.SetAttribute("Category", "LoRIS")
        # hidden colour nodes with a storage node are not saved with the scene
        node.SetHideFromEditors(False)
        self.setRole(node, "mapColors")
        return scene.AddNode(node)

    def styleAnomalyMap(self, mapNode, displayRange):
        """Colours fixed by the calibration: the table spans ``displayRange`` (map units); values below it are transparent.

        Also shows a colour legend (title "Anomaly map") in the slice views. Returns the legend display node.
        """
        low, high = (float(v) for v in displayRange)
        if not high > low:
            raise ValueError(f"display range must have low < high, got {displayRange!r}")
        if mapNode.GetDisplayNode() is None:
            mapNode.CreateDefaultDisplayNodes()
        display = mapNode.GetDisplayNode()
        with slicer.util.NodeModify(display):
            display.SetAndObserveColorNodeID(self.mapColorNode().GetID())
            display.SetAutoWindowLevel(0)
            display.SetWindowLevelMinMax(low, high)
            display.SetAutoThreshold(0)
            # values outside [lower, upper] get alpha 0; the upper end is open
            upper = max(high, float(mapNode.GetImageData().GetScalarRange()[1])) + abs(high - low) + 1.0
            display.SetThreshold(low, upper)
            display.SetApplyThreshold(1)
            display.SetInterpolate(0)
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(mapNode)
        if legend is not None:
            legend.SetTitleText("Anomaly map")
            legend.SetLabelFormat("%.3g")
            legend.SetVisibility3D(False)
            legend.SetVisibility2D(True)
        return legend

    # ------------------------------------------------------------------ views

    def showFrame(self, frameNode, mapNode=None, opacity=None):
        """One large view of the frame: background = frame, foreground = map (or none), layout one-up,
        the view rotated to the frame's plane (a frame that is not axial is not seen edge-on) and fitted.
        """
        appLogic = self.applicationLogic()
        selection = appLogic.GetSelectionNode()
        selection.SetActiveVolumeID(frameNode.GetID())
        selection.SetSecondaryVolumeID(mapNode.GetID() if mapNode is not None else None)
        layers = slicer.vtkMRMLApplicationLogic.BackgroundLayer | slicer.vtkMRMLApplicationLogic.ForegroundLayer
        appLogic.PropagateVolumeSelection(layers, 0)
        if opacity is not None:
            self.setOverlayOpacity(opacity)
        layoutNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layoutNode is not None:
            layoutNode.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        sliceLogic = appLogic.GetSliceLogicByLayoutName("Red")
        if sliceLogic is not None:
            sliceNode = sliceLogic.GetSliceNode()
            sliceNode.SetOrientationToDefault()  # then snap to the frame's axes closest to the usual view
            sliceNode.RotateToVolumePlane(frameNode)
            sliceLogic.FitSliceToBackground()
            sliceLogic.SnapSliceOffsetToIJK()

    @staticmethod
    def _compositeNodes():
        scene = slicer.mrmlScene
        return [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]

    def setOverlayOpacity(self, opacity):
        """Foreground (anomaly map) opacity in every slice view, 0..1."""
        opacity = min(max(float(opacity), 0.0), 1.0)
        for composite in self._compositeNodes():
            composite.SetForegroundOpacity(opacity)

    def setMapVisible(self, mapNode, visible):
        """Show or hide the map (the slice views' foreground layer) and its legend."""
        for composite in self._compositeNodes():
            composite.SetForegroundVolumeID(mapNode.GetID() if visible and mapNode is not None else None)
        if mapNode is not None:
            legend = self.colorLegend(mapNode)
            if legend is not None:
                legend.SetVisibility(bool(visible))

    @staticmethod
    def colorLegend(mapNode):
        for i in range(mapNode.GetNumberOfDisplayNodes()):
            display = mapNode.GetNthDisplayNode(i)
            if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
                return display
        return None

    def mapIsShown(self, mapNode):
        """True when the map is the foreground of at least one slice view."""
        return mapNode is not None and any(c.GetForegroundVolumeID() == mapNode.GetID() for c in self._compositeNodes())
