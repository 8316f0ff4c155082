"""DICOM ultrasound frames and cine loops: pixels, physical calibration and imaging region.

Reading (:func:`read_dicom`):

* **Pixels** are decoded by SimpleITK (GDCM: uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000),
  as ``(F, H, W)`` gray or ``(F, H, W, C)`` colour samples, ``F`` = the number of frames
  (1 for a single frame). A cine loop (*US Multi-frame Image Storage*, or any image with
  ``NumberOfFrames`` > 1) has ``F`` > 1.
* **Calibration** comes from the header (read by pydicom, pixels left out):

  1. the *Sequence of Ultrasound Regions* (0018,6011): its 2D regions
     (``RegionSpatialFormat`` = 1) whose ``PhysicalUnitsXDirection`` and
     ``PhysicalUnitsYDirection`` are 3 (cm) give ``PhysicalDeltaX`` / ``PhysicalDeltaY``
     (cm per pixel) times 10 = mm per pixel. When such regions disagree (a dual view
     at two zooms) the frame has no single spacing and none is given;
  2. else *Pixel Spacing* (0028,0030), in mm, stored as ``row spacing \\ column spacing``
     (that is ``y``, then ``x``);
  3. else none: the frame is measured in pixels.

  ``pixel_spacing_mm`` is always ``(x, y)``: x = the column direction, y = the row direction.
* **Imaging region**: the union of the 2D regions' rectangles
  (``RegionLocationMinX0`` .. ``RegionLocationMaxX1``, both inclusive, and the same in y).
  Pixels outside it -- burned-in text, depth scale, body marker, the scanner's menus --
  are set to 0 by :func:`lib.data.imageio.read_image_file`, so that they reach neither
  the network nor the detector. Without 2D regions the whole frame is used.

Writing (:func:`write_ultrasound_dicom`): an 8-bit *US Image Storage* frame or *US
Multi-frame Image Storage* loop, gray or RGB, with one 2D tissue region carrying the
calibration, used by the sample-data generator and the tests.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.records import Box
from lib.errors import DataError

CM_UNITS = 3
"""``PhysicalUnitsX/YDirection`` code of centimetres (DICOM PS3.3 C.8.5.5.1.15)."""

SPATIAL_2D = 1
"""``RegionSpatialFormat`` code of a 2D (B-mode or colour-flow) region."""

TISSUE = 1
"""``RegionDataType`` code of tissue (B-mode) data."""

SPACING_SOURCES = ("ultrasound_region", "pixel_spacing")
"""Where a frame's pixel spacing came from (:attr:`Calibration.spacing_source`)."""


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` in pixels, max exclusive (DICOM stores the max inclusive).
        spatial_format: ``RegionSpatialFormat`` (1 = 2D).
        data_type: ``RegionDataType`` (1 = tissue).
        units: ``(PhysicalUnitsXDirection, PhysicalUnitsYDirection)`` (3 = cm).
        delta: ``(PhysicalDeltaX, PhysicalDeltaY)`` in those units per pixel.
    """

    box: Box
    spatial_format: int
    data_type: int | None
    units: tuple[int | None, int | None]
    delta: tuple[float | None, float | None]

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        """``(x, y)`` mm per pixel when both directions are in cm with a positive finite delta, else None."""
        if self.units != (CM_UNITS, CM_UNITS):
            return None
        dx, dy = self.delta
        if dx is None or dy is None or not (math.isfinite(dx) and math.isfinite(dy)) or dx == 0 or dy == 0:
            return None
        return abs(dx) * 10.0, abs(dy) * 10.0


@dataclass(frozen=True)
class Calibration:
    """What a DICOM header says about a frame's geometry.

    Attributes:
        pixel_spacing_mm: ``(x, y)`` mm per pixel, or None when the file does not say.
        spacing_source: one of :data:`SPACING_SOURCES`, or None.
        imaging_regions: the 2D regions' boxes (pixels, max exclusive, clipped to the frame); empty:
            the whole frame is image.
        note: why no spacing was taken although the file has regions (else None).
    """

    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None
    imaging_regions: tuple[Box, ...] = ()
    note: str | None = None


def _number(item, keyword: str, kind=float):
    value = item.get(keyword)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def ultrasound_regions(dataset) -> list[UltrasoundRegion]:
    """The items of a pydicom dataset's Sequence of Ultrasound Regions (items without bounds are left out)."""
    regions = []
    for item in dataset.get("SequenceOfUltrasoundRegions") or []:
        bounds = [_number(item, k, int) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                  "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(v is None for v in bounds):
            continue
        x0, y0, x1, y1 = bounds
        regions.append(UltrasoundRegion(
            box=(min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1),
            spatial_format=_number(item, "RegionSpatialFormat", int) or 0,
            data_type=_number(item, "RegionDataType", int),
            units=(_number(item, "PhysicalUnitsXDirection", int), _number(item, "PhysicalUnitsYDirection", int)),
            delta=(_number(item, "PhysicalDeltaX"), _number(item, "PhysicalDeltaY")),
        ))
    return regions


def _clip(box: Box, width: int, height: int) -> Box | None:
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def calibration(dataset, width: int, height: int) -> Calibration:
    """The calibration of a ``width`` x ``height`` frame from its pydicom header (see the module docstring)."""
    regions = [r for r in ultrasound_regions(dataset) if r.spatial_format == SPATIAL_2D]
    boxes = tuple(b for b in (_clip(r.box, width, height) for r in regions) if b is not None)
    spacings = [s for s in (r.spacing_mm for r in regions) if s is not None]
    if spacings:
        first = spacings[0]
        if all(math.isclose(s[0], first[0], rel_tol=1e-6) and math.isclose(s[1], first[1], rel_tol=1e-6)
               for s in spacings):
            return Calibration(first, "ultrasound_region", boxes)
        return Calibration(None, None, boxes, note="the ultrasound regions have different physical deltas "
                                                   f"({sorted(set(spacings))} mm): no single pixel spacing")
    pixel_spacing = dataset.get("PixelSpacing")
    if pixel_spacing is not None:
        try:
            dy, dx = (float(v) for v in pixel_spacing)
        except (TypeError, ValueError):
            dy = dx = float("nan")
        if math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0:
            return Calibration((dx, dy), "pixel_spacing", boxes)
    return Calibration(None, None, boxes)


def read_header(path: str | os.PathLike):
    """The pydicom dataset of ``path`` without its pixel data.

    Raises:
        DataError: not a DICOM file pydicom can parse.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError, AttributeError, KeyError) as exc:
        raise DataError(f"{path}: not a readable DICOM header ({exc})") from None


def header_size(path: str | os.PathLike, what: str | None = None) -> tuple[int, ...]:
    """The size ``(x, y[, z])`` of an image file SimpleITK reads (DICOM, NRRD, NIfTI), from its header only.

    Raises:
        DataError: not readable (the message starts with ``what``, default the path).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{what or path}: not a readable image file ({str(exc).strip().splitlines()[-1]})") from None
    return tuple(int(v) for v in reader.GetSize())


def frame_size(path: str | os.PathLike, what: str | None = None) -> tuple[int, int, int]:
    """``(width, height, frames)`` of a DICOM image, from its header (no pixels decoded).

    Raises:
        DataError: not readable, or not a 2D image or loop of 2D frames (the message starts with ``what``,
            default the path).
    """
    size = header_size(path, what)
    if len(size) < 2 or len(size) > 3:
        raise DataError(f"{what or path}: expected a 2D frame or a cine loop of 2D frames, got size {list(size)}")
    return size[0], size[1], size[2] if len(size) == 3 else 1


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, float | None, Calibration]:
    """The pixels of every frame, their full scale and the calibration.

    Returns:
        ``(samples, full_scale, calibration)``: ``samples`` ``(F, H, W)`` or, for colour,
        ``(F, H, W, C)`` as stored (integers); ``full_scale`` ``2**BitsStored - 1`` when the
        file says (a 12-bit frame is not scaled by 65535), else None.

    Raises:
        DataError: the file cannot be decoded.
    """
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable DICOM image ({str(exc).strip().splitlines()[-1]})") from None
    array = sitk.GetArrayFromImage(image)  # (F, H, W[, C]) or (H, W[, C])
    colour = image.GetNumberOfComponentsPerPixel() > 1
    if array.ndim == (3 if colour else 2):
        array = array[np.newaxis]
    if array.ndim != (4 if colour else 3):
        raise DataError(f"{path}: expected a 2D frame or a loop of 2D frames, got pixel array {array.shape}")
    full_scale = None
    if image.HasMetaDataKey("0028|0101"):  # Bits Stored
        try:
            full_scale = float(2 ** int(image.GetMetaData("0028|0101").strip()) - 1)
        except ValueError:
            full_scale = None
    height, width = array.shape[1:3]
    return array, full_scale, calibration(read_header(path), width, height)


def write_ultrasound_dicom(path: str | os.PathLike, frames: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                           region: Box | None = None, *, patient_id: str = "anonymous", rgb: bool = False,
                           study_uid: str | None = None, series_uid: str | None = None,
                           instance_number: int = 1, frame_time_ms: float = 40.0) -> Path:
    """Write 8-bit frames as a DICOM ultrasound image, with the calibration in one 2D tissue region.

    Args:
        path: the ``.dcm`` file (written atomically).
        frames: ``uint8`` ``(H, W)`` (one frame: *US Image Storage*) or ``(F, H, W)`` (a cine loop:
            *US Multi-frame Image Storage*, with ``NumberOfFrames`` and ``FrameTime``).
        spacing_mm: ``(x, y)`` mm per pixel, stored as ``PhysicalDeltaX/Y`` in cm; None: no region.
        region: the imaging region ``(x_min, y_min, x_max, y_max)`` (max exclusive; default the whole frame).
        rgb: store each gray level in R, G and B (``PhotometricInterpretation`` RGB), as scanners export.
        study_uid, series_uid: default new UIDs.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import (ExplicitVRLittleEndian, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage,
                             generate_uid)

    from lib.data.atomic import atomic_path

    pixels = np.asarray(frames)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ValueError(f"expected uint8 (H, W) or (F, H, W) frames, got {pixels.dtype} {pixels.shape}")
    cine = pixels.ndim == 3
    height, width = pixels.shape[-2:]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if cine else UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = ds.PatientName = str(patient_id)
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, int(instance_number)
    ds.BodyPartExamined = "KNEE"
    ds.Rows, ds.Columns = int(height), int(width)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rgb:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        pixels = np.repeat(pixels[..., np.newaxis], 3, axis=-1)
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if cine:
        ds.NumberOfFrames = int(pixels.shape[0])
        ds.FrameTime = f"{float(frame_time_ms):g}"
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
    if spacing_mm is not None:
        x0, y0, x1, y1 = region if region is not None else (0, 0, width, height)
        item = Dataset()
        item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = SPATIAL_2D, TISSUE, 0
        item.RegionLocationMinX0, item.RegionLocationMinY0 = int(x0), int(y0)
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = int(x1) - 1, int(y1) - 1  # inclusive in DICOM
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = CM_UNITS
        item.PhysicalDeltaX, item.PhysicalDeltaY = float(spacing_mm[0]) / 10.0, float(spacing_mm[1]) / 10.0
        ds.SequenceOfUltrasoundRegions = Sequence([item])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path = Path(path)
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(str(tmp), write_like_original=False)
    return path
