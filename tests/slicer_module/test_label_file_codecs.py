"""The module's own PNG and NRRD codecs read what PIL / SimpleITK / the app write, and PIL reads what it writes."""

import io

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from LoRISLib import nrrdfile, pngfile


def _asymmetric_mask(h=37, w=53):
    mask = np.zeros((h, w), np.uint8)
    mask[3:9, 40:50] = 1  # top right block: catches transposition and flips
    mask[30, 2] = 1
    return mask


def test_encoded_label_png_reads_back_identically_with_pil():
    mask = _asymmetric_mask()
    data = pngfile.encode_gray8(mask.tobytes(), mask.shape[1], mask.shape[0])
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L" and img.size == (53, 37)
        assert np.array_equal(np.array(img), mask)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
@pytest.mark.parametrize("optimize", [False, True])
def test_decoder_reads_pil_pngs_pixel_for_pixel(mode, optimize):
    rng = np.random.default_rng(0)
    gray = (rng.random((21, 34)) * 255).astype(np.uint8)
    gray[:, :10] = 7  # flat areas make PIL choose different row filters
    if mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(gray, "L").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=optimize)
    decoded = pngfile.decode(buf.getvalue())
    assert (decoded.width, decoded.height) == (34, 21)
    first = np.array(decoded.first_channel()).reshape(21, 34)
    expected = np.array(img)
    if expected.ndim == 3:
        expected = expected[..., 0]
    assert np.array_equal(first, expected)


def test_decoder_rejects_non_png_and_truncated_data():
    with pytest.raises(pngfile.PngError, match="signature"):
        pngfile.decode(b"GIF89a....")
    data = pngfile.encode_gray8(bytes(100), 10, 10)
    with pytest.raises(pngfile.PngError):
        pngfile.decode(data[:40])


def test_encoder_checks_sample_count():
    with pytest.raises(pngfile.PngError, match="expected 6 samples"):
        pngfile.encode_gray8(bytes(5), 3, 2)


@pytest.mark.parametrize("compress", [False, True])
def test_nrrd_reader_reads_sitk_anomaly_map_row_major(tmp_path, compress):
    amap = np.random.default_rng(1).random((37, 53)).astype(np.float32)
    path = tmp_path / "anomaly_map.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(amap), str(path), useCompression=compress)
    image = nrrdfile.decode(path.read_bytes())
    assert image.sizes == [53, 37] and (image.width, image.height) == (53, 37)
    values = np.frombuffer(image.data, dtype=image.dtype).reshape(image.height, image.width)
    assert np.array_equal(values, amap)


def test_nrrd_reader_reads_the_anomaly_map_the_app_writes(tmp_path):
    from lib.loris.predictor import write_nrrd

    amap = np.random.default_rng(2).random((37, 53)).astype(np.float32)
    path = tmp_path / "anomaly_map.nrrd"
    write_nrrd(path, amap)
    image = nrrdfile.decode(path.read_bytes())
    assert (image.width, image.height) == (53, 37) and image.fields["encoding"] == "raw"
    assert np.array_equal(np.frombuffer(image.data, dtype=image.dtype).reshape(37, 53), amap)


def test_nrrd_reader_rejects_unsupported_input():
    with pytest.raises(nrrdfile.NrrdError, match="magic"):
        nrrdfile.decode(b"P5 12 12")
    header = b"NRRD0004\ntype: float\ndimension: 2\nsizes: 2 2\nencoding: bzip2\n\n" + bytes(16)
    with pytest.raises(nrrdfile.NrrdError, match="bzip2"):
        nrrdfile.decode(header)
    short = b"NRRD0004\ntype: float\ndimension: 2\nsizes: 2 2\nencoding: raw\n\n" + bytes(8)
    with pytest.raises(nrrdfile.NrrdError, match="truncated"):
        nrrdfile.decode(short)
