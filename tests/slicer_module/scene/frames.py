"""Test frames for the scene tests: asymmetric images written as real files, read back by real readers.

A flip or a transpose of any of these changes it: a bright block in the top right,
a single pixel near the bottom left, and a ramp along x.
"""

import numpy as np
import SimpleITK as sitk
from PIL import Image

WIDTH, HEIGHT = 96, 64  # the throwaway server's frames are 96 x 64 too


def asymmetric_frame(width=WIDTH, height=HEIGHT):
    """``(height, width)`` uint8: ramp along x, bright block top right, one pixel bottom left."""
    frame = np.tile(np.linspace(10, 90, width).astype(np.uint8), (height, 1))
    frame[4:14, width - 30:width - 6] = 230
    frame[height - 6, 3] = 255
    return frame


def asymmetric_mask(width=WIDTH, height=HEIGHT):
    """``(height, width)`` uint8 0/1: block top right plus one pixel bottom left."""
    mask = np.zeros((height, width), np.uint8)
    mask[5:12, width - 26:width - 9] = 1
    mask[height - 5, 2] = 1
    return mask


def write_png(path, array):
    """A grayscale (``(H, W)``) or RGB (``(H, W, 3)``) PNG written by Pillow."""
    Image.fromarray(array).save(path)
    return path


def png_as_nrrd(png_path, nrrd_path):
    """The PNG read by ITK's PNG reader (the reader 3D Slicer uses) and written as NRRD with its geometry.

    The slicer-core wheel has no ITK PNG reader ("Could not create IO object"), so the
    scene tests load frames from this NRRD: the same pixels and the same origin, spacing
    and direction that ITK gives the PNG, read by Slicer's volume logic.
    """
    image = sitk.ReadImage(str(png_path))
    sitk.WriteImage(image, str(nrrd_path))
    return nrrd_path


def write_nrrd(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    """A single-slice NRRD of ``array`` (``(H, W)``) with the given ITK geometry (LPS)."""
    image = sitk.GetImageFromArray(np.asarray(array)[np.newaxis])
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection([float(v) for row in direction for v in row])
    sitk.WriteImage(image, str(path))
    return path


def write_dicom(path, array):
    """A single-frame 8-bit DICOM of ``array`` (``(H, W)``), written by ITK's GDCM writer."""
    image = sitk.GetImageFromArray(np.asarray(array, np.uint8))
    sitk.WriteImage(image, str(path))
    return path
