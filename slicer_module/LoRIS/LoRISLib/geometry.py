"""Image pixel boxes <-> markups ROI boxes in Slicer's RAS space.

A *pixel box* is ``[x_min, y_min, x_max, y_max]``: integer pixel indices of
the image file, x = column, y = row, max exclusive (the project's ``box``).
A Slicer volume places voxel ``(i, j, k)`` (i = column, j = row, k = slice) at
``RAS = M @ (i, j, k, 1)`` with ``M`` its IJK->RAS matrix, which carries the
origin, the spacing, the axis directions and the LPS->RAS flip. ``M`` is
passed here as a 4x4 nested list (row-major, ``M[row][col]``), copied from the
volume node's ``vtkMatrix4x4`` by the module, so nothing here needs Slicer.

Pixel edges, not centers: voxel ``i`` covers ``[i - 0.5, i + 0.5]`` in IJK, so
the box ``x_min..x_max`` (max exclusive) covers ``i`` in
``[x_min - 0.5, x_max - 0.5]``. The ROI drawn in Slicer therefore lines up
with the pixel borders the user sees, and a box of width ``w`` pixels gives an
ROI ``w * spacing`` mm wide. Along k the ROI is one slice thick.

Markups ROIs here are axis-aligned in RAS: for an image whose axes are not
aligned with RAS (an oblique DICOM), the ROI is the RAS bounding box of the
pixel box, and converting it back gives the pixel bounding box of that ROI
(which contains the original box). For images whose axes are RAS axes up to
sign and permutation -- every PNG/JPEG frame and nearly every ultrasound
frame -- the round trip is exact.

A PNG or JPEG loaded by Slicer (ITK's reader: origin 0, spacing 1, identity
direction in LPS) gets ``RAS = (-i, -j, 0)``: see :func:`png_ijk_to_ras`.
"""

import math

__all__ = [
    "ijk_to_ras_from_lps",
    "png_ijk_to_ras",
    "invert_affine",
    "transform_point",
    "pixel_box_to_ras_bounds",
    "pixel_box_to_roi",
    "ras_bounds_to_pixel_box",
    "roi_to_pixel_box",
]

_EPS = 1e-6


def _check_matrix(matrix):
    if len(matrix) != 4 or any(len(row) != 4 for row in matrix):
        raise ValueError(f"IJK->RAS matrix must be 4x4, got {matrix!r}")
    if any(abs(matrix[3][c] - (0.0, 0.0, 0.0, 1.0)[c]) > _EPS for c in range(4)):
        raise ValueError(f"IJK->RAS matrix must be affine (last row 0 0 0 1), got {matrix[3]!r}")


def ijk_to_ras_from_lps(origin, spacing, direction):
    """The IJK->RAS matrix of an image described the ITK way (LPS physical space).

    Args:
        origin: physical position of voxel (0, 0, 0), LPS, mm (3 values).
        spacing: voxel size along i, j, k, mm (3 positive values).
        direction: 3x3 direction cosines, LPS, ``direction[row][col]``:
            column ``c`` is the physical direction of index axis ``c``.

    Returns:
        4x4 nested list ``M`` with ``RAS = M @ (i, j, k, 1)``: ITK's
        ``LPS = origin + direction @ diag(spacing) @ ijk``, then L and P are negated.
    """
    if len(origin) != 3 or len(spacing) != 3 or len(direction) != 3 or any(len(r) != 3 for r in direction):
        raise ValueError("origin and spacing need 3 values and direction 3x3")
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {list(spacing)}")
    flip = (-1.0, -1.0, 1.0)
    m = [[0.0] * 4 for _ in range(4)]
    for r in range(3):
        for c in range(3):
            m[r][c] = flip[r] * float(direction[r][c]) * float(spacing[c])
        m[r][3] = flip[r] * float(origin[r])
    m[3][3] = 1.0
    return m


def png_ijk_to_ras():
    """IJK->RAS of a PNG/JPEG frame as Slicer loads it: ``RAS = (-i, -j, 0)``.

    ITK's PNG/JPEG readers give origin 0, spacing 1 and identity direction
    (LPS); Slicer converts LPS to RAS by negating the first two axes.
    """
    return ijk_to_ras_from_lps((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))


def invert_affine(matrix):
    """Inverse of a 4x4 affine matrix (nested lists); raises ValueError if singular."""
    _check_matrix(matrix)
    a = [[float(matrix[r][c]) for c in range(3)] for r in range(3)]
    det = (
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    )
    if abs(det) < 1e-12:
        raise ValueError(f"IJK->RAS matrix is singular: {matrix!r}")
    inv = [[0.0] * 3 for _ in range(3)]
    for r in range(3):
        for c in range(3):
            # cofactor of a[c][r] (transposed) / det
            rows = [i for i in range(3) if i != c]
            cols = [j for j in range(3) if j != r]
            minor = a[rows[0]][cols[0]] * a[rows[1]][cols[1]] - a[rows[0]][cols[1]] * a[rows[1]][cols[0]]
            inv[r][c] = ((-1) ** (r + c)) * minor / det
    t = [float(matrix[r][3]) for r in range(3)]
    out = [[0.0] * 4 for _ in range(4)]
    for r in range(3):
        out[r][:3] = inv[r]
        out[r][3] = -sum(inv[r][c] * t[c] for c in range(3))
    out[3][3] = 1.0
    return out


def transform_point(matrix, point):
    """``matrix @ (x, y, z, 1)`` -> the first three coordinates."""
    x, y, z = (float(v) for v in point)
    return [matrix[r][0] * x + matrix[r][1] * y + matrix[r][2] * z + matrix[r][3] for r in range(3)]


def _check_box(box):
    if len(box) != 4:
        raise ValueError(f"box must be [x_min, y_min, x_max, y_max], got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} is empty or inverted (need x_min < x_max and y_min < y_max)")
    return x0, y0, x1, y1


def pixel_box_to_ras_bounds(box, ijk_to_ras):
    """Pixel box -> RAS bounds ``[r_min, r_max, a_min, a_max, s_min, s_max]`` (mm).

    The bounds enclose the pixel *edges* of the box (see module docstring) and
    one slice thickness along k (``k`` in ``[-0.5, 0.5]``).
    """
    _check_matrix(ijk_to_ras)
    x0, y0, x1, y1 = _check_box(box)
    corners = [
        transform_point(ijk_to_ras, (i, j, k))
        for i in (x0 - 0.5, x1 - 0.5)
        for j in (y0 - 0.5, y1 - 0.5)
        for k in (-0.5, 0.5)
    ]
    bounds = []
    for axis in range(3):
        values = [c[axis] for c in corners]
        bounds += [min(values), max(values)]
    return bounds


def pixel_box_to_roi(box, ijk_to_ras):
    """Pixel box -> ``(center, size)`` of an axis-aligned markups ROI in RAS (mm, 3 values each)."""
    b = pixel_box_to_ras_bounds(box, ijk_to_ras)
    center = [(b[2 * a] + b[2 * a + 1]) / 2.0 for a in range(3)]
    size = [b[2 * a + 1] - b[2 * a] for a in range(3)]
    return center, size


def ras_bounds_to_pixel_box(bounds, ijk_to_ras, image_size):
    """RAS bounds ``[r_min, r_max, a_min, a_max, s_min, s_max]`` -> pixel box, clipped to the image.

    Args:
        bounds: axis-aligned box in RAS, mm (e.g. ``vtkMRMLMarkupsROINode.GetRASBounds``).
        ijk_to_ras: the image volume's 4x4 IJK->RAS matrix (nested lists).
        image_size: ``(width, height)`` in pixels (the volume's i and j dimensions).

    Returns:
        ``[x_min, y_min, x_max, y_max]`` ints, max exclusive: the pixels whose
        edges are nearest to the ROI's edges. The k extent of the ROI is ignored.

    Raises:
        ValueError: the bounds are malformed or the ROI does not overlap the image.
    """
    if len(bounds) != 6:
        raise ValueError(f"bounds must have 6 values [r_min, r_max, a_min, a_max, s_min, s_max], got {bounds!r}")
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size!r}")
    ras_to_ijk = invert_affine(ijk_to_ras)
    corners = [
        transform_point(ras_to_ijk, (r, a, s))
        for r in (bounds[0], bounds[1])
        for a in (bounds[2], bounds[3])
        for s in (bounds[4], bounds[5])
    ]
    i_min = min(c[0] for c in corners)
    i_max = max(c[0] for c in corners)
    j_min = min(c[1] for c in corners)
    j_max = max(c[1] for c in corners)
    # edge at continuous index e -> pixel boundary e + 0.5 (pixel i spans [i - 0.5, i + 0.5])
    x0 = math.floor(i_min + 0.5 + 0.5 - _EPS)
    x1 = math.floor(i_max + 0.5 + 0.5 - _EPS)
    y0 = math.floor(j_min + 0.5 + 0.5 - _EPS)
    y1 = math.floor(j_max + 0.5 + 0.5 - _EPS)
    x0, x1 = max(x0, 0), min(x1, width)
    y0, y1 = max(y0, 0), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"the box (RAS bounds {[round(v, 3) for v in bounds]}) does not overlap the {width}x{height} image"
        )
    return [int(x0), int(y0), int(x1), int(y1)]


def roi_to_pixel_box(center, size, ijk_to_ras, image_size):
    """Axis-aligned ROI ``(center, size)`` in RAS (mm) -> pixel box; see :func:`ras_bounds_to_pixel_box`."""
    if len(center) != 3 or len(size) != 3:
        raise ValueError(f"ROI center and size need 3 values, got {center!r}, {size!r}")
    bounds = []
    for c, s in zip(center, size):
        half = abs(float(s)) / 2.0
        bounds += [float(c) - half, float(c) + half]
    return ras_bounds_to_pixel_box(bounds, ijk_to_ras, image_size)
