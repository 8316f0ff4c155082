"""The module's scene logic on real MRML nodes and Slicer's own logics (slicer-core), no server.

Frames load through the Volumes logic as the module loads them; boxes go through real
markups ROI nodes; masks through real segmentation nodes; the anomaly map through
Slicer's volume reader. Every image is asymmetric, so a flip or a transpose anywhere
fails a comparison.
"""

import io

import numpy as np
import pytest
from PIL import Image

import slicer
import slicer.util
import vtk
import vtk.util.numpy_support
from frames import (HEIGHT, WIDTH, asymmetric_frame, asymmetric_mask, png_as_nrrd, write_dicom, write_nrrd,
                    write_png)
from LoRISLib import geometry
from LoRISLib.scene import IMAGE_ID_ATTRIBUTE, ROLE_ATTRIBUTE, SOURCE_FILE_ATTRIBUTE

SAGITTAL = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # ITK direction (LPS): i along P, j along S, k along L


def _matrix(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def _png_frame(logic, tmp_path, name="frame"):
    frame = asymmetric_frame()
    nrrd = png_as_nrrd(write_png(tmp_path / f"{name}.png", frame), tmp_path / f"{name}.nrrd")
    return logic.loadFrame(str(nrrd), role="frame"), frame


@pytest.fixture(params=["png", "spacing_origin", "sagittal"])
def frame_of_each_geometry(request, logic, tmp_path):
    """A frame as a PNG gets it in Slicer, one with spacing and origin, and one in a sagittal plane."""
    frame = asymmetric_frame()
    if request.param == "png":
        path = png_as_nrrd(write_png(tmp_path / "f.png", frame), tmp_path / "f.nrrd")
    elif request.param == "spacing_origin":
        path = write_nrrd(tmp_path / "f.nrrd", frame, spacing=(0.2, 0.35, 1.5), origin=(12.5, -3.0, 7.0))
    else:
        path = write_nrrd(tmp_path / "f.nrrd", frame, spacing=(0.3, 0.25, 1.0), origin=(1.0, 2.0, 3.0),
                          direction=SAGITTAL)
    return logic.loadFrame(str(path), role="frame"), frame


def test_png_frame_loads_as_a_scalar_volume_on_slicers_png_grid(logic, tmp_path):
    volume, frame = _png_frame(logic, tmp_path)
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert volume.GetImageData().GetDimensions() == (WIDTH, HEIGHT, 1)
    assert np.array_equal(slicer.util.arrayFromVolume(volume)[0], frame)  # row 0 of the file = j 0
    assert _matrix(volume).tolist() == geometry.png_ijk_to_ras()  # RAS = (-i, -j, 0)
    assert volume.GetAttribute(ROLE_ATTRIBUTE) == "frame" and volume.GetAttribute(SOURCE_FILE_ATTRIBUTE)


def test_color_frame_becomes_a_grayscale_scalar_volume_on_the_same_grid(logic, tmp_path):
    gray = asymmetric_frame()
    rgb = np.stack([gray, gray // 2, 255 - gray], axis=-1)
    path = png_as_nrrd(write_png(tmp_path / "rgb.png", rgb), tmp_path / "rgb.nrrd")
    before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLVectorVolumeNode")
    volume = logic.loadFrame(str(path), role="frame")
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode"
    expected = np.round(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.uint8)
    assert np.array_equal(slicer.util.arrayFromVolume(volume)[0], expected)
    assert _matrix(volume).tolist() == geometry.png_ijk_to_ras()
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLVectorVolumeNode") == before  # the RGB node is gone
    assert volume.GetAttribute(ROLE_ATTRIBUTE) == "frame"


def test_numbered_neighbours_are_not_stacked_into_a_volume(logic, tmp_path):
    for index in (1, 2, 3):
        write_nrrd(tmp_path / f"frame_00{index}.nrrd", asymmetric_frame() + index)
    volume = logic.loadFrame(str(tmp_path / "frame_002.nrrd"))
    assert volume.GetImageData().GetDimensions() == (WIDTH, HEIGHT, 1)
    assert np.array_equal(slicer.util.arrayFromVolume(volume)[0], asymmetric_frame() + 2)


def test_dicom_frame_loads_pixel_for_pixel(logic, tmp_path):
    frame = asymmetric_frame()
    volume = logic.loadFrame(str(write_dicom(tmp_path / "frame.dcm", frame)))
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert np.array_equal(slicer.util.arrayFromVolume(volume)[0], frame)


def test_unreadable_file_is_named_in_the_error(logic, tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(ValueError, match="broken.nrrd"):
        logic.loadFrame(str(path))


@pytest.mark.parametrize("box", [[60, 4, 90, 14], [0, 0, WIDTH, HEIGHT], [3, 57, 4, 58], [10, 20, 33, 41]])
def test_box_and_roi_round_trip_on_real_nodes(logic, frame_of_each_geometry, box):
    volume, _ = frame_of_each_geometry
    roi = logic.ensureRoiNode()
    logic.setRoiFromBox(roi, volume, box)
    assert logic.roiIsPlaced(roi)
    assert logic.boxFromRoi(roi, volume) == box
    # the ROI covers exactly the box's pixels: its RAS bounds are those of the pixel edges
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)
    assert np.allclose(bounds, geometry.pixel_box_to_ras_bounds(box, _matrix(volume).tolist()))


def test_roi_placed_by_hand_gives_the_box_of_the_pixels_under_it(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    # RAS = (-i, -j): pixel edges x 9.5 .. 29.5 and y 19.5 .. 49.5, drawn slightly off the edges
    roi.SetXYZ(-19.6, -34.4, 0.0)
    roi.SetRadiusXYZ(10.1, 14.8, 0.5)
    assert logic.boxFromRoi(roi, volume) == [10, 20, 30, 50]


def test_new_frame_box_is_not_placed_and_submit_asks_for_it(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    roi = logic.ensureRoiNode()
    logic.setRoiFromBox(roi, volume, [10, 10, 20, 20])
    roi.RemoveAllControlPoints()  # what a new frame does
    assert not logic.roiIsPlaced(roi)
    with pytest.raises(ValueError, match="place the box"):
        logic.boxFromRoi(roi, volume)
    with pytest.raises(ValueError, match="place the box"):
        logic.correctionFor(logic.ensureSegmentationNode(None, volume), volume, roi, "normal")
    logic.setRoiFromBox(roi, volume, [10, 10, 20, 20])  # the same box again: the control point comes back
    assert logic.roiIsPlaced(roi)


def test_server_segmentation_png_lands_on_the_frame_grid(logic, frame_of_each_geometry):
    volume, _ = frame_of_each_geometry
    mask = asymmetric_mask()
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")  # a 0/1 PNG as the server sends it
    decoded = logic.maskFromPng(buffer.getvalue(), WIDTH, HEIGHT)
    assert np.array_equal(decoded, mask)
    segmentation = logic.ensureSegmentationNode(None, volume)
    logic.setSegmentationMask(segmentation, volume, decoded)
    # compared through the nodes: exported on the frame's grid ...
    assert np.array_equal(logic.maskFromSegmentation(segmentation, volume), mask)
    # ... and in world coordinates: each segmented voxel sits where the frame's pixel (x, y) sits
    internal = segmentation.GetBinaryLabelmapInternalRepresentation(logic.segmentId(segmentation))
    toWorld = vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(toWorld)
    extent = internal.GetExtent()
    values = vtk.util.numpy_support.vtk_to_numpy(internal.GetPointData().GetScalars())
    values = values.reshape(extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    ks, js, is_ = np.nonzero(values)
    world = {tuple(np.round(np.array(toWorld.MultiplyPoint([i + extent[0], j + extent[2], k + extent[4], 1]))[:3], 4))
             for k, j, i in zip(ks, js, is_)}
    frame_ras = _matrix(volume)
    ys, xs = np.nonzero(mask)
    expected = {tuple(np.round((frame_ras @ [x, y, 0, 1])[:3], 4)) for x, y in zip(xs, ys)}
    assert world == expected


def test_mask_png_of_another_size_is_refused(logic, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(asymmetric_mask(50, 40)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="50x40 but the image is 96x64"):
        logic.maskFromPng(buffer.getvalue(), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="not a PNG"):
        logic.maskFromPng(b"GIF89a", WIDTH, HEIGHT)


def test_anomaly_map_becomes_a_volume_on_the_frame_grid(logic, frame_of_each_geometry, tmp_path):
    volume, _ = frame_of_each_geometry
    amap = np.random.default_rng(0).random((HEIGHT, WIDTH)).astype(np.float32)
    amap[4:14, 66:90] += 3.0  # asymmetric hot block, top right
    data = write_nrrd(tmp_path / "map.nrrd", amap).read_bytes()  # the map file as the server writes it
    mapNode = logic.loadAnomalyMap(data, volume)
    assert mapNode.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert np.array_equal(slicer.util.arrayFromVolume(mapNode)[0], amap)
    assert np.allclose(_matrix(mapNode), _matrix(volume))  # voxel (i, j) of the map is pixel (i, j) of the frame
    assert mapNode.GetAttribute(ROLE_ATTRIBUTE) == "anomalyMap"
    again = logic.loadAnomalyMap(data, volume, previousMapNode=mapNode)
    assert mapNode.GetScene() is None and again.GetScene() is not None  # the previous map is replaced


def test_anomaly_map_of_another_size_is_refused_and_leaves_nothing(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    data = write_nrrd(tmp_path / "small.nrrd", np.zeros((10, 12), np.float32)).read_bytes()
    with pytest.raises(ValueError, match="12x10x1 but the image is 96x64"):
        logic.loadAnomalyMap(data, volume)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_correction_is_built_from_the_segmentation_node(logic, frame_of_each_geometry):
    volume, _ = frame_of_each_geometry
    mask = asymmetric_mask()
    segmentation = logic.ensureSegmentationNode(None, volume)
    logic.setSegmentationMask(segmentation, volume, mask)
    roi = logic.ensureRoiNode()
    logic.setRoiFromBox(roi, volume, [60, 2, 92, 20])
    png, info = logic.correctionFor(segmentation, volume, roi, "distended")
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L" and image.size == (WIDTH, HEIGHT)
        assert np.array_equal(np.asarray(image), mask)
    assert info == {"label": "distended", "box": [60, 2, 92, 20]}
    png, info = logic.correctionFor(segmentation, volume, roi, "normal")
    with Image.open(io.BytesIO(png)) as image:
        assert not np.asarray(image).any() and info["label"] == "normal"
    logic.clearSegmentation(segmentation, volume)
    with pytest.raises(ValueError, match="segmentation is empty"):
        logic.correctionFor(segmentation, volume, roi, "distended")
    with pytest.raises(ValueError, match="normal or distended"):
        logic.correctionFor(segmentation, volume, roi, "unsure")


def test_map_colours_are_fixed_by_the_display_range_with_a_legend(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    amap = np.linspace(0.0, 1.2, WIDTH * HEIGHT, dtype=np.float32).reshape(HEIGHT, WIDTH)
    mapNode = logic.loadAnomalyMap(write_nrrd(tmp_path / "m.nrrd", amap).read_bytes(), volume)
    legend = logic.styleAnomalyMap(mapNode, (0.2, 0.6))
    display = mapNode.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.2, 0.6))
    assert not display.GetAutoWindowLevel()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.2)
    assert display.GetUpperThreshold() > amap.max()  # nothing above the range is hidden
    colors = display.GetColorNode()
    assert colors is logic.mapColorNode() and colors.GetNumberOfColors() == 256
    low, high = [0.0] * 4, [0.0] * 4
    colors.GetColor(0, low)
    colors.GetColor(255, high)
    assert max(low[:3]) >= 0.5  # the low end is a visible colour on a dark frame, not black
    assert sum(high[:3]) > sum(low[:3])
    assert legend is not None and legend.IsA("vtkMRMLColorLegendDisplayNode")
    assert legend.GetTitleText() == "Anomaly map" and legend.GetVisibility2D()
    # a second map of the same scene uses the same colour table (one per scene)
    other = logic.loadAnomalyMap(write_nrrd(tmp_path / "m2.nrrd", amap).read_bytes(), volume)
    logic.styleAnomalyMap(other, (0.2, 0.6))
    assert other.GetDisplayNode().GetColorNode() is colors
    with pytest.raises(ValueError, match="low < high"):
        logic.styleAnomalyMap(other, (0.6, 0.2))


def test_frame_is_shown_alone_upright_in_one_large_view(logic, slicer_core, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    logic.showFrame(volume)
    assert slicer_core.layoutNode().GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
    assert slicer_core.compositeNode("Red").GetBackgroundVolumeID() == volume.GetID()
    assert slicer_core.compositeNode("Red").GetForegroundVolumeID() is None
    sliceToRas = slicer.util.arrayFromVTKMatrix(slicer_core.sliceNode("Red").GetSliceToRAS())
    ijk = _matrix(volume)
    # screen x runs along the image's columns (i), screen y up is the image's row 0 (-j): not mirrored, not flipped
    assert np.allclose(sliceToRas[:3, 0], ijk[:3, 0] / np.linalg.norm(ijk[:3, 0]))
    assert np.allclose(sliceToRas[:3, 1], -ijk[:3, 1] / np.linalg.norm(ijk[:3, 1]))
    # fitted: the view is centred on the frame
    center = ijk @ [(WIDTH - 1) / 2, (HEIGHT - 1) / 2, 0, 1]
    assert np.allclose(sliceToRas[:2, 3], center[:2], atol=1.0)


def test_frame_in_another_plane_is_shown_face_on(logic, slicer_core, tmp_path):
    volume = logic.loadFrame(str(write_nrrd(tmp_path / "sag.nrrd", asymmetric_frame(), spacing=(0.3, 0.25, 1.0),
                                            direction=SAGITTAL)))
    ijk = _matrix(volume)
    normal = np.cross(ijk[:3, 0], ijk[:3, 1])
    red = slicer_core.sliceNode("Red")
    before = slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS())
    assert abs(np.dot(before[:3, 2], normal / np.linalg.norm(normal))) < 1e-6  # axial view: the frame edge-on
    logic.showFrame(volume)
    after = slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS())
    assert abs(abs(np.dot(after[:3, 2], normal / np.linalg.norm(normal))) - 1.0) < 1e-6  # rotated to its plane


def test_opacity_and_map_toggle_reach_the_slice_views(logic, slicer_core, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    mapNode = logic.loadAnomalyMap(write_nrrd(tmp_path / "m.nrrd", np.ones((HEIGHT, WIDTH), np.float32)).read_bytes(),
                                   volume)
    logic.styleAnomalyMap(mapNode, (0.5, 1.5))
    logic.showFrame(volume)
    logic.setMapVisible(mapNode, True)
    logic.setOverlayOpacity(0.35)
    red = slicer_core.compositeNode("Red")
    assert red.GetForegroundVolumeID() == mapNode.GetID() and red.GetForegroundOpacity() == pytest.approx(0.35)
    assert logic.mapIsShown(mapNode)
    logic.setMapVisible(mapNode, False)
    assert red.GetForegroundVolumeID() is None and not logic.colorLegend(mapNode).GetVisibility()
    logic.setMapVisible(mapNode, True)
    assert logic.mapIsShown(mapNode) and logic.colorLegend(mapNode).GetVisibility()


def _owned_ids(node):
    ids = {node.GetID()}
    ids |= {node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes())}
    ids |= {node.GetNthStorageNodeID(i) for i in range(node.GetNumberOfStorageNodes())}
    return {i for i in ids if i}


def test_next_frame_removes_the_previous_frames_nodes(logic, tmp_path):
    user_volume = logic.loadFrame(str(write_nrrd(tmp_path / "mine.nrrd", asymmetric_frame())))  # the user's own
    first, _ = _png_frame(logic, tmp_path, "first")
    roi, segmentation = logic.startFrame(first)
    mask = asymmetric_mask()
    logic.setSegmentationMask(segmentation, first, mask)
    logic.setRoiFromBox(roi, first, [60, 2, 92, 20])
    mapNode = logic.loadAnomalyMap(write_nrrd(tmp_path / "m.nrrd", np.ones((HEIGHT, WIDTH), np.float32)).read_bytes(),
                                   first)
    logic.styleAnomalyMap(mapNode, (0.5, 1.5))
    gone = _owned_ids(first) | _owned_ids(mapNode)
    assert len(gone) >= 6  # frame, its display and storage, map, its display, storage and legend
    second, _ = _png_frame(logic, tmp_path, "second")
    roi2, segmentation2 = logic.startFrame(second, first, roi, segmentation, mapNode)
    assert not {i for i in gone if slicer.mrmlScene.GetNodeByID(i) is not None}
    assert user_volume.GetScene() is not None  # not the module's: kept
    assert roi2 is roi and not logic.roiIsPlaced(roi)
    assert segmentation2 is segmentation and logic.frameOf(segmentation) is second
    assert not logic.maskFromSegmentation(segmentation, second).any()
    # a volume the user picked is never removed, even when it was the frame under review
    roi3, _ = logic.startFrame(user_volume, second, roi, segmentation)
    logic.startFrame(second, user_volume, roi, segmentation)
    assert user_volume.GetScene() is not None


def test_input_selector_offers_plain_scalar_volumes_but_not_the_module_outputs(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    mapNode = logic.loadAnomalyMap(write_nrrd(tmp_path / "m.nrrd", np.ones((HEIGHT, WIDTH), np.float32)).read_bytes(),
                                   volume)
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    vector = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
    assert logic.isReviewableVolume(volume)
    assert not logic.isReviewableVolume(mapNode)
    assert not logic.isReviewableVolume(label) and not logic.isReviewableVolume(vector)
    assert logic.moduleOutputVolumeIDs() == [mapNode.GetID()]


def test_edits_mark_the_frame_unsubmitted_until_submitted(logic, tmp_path):
    volume, _ = _png_frame(logic, tmp_path)
    _roi, segmentation = logic.startFrame(volume)
    assert not logic.hasUnsubmittedWork(volume)  # an empty start is nothing to lose
    edited = asymmetric_mask()
    segmentId = logic.segmentId(segmentation)
    # what a Segment Editor stroke does: a new binary labelmap for the segment
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited[np.newaxis], segmentation, segmentId, volume)
    assert logic.hasUnsubmittedWork(volume)
    logic.setReviewState(volume, "submitted")
    assert not logic.hasUnsubmittedWork(volume)
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited[np.newaxis] * 0, segmentation, segmentId, volume)
    assert logic.hasUnsubmittedWork(volume)


def test_upload_sends_the_original_file_or_the_pixels_as_png(logic, tmp_path):
    frame = asymmetric_frame()
    dicom = logic.loadFrame(str(write_dicom(tmp_path / "frame.dcm", frame)))
    dicom.SetAttribute(IMAGE_ID_ATTRIBUTE, "frame_1")
    assert logic.uploadSource(dicom) == ("frame_1", str(tmp_path / "frame.dcm"), None)
    volume = logic.loadFrame(str(write_nrrd(tmp_path / "f.nrrd", frame)))  # NRRD: not an upload format
    imageId, path, png = logic.uploadSource(volume)
    assert (imageId, path) == ("", None)
    with Image.open(io.BytesIO(png)) as image:
        assert np.array_equal(np.asarray(image), frame)
    floats = logic.loadFrame(str(write_nrrd(tmp_path / "float.nrrd", frame.astype(np.float32) / 255.0 - 0.5)))
    _, _, png = logic.uploadSource(floats)
    with Image.open(io.BytesIO(png)) as image:
        scaled = np.asarray(image).astype(int)
    low, high = frame.min(), frame.max()
    assert np.abs(scaled - np.round((frame.astype(float) - low) * 255.0 / (high - low))).max() <= 1


def test_a_volume_that_is_not_one_frame_is_refused_before_anything_changes(logic, tmp_path):
    first, _ = _png_frame(logic, tmp_path, "first")
    roi, segmentation = logic.startFrame(first)
    stack = slicer.util.addVolumeFromArray(np.zeros((3, HEIGHT, WIDTH), np.uint8), name="stack")
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="has 3 slices"):
        logic.startFrame(stack, first, roi, segmentation)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes and first.GetScene() is not None


def test_a_cine_loop_file_is_reviewed_one_frame_at_a_time_on_its_grid(logic, tmp_path, ultrasound_dicom):
    loop = np.stack([asymmetric_frame() // (k + 1) for k in range(3)])
    path = ultrasound_dicom(tmp_path / "cine.dcm", loop, (0.1, 0.1))  # RGB, as scanners export
    frame = logic.loadFrame(str(path), role="frame")
    cine = logic.cineOf(frame)
    assert frame.GetClassName() == "vtkMRMLScalarVolumeNode" and logic.imageGeometry(frame)[1] == (WIDTH, HEIGHT)
    assert cine.GetAttribute(ROLE_ATTRIBUTE) == "cine" and slicer.util.arrayFromVolume(cine).shape == (3, HEIGHT, WIDTH)
    assert logic.frameIndex(frame) == (0, 3) and np.array_equal(slicer.util.arrayFromVolume(frame)[0], loop[0])
    logic.showCineFrame(frame, 2)
    assert logic.frameIndex(frame) == (2, 3) and np.array_equal(slicer.util.arrayFromVolume(frame)[0], loop[2])
    with pytest.raises(ValueError, match="frame 3 does not exist"):
        logic.showCineFrame(frame, 3)
    assert not logic.isReviewableVolume(cine) and cine.GetID() in logic.moduleOutputVolumeIDs()
    assert logic.uploadSource(frame)[1] == str(path)  # the loop goes to the server, not one frame of it
    roi, segmentation = logic.startFrame(frame)
    logic.startFrame(_png_frame(logic, tmp_path, "next")[0], frame, roi, segmentation)
    assert frame.GetScene() is None and cine.GetScene() is None  # the next frame removes the loop too


def test_the_servers_pixel_spacing_becomes_the_frames_and_the_boxes_millimetres(logic, tmp_path, ultrasound_dicom):
    path = ultrasound_dicom(tmp_path / "us.dcm", asymmetric_frame(), (0.1, 0.1))
    frame = logic.loadFrame(str(path))
    assert frame.GetSpacing()[:2] == (1.0, 1.0)  # ITK's DICOM reader does not read ultrasound regions
    assert logic.pixelSpacing(frame) == ([1.0, 1.0], False)
    roi = logic.ensureRoiNode()
    assert logic.applyPixelSpacing(frame, [0.1, 0.1])
    assert frame.GetSpacing() == pytest.approx((0.1, 0.1, 1.0)) and logic.pixelSpacing(frame)[1]
    logic.setRoiFromBox(roi, frame, [10, 20, 60, 40])
    assert roi.GetSize()[:2] == pytest.approx((5.0, 2.0))  # 50 x 20 pixels of 0.1 mm
    assert logic.boxFromRoi(roi, frame) == [10, 20, 60, 40]
    amap = np.zeros((HEIGHT, WIDTH), np.float32)
    mapNode = logic.loadAnomalyMap(write_nrrd(tmp_path / "map.nrrd", amap).read_bytes(), frame)
    assert mapNode.GetSpacing() == pytest.approx((0.1, 0.1, 1.0))
    assert not logic.applyPixelSpacing(frame, [0.1, 0.1])  # unchanged
    logic.applyPixelSpacing(frame, None)  # a server without calibration: Slicer's spacing, marked as such
    assert logic.pixelSpacing(frame) == ([pytest.approx(0.1), pytest.approx(0.1)], False)
