"""The ``loris`` and ``loris_anomaly_map`` infer tasks: a thin MONAI Label wrapper over :class:`LorisPredictor`.

``POST /infer/loris?image=<id>`` with form field ``params`` = JSON:

* ``box`` ``[x_min, y_min, x_max, y_max]`` (pixels, max exclusive) or its synonym
  ``roi`` (see :mod:`lib.infers.params`); without either, ``recess_detection``
  proposes the box (the fully automatic pipeline, :mod:`lib.pipeline`, box policy
  ``fail``). No box and no trained detector, or no recess found: HTTP 409 with a
  message.
* ``metric`` (optional): one of the calibrated anomaly-map metrics; empty = the model's.
* ``frame`` (optional): the frame of a DICOM cine loop to run (0 = the first). Without it a
  loop is scored whole, in batches, and the answer is of its most anomalous frame
  (``frame``, with every frame's score in ``frame_scores``); see :mod:`lib.pipeline`.

Answer (multipart: ``params`` JSON + the label file):

* ``loris``: the segmentation, a PNG ``uint8`` 0/1 of the image's ``H x W``;
* ``loris_anomaly_map``: the float32 anomaly map of the image's ``H x W`` as NRRD
  (x = column, y = row, origin 0, identity direction; the same pixel grid as the image;
  spacing = the image's ``pixel_spacing_mm``, 1 when unknown).

and the JSON params of both: ``score``, ``distended`` (the decision), ``threshold``,
``metric`` (of the score), ``pixel_metric`` (of the map and segmentation),
``pixel_threshold``, ``display_range`` ``[low, high]`` (map values for a colour
scale, the same for every image of the model), ``box`` (the box used),
``box_source`` (``"request"`` | ``"detector"``), ``detector_confidence`` (None
for a requested box), ``image_size`` ``[W, H]``, ``pixel_spacing_mm`` ``[x, y]`` (mm per
pixel from a calibrated DICOM, else null) and ``spacing_source``, ``measurements``
(``area_mm2``, ``max_thickness_mm``, see :mod:`lib.loris.measurements`), ``frame``,
``frame_count``, ``frame_scores``, ``model_version``. Without a
``metric`` param the score is the model's ``metric`` (MSGMSD) and the map and
segmentation its ``pixel_metric`` (DD); with one, everything is of that metric.

``loris_anomaly_map`` also carries the segmentation in its params, as
``mask_png_base64``: the base64 of the same 0/1 PNG ``loris`` answers with. One
request then gives a client everything one click needs (score, decision, map and
segmentation) from one network forward.

A model that is not trained yet is still listed in ``/info`` (MONAI Label hides
infer tasks whose ``is_valid()`` is False) and answers 409 "not trained yet".
The model is loaded once and reloaded when its directory changes (retraining).
"""

from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.utils.others.generic import name_to_device

from lib.data.imageio import encode_png_unfiltered, write_png
from lib.errors import DataError
from lib.infers.base import DatastoreImageInfer
from lib.infers.http_errors import user_errors
from lib.infers.model_cache import ModelCache
from lib.infers.params import request_box
from lib.infers.recess_detection import detector_cache
from lib.loris.predictor import LorisPredictor, write_nrrd
from lib.pipeline import Pipeline

logger = logging.getLogger(__name__)

OUTPUTS = ("segmentation", "anomaly_map")


def load_predictor(model_dir: Path, device: str):
    """The :class:`LorisPredictor` of ``model_dir`` (what the infer tasks serve; also checks uploaded models)."""
    return LorisPredictor.load(model_dir, device=device)


def predictor_cache(model_dir: Path) -> ModelCache:
    """The shared loaded :class:`LorisPredictor` of ``model_dir`` (infer tasks and scoring use the same)."""
    return ModelCache.for_dir(model_dir, load_predictor, "loris")


class LorisInfer(DatastoreImageInfer):
    """LoRIS inference on one image: segmentation (``output="segmentation"``) or anomaly map."""

    task_name = "loris"

    def __init__(self, model_dir: Path, detector_dir: Path, datastore_root: Path, output: str = "segmentation",
                 description: str = "LoRIS: anomaly score, decision and segmentation of the recess box"):
        if output not in OUTPUTS:
            raise DataError(f"LorisInfer output {output!r}; valid outputs are {', '.join(OUTPUTS)}")
        super().__init__(
            path=str(Path(model_dir) / "model.pt"),
            network=None,
            type=InferType.SEGMENTATION if output == "segmentation" else InferType.OTHERS,
            labels={"distended": 1},
            dimension=2,
            description=description,
            config={"box": [], "metric": "", "frame": ""},
        )
        self.output = output
        self.model_dir = Path(model_dir)
        self.datastore_root = Path(datastore_root)
        self._predictor = predictor_cache(self.model_dir)
        self._detector = detector_cache(Path(detector_dir))

    def _read(self, data: Dict[str, Any]) -> Dict[str, Any]:
        data = super()._read(data)
        height, width = data["image"].shape
        with user_errors("loris"):
            data["box"] = request_box(data, width, height)
            metric = data.get("metric")
            if isinstance(metric, list):
                metric = metric[0] if metric else None
            if metric is not None and not isinstance(metric, str):
                raise DataError(f"params.metric: expected a metric name, got {metric!r}")
            data["metric"] = metric or None
        return data

    def run_inferer(self, data: Dict[str, Any], convert_to_batch=True, device="cuda"):
        device = name_to_device(device)
        with user_errors("loris"):
            pipeline = Pipeline(self._predictor.get(device), lambda: self._detector.get(device))
            result = pipeline.run_file(data["image_file"], data["box"], policy="fail", metric=data["metric"],
                                       frame=data["frame"], name="the image", with_reconstruction=False)
        data["pixel_spacing_mm"] = result.pixel_spacing_mm
        data["prediction"] = result.prediction
        data["result"] = {**result.to_json(), "model_version": self._predictor.version()}
        return data

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        prediction = data["prediction"]
        label = np.asarray(prediction.mask, dtype=bool).astype(np.uint8)  # label value 1 = distended
        result = dict(data["result"])
        if self.output == "segmentation":
            path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
            write_png(path, label, compress_level=1, row_filters=False)
        else:
            path = tempfile.NamedTemporaryFile(suffix=".nrrd", delete=False).name
            write_nrrd(path, np.asarray(prediction.anomaly_map, dtype=np.float32), data["pixel_spacing_mm"])
            result["mask_png_base64"] = base64.b64encode(encode_png_unfiltered(label, 1)).decode("ascii")
        return path, result
