"""Where the recess box comes from in an evaluation: ``gt``, ``uniform`` or ``detected``.

- ``gt``: the annotated box, as in the paper's Table 1.
- ``uniform``: every box (train, validation and test) re-drawn to one size for
  the whole dataset, centred on the annotated box's centre and clipped to the
  image, so that neither the box's height nor its width can tell the class
  (a clinician draws a tall box around a distended recess and a flat one around
  a thin normal recess; see issue 9). The size is the ``height_percentile``
  (default 90th) of the annotated heights and the median annotated width, both
  as fractions of the image size, so that datasets with one image size get one
  size in pixels. The statistics use every annotated box of the dataset (box
  geometry only, never the labels).
- ``detected``: the box proposed by a recess detector trained on the fold's
  normal training images (paper's Table 2), through the pipeline's box step and
  box policy, as the server boxes an image; see :func:`detected_records`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lib.data.imageio import image_size
from lib.data.records import Box, Record
from lib.errors import DataError

BOX_MODES = ("gt", "uniform", "detected")


@dataclass(frozen=True)
class UniformBoxSize:
    """One box size for a dataset, as fractions of the image width and height.

    Attributes:
        width_fraction: box width / image width.
        height_fraction: box height / image height.
        height_percentile: the percentile of annotated heights it came from.
    """

    width_fraction: float
    height_fraction: float
    height_percentile: float = 90.0

    def pixels(self, width: int, height: int) -> tuple[int, int]:
        """``(box width, box height)`` in pixels for an image of ``width`` x ``height``, at least 1 px."""
        return (max(1, int(round(self.width_fraction * width))), max(1, int(round(self.height_fraction * height))))

    def to_dict(self) -> dict:
        return {"width_fraction": self.width_fraction, "height_fraction": self.height_fraction,
                "height_percentile": self.height_percentile, "width_statistic": "median"}


def check_box_mode(mode: str) -> str:
    if mode not in BOX_MODES:
        raise DataError(f"unknown box mode {mode!r}; valid box modes are {', '.join(BOX_MODES)}")
    return mode


def _sizes(records: list[Record]) -> dict[str, tuple[int, int]]:
    return {r.image: image_size(r.image_path) for r in records}


def uniform_box_size(records: list[Record], height_percentile: float = 90.0,
                     sizes: dict[str, tuple[int, int]] | None = None) -> UniformBoxSize:
    """The dataset's uniform box size: ``height_percentile`` of the box heights, median of the widths.

    Args:
        records: the dataset; records without a box are ignored.
        height_percentile: in [0, 100].
        sizes: ``{image name: (W, H)}`` if already known (else read from the image files).

    Raises:
        DataError: no record has a box, or the percentile is out of range.
    """
    if not 0.0 <= height_percentile <= 100.0:
        raise DataError(f"height_percentile must be in [0, 100], got {height_percentile}")
    boxed = [r for r in records if r.box is not None]
    if not boxed:
        raise DataError("uniform boxes need annotated boxes, and no image of the dataset has one")
    sizes = sizes if sizes is not None else _sizes(boxed)
    heights = np.array([(r.box[3] - r.box[1]) / sizes[r.image][1] for r in boxed])
    widths = np.array([(r.box[2] - r.box[0]) / sizes[r.image][0] for r in boxed])
    return UniformBoxSize(width_fraction=float(np.median(widths)),
                          height_fraction=float(np.percentile(heights, height_percentile)),
                          height_percentile=float(height_percentile))


def uniform_box(box: Box, width: int, height: int, size: UniformBoxSize) -> Box:
    """Re-draw ``box`` at the uniform size, centred on its centre, clipped to a ``width`` x ``height`` image.

    Away from the image border every box gets exactly ``size.pixels(width, height)``;
    near the border the clipped side is shorter.
    """
    bw, bh = size.pixels(width, height)
    cx = (box[0] + box[2]) / 2.0
    cy = (box[1] + box[3]) / 2.0
    # floor(c - b/2) keeps the size exactly b before clipping, for any centre.
    x0 = int(np.floor(cx - bw / 2.0))
    y0 = int(np.floor(cy - bh / 2.0))
    x1, y1 = x0 + bw, y0 + bh
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width), min(y1, height)
    return (x0, y0, x1, y1)


def uniform_records(records: list[Record], size: UniformBoxSize,
                    sizes: dict[str, tuple[int, int]] | None = None) -> list[Record]:
    """The records with every box re-drawn by :func:`uniform_box` (records without a box are kept as they are)."""
    sizes = sizes if sizes is not None else _sizes([r for r in records if r.box is not None])
    out = []
    for r in records:
        if r.box is None:
            out.append(r)
            continue
        w, h = sizes[r.image]
        out.append(replace(r, box=uniform_box(r.box, w, h, size)))
    return out


def detected_records(detector, records: list[Record], images: dict[str, np.ndarray], policy: str = "fail",
                     ) -> tuple[list[Record], list]:
    """Every record's box as the pipeline's box step gives it (:func:`lib.pipeline.resolve_boxes`): the
    detector's box with its calibrated confidence floor, and ``policy`` where it finds none.

    Args:
        detector: a ``lib.detection`` ``RecessDetector``.
        records: the images to box (their annotated boxes are never used).
        images: ``{image name: (H, W) float [0, 1]}`` of every record.
        policy: the box policy. ``fail`` (the server's) and ``skip`` leave an image without a box
            (the server answers 409 for it); ``whole_image`` boxes the whole image.

    Returns:
        ``(records, choices)``: the records with the chosen boxes (``box`` None where the policy left the image
        without one) and the :class:`lib.pipeline.BoxChoice` of each.
    """
    from lib.pipeline import resolve_boxes

    batch_policy = "skip" if policy == "fail" else policy  # a batch records "no answer" instead of raising
    choices = resolve_boxes([images[r.image] for r in records], None, lambda: detector, batch_policy,
                            [r.image for r in records])
    return [replace(r, box=c.box) for r, c in zip(records, choices)], choices
