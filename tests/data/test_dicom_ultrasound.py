"""DICOM ultrasound as scanners export it: RGB frames, burned-in text, region calibration, cine loops."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lib.data.dicom import calibration, frame_size, read_header, write_ultrasound_dicom
from lib.data.imageio import image_size, read_image, read_image_file, write_png
from lib.data.records import Record
from lib.data.imageio import read_boxed_images
from lib.errors import DataError

W, H = 40, 24


def frame(seed=0, width=W, height=H):
    return np.random.default_rng(seed).integers(1, 256, size=(height, width), dtype=np.uint8)


def test_rgb_frame_with_a_region_calibration_reads_as_gray_with_its_spacing_in_mm(tmp_path):
    pixels = frame()
    path = write_ultrasound_dicom(tmp_path / "us.dcm", pixels, (0.1, 0.1), rgb=True)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "RGB" and ds.SOPClassUID.name == "Ultrasound Image Storage"
    assert ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX == pytest.approx(0.01)  # cm per pixel
    image = read_image_file(path)
    assert image.pixel_spacing_mm == (0.1, 0.1) and image.spacing_source == "ultrasound_region"
    assert image.frame_count == 1 and image.size == (W, H)
    write_png(tmp_path / "same.png", pixels)
    assert np.array_equal(image.frames[0], read_image(tmp_path / "same.png"))  # the same frame as PNG


def test_anisotropic_spacing_is_x_then_y(tmp_path):
    path = write_ultrasound_dicom(tmp_path / "us.dcm", frame(), (0.12, 0.08))
    assert read_image_file(path).pixel_spacing_mm == pytest.approx((0.12, 0.08))


def test_pixels_outside_the_imaging_region_are_ignored(tmp_path):
    pixels = frame()
    pixels[:3, :] = 250  # burned-in text above the image
    path = write_ultrasound_dicom(tmp_path / "us.dcm", pixels, (0.2, 0.2), region=(5, 3, 30, 20))
    ds = pydicom.dcmread(path)
    region = ds.SequenceOfUltrasoundRegions[0]
    assert (region.RegionLocationMinX0, region.RegionLocationMaxX1) == (5, 29)  # DICOM's max is inclusive
    image = read_image(path)
    inside = np.zeros((H, W), bool)
    inside[3:20, 5:30] = True
    assert not image[~inside].any()
    assert np.array_equal(image[inside], pixels[inside] / np.float32(255))


def _header(regions=(), pixel_spacing=None):
    ds = Dataset()
    items = []
    for box, units, delta, spatial in regions:
        item = Dataset()
        item.RegionSpatialFormat, item.RegionDataType = spatial, 1
        item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box
        item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
        item.PhysicalDeltaX, item.PhysicalDeltaY = delta
        items.append(item)
    if items:
        ds.SequenceOfUltrasoundRegions = Sequence(items)
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    return ds


def test_calibration_takes_the_2d_regions_in_cm_and_leaves_other_regions_out():
    spectral = ((0, 60, 99, 79), (4, 7), (0.01, 5.0), 3)  # a Doppler strip: seconds x cm/s, not space
    tissue = ((10, 5, 89, 54), (3, 3), (0.015, 0.02), 1)
    calib = calibration(_header([spectral, tissue]), 100, 80)
    assert calib.pixel_spacing_mm == pytest.approx((0.15, 0.2)) and calib.spacing_source == "ultrasound_region"
    assert calib.imaging_regions == ((10, 5, 90, 55),)


def test_regions_that_disagree_give_no_spacing_and_say_why():
    left = ((0, 0, 49, 79), (3, 3), (0.01, 0.01), 1)
    right = ((50, 0, 99, 79), (3, 3), (0.02, 0.02), 1)
    calib = calibration(_header([left, right]), 100, 80)
    assert calib.pixel_spacing_mm is None and "different physical deltas" in calib.note
    assert calib.imaging_regions == ((0, 0, 50, 80), (50, 0, 100, 80))


def test_a_region_not_in_cm_gives_no_spacing_but_still_bounds_the_image():
    calib = calibration(_header([((2, 2, 20, 20), (0, 0), (1.0, 1.0), 1)]), 30, 30)
    assert calib.pixel_spacing_mm is None and calib.imaging_regions == ((2, 2, 21, 21),)


def test_pixel_spacing_is_the_fallback_and_is_stored_row_then_column():
    calib = calibration(_header(pixel_spacing=(0.25, 0.125)), 30, 30)  # row spacing (y), column spacing (x)
    assert calib.pixel_spacing_mm == (0.125, 0.25) and calib.spacing_source == "pixel_spacing"


def test_a_dicom_without_calibration_has_no_spacing(tmp_path):
    path = write_ultrasound_dicom(tmp_path / "plain.dcm", frame(), None)
    image = read_image_file(path)
    assert image.pixel_spacing_mm is None and image.spacing_source is None and image.imaging_regions == ()


def test_png_has_no_spacing(tmp_path):
    write_png(tmp_path / "f.png", frame())
    image = read_image_file(tmp_path / "f.png")
    assert image.pixel_spacing_mm is None and image.frame_count == 1


def test_cine_loop_reads_every_frame_and_a_frame_must_be_chosen(tmp_path):
    loop = np.stack([frame(seed) for seed in range(3)])
    path = write_ultrasound_dicom(tmp_path / "cine.dcm", loop, (0.1, 0.1), rgb=True)
    assert pydicom.dcmread(path).NumberOfFrames == 3
    image = read_image_file(path)
    assert image.frame_count == 3 and image.pixel_spacing_mm == (0.1, 0.1)
    for k in range(3):
        assert np.array_equal(image.frames[k], loop[k] / np.float32(255))
        assert np.array_equal(read_image(path, k), image.frames[k])
    with pytest.raises(DataError, match="cine loop of 3 frames; choose one frame"):
        read_image(path)
    with pytest.raises(DataError, match=r"frame 3 does not exist; the image has 3 frame\(s\), numbered 0 .. 2"):
        read_image(path, 3)
    assert image_size(path) == (W, H) and frame_size(path) == (W, H, 3)


def test_a_record_of_a_cine_frame_reads_that_frame(tmp_path):
    loop = np.stack([frame(seed) for seed in range(3)])
    path = write_ultrasound_dicom(tmp_path / "cine.dcm", loop, (0.1, 0.1))
    images = read_boxed_images([Record("c", path, "p", "normal", (0, 0, 10, 10), frame=2)])
    assert np.array_equal(images[0], loop[2] / np.float32(255))


def test_a_file_that_is_not_dicom_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError, match="bad.dcm: not a readable"):
        read_image(bad)
    with pytest.raises(DataError, match="bad.dcm"):
        image_size(bad)
    assert read_header(write_ultrasound_dicom(tmp_path / "ok.dcm", frame(), None)).Modality == "US"
