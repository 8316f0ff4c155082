"""Image and mask I/O: grayscale, orientation, atomic writes."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from lib.data.imageio import encode_png_unfiltered, image_name, image_size, read_image, read_mask, write_png
from lib.errors import DataError


def test_png_reads_as_unit_float_grayscale_in_row_column_order(tmp_path):
    array = np.zeros((3, 5), np.uint8)
    array[0, 4] = 255  # top-right pixel: row 0 (y), column 4 (x)
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 5) and image.dtype == np.float32
    assert image[0, 4] == 1.0 and image.sum() == 1.0
    assert image_size(tmp_path / "a.png") == (5, 3)


def test_every_8_bit_level_reads_as_its_float32_rounded_fraction_of_255(tmp_path):
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "levels.png")
    expected = (levels.astype(np.float64) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(read_image(tmp_path / "levels.png"), expected)
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "levels16.png")  # 16-bit: the general path
    np.testing.assert_allclose(read_image(tmp_path / "levels16.png"), expected, atol=1e-7)


def test_rgb_png_is_converted_with_luma_weights(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png") == pytest.approx(np.full((2, 2), 0.587), abs=1e-6)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: image file not found"):
        read_image(tmp_path / "nope.png")


def test_mask_round_trip_keeps_an_asymmetric_shape(tmp_path):
    mask = np.zeros((6, 9), bool)
    mask[1:3, 5:8] = True
    mask[4, 0] = True
    write_png(tmp_path / "m.png", mask)
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_image_name_strips_only_the_image_extension():
    assert image_name("a/b/knee.01.png") == "knee.01"
    assert image_name("x.DCM") == "x"


def _write_12_bit_dicom(path, array):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = array.astype("<u2").tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), write_like_original=False)


def test_12_bit_dicom_is_scaled_by_its_bits_stored(tmp_path):
    array = np.zeros((4, 6), np.uint16)
    array[1, 2] = 4095
    _write_12_bit_dicom(tmp_path / "f.dcm", array)
    out = read_image(tmp_path / "f.dcm")
    assert out.shape == (4, 6)
    assert out[1, 2] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


def test_atomic_writes_are_readable_by_other_users(tmp_path):
    from lib.data.atomic import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    write_png(tmp_path / "m.png", np.zeros((2, 2), bool))
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (480, 640), (17, 1)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_unfiltered_png_decodes_to_the_same_pixels_in_pil_and_itk(tmp_path, shape, level):
    rng = np.random.default_rng(level + shape[0])
    array = rng.integers(0, 256, shape).astype(np.uint8)
    write_png(tmp_path / "u.png", array, compress_level=level, row_filters=False)
    with Image.open(tmp_path / "u.png") as img:
        assert img.mode == "L" and img.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(img), array)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "u.png"))), array)
    np.testing.assert_array_equal(read_image(tmp_path / "u.png"), (array / 255.0).astype(np.float32))


def test_unfiltered_png_of_a_mask_reads_back_as_the_mask_and_stays_small(tmp_path):
    mask = np.zeros((480, 640), bool)
    mask[100:200, 300:420] = True
    write_png(tmp_path / "m.png", mask, compress_level=1, row_filters=False)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    assert (tmp_path / "m.png").stat().st_size < 5000


def test_unfiltered_png_refuses_what_it_cannot_encode():
    for bad in (np.zeros((0, 4), np.uint8), np.zeros((2, 2), np.float32), np.zeros((2, 2, 3), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            encode_png_unfiltered(bad)


def test_to_uint8_rounds_each_value_as_the_float64_definition_does():
    from lib.data.imageio import to_uint8

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random(5000) * 1.2 - 0.1,  # includes values clipped at both ends
                             (np.arange(256) + 0.5) / 255.0,  # half levels: ties rounded to even
                             np.nextafter((np.arange(256) + 0.5) / 255.0, 2.0)])
    for dtype in (np.float32, np.float64):
        image = values.astype(dtype).reshape(2, -1)
        expected = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(to_uint8(image), expected)
