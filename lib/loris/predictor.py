"""LoRIS inference: a predictor loaded once, and the files of one run.

:class:`LorisPredictor` keeps the network in memory. One forward pass gives
the reconstruction; every requested metric's anomaly map, score and mask are
computed from it (:meth:`LorisPredictor.predict_batch`). Scores are pooled on
the network grid (as in calibration); maps, reconstructions and masks are
returned in the original image geometry.

:func:`write_outputs` writes a prediction's files (:func:`lib.pipeline.run_inference`
runs an image file through the pipeline and calls it), for one image: ``reconstruction.png`` (8-bit, ``[0, 1]``),
``anomaly_map.nrrd`` (float32, the image's pixel grid: x = column, y = row,
origin 0, spacing the image's pixel spacing in mm when known, else 1), ``mask.png`` (0/255),
``segmentation.nrrd`` (the same mask as uint8 0/1 on the map's grid, spacing included) and
``result.json``. The images are
written under temporary names and renamed into place once all of them are
written; nothing is written when the prediction fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from lib.data.atomic import atomic_path
from lib.data.imageio import encode_png_unfiltered, png_pixels
from lib.data.records import Box, validate_box
from lib.errors import DataError, NotTrainedError
from lib.loris import preprocess
from lib.loris.anomaly import anomaly_maps, check_metric
from lib.loris.model_files import load_model
from lib.loris.network import InferenceNetwork, build_network
from lib.loris.postprocess import box_region, image_scores, segment
from lib.loris.reconstruction import reconstruct
from lib.loris.settings import LorisSettings
from lib.training.devices import resolve_device
from lib.training.model_folder import load_weights
from lib.training.precision import autocast, check_precision

logger = logging.getLogger(__name__)

FORWARD_LOG = "LoRIS network forward"
"""Each forward pass logs a line starting with this (INFO): how many forwards a request cost can be counted."""

OUTPUT_FILES = {
    "reconstruction": "reconstruction.png",
    "anomaly_map": "anomaly_map.nrrd",
    "mask": "mask.png",
    "segmentation": "segmentation.nrrd",
    "result": "result.json",
}


@dataclass
class Prediction:
    """LoRIS output for one image, in the image's own geometry.

    Attributes:
        box: the recess box used (original pixels).
        reconstruction: ``(H, W)`` float32 in ``[0, 1]``; None when not asked for.
        anomaly_map: ``(H, W)`` float32 (0 = normal), of ``pixel_metric``.
        score: the ``metric`` map pooled as the settings say (on the network grid).
        distended: ``score >= threshold``.
        mask: ``(H, W)`` bool segmentation of ``anomaly_map``.
        threshold, pixel_threshold: the calibrated thresholds used (of ``metric`` and ``pixel_metric``).
        metric: the metric of the score and decision.
        pixel_metric: the metric of the anomaly map and segmentation (None: the same as ``metric``).
        display_range: ``[low, high]`` map values for a colour scale, the same for every image of the model
            (from its calibration); None when the calibration has none.
    """

    box: Box
    reconstruction: np.ndarray | None
    anomaly_map: np.ndarray
    score: float
    distended: bool
    mask: np.ndarray
    threshold: float
    pixel_threshold: float
    metric: str
    pixel_metric: str | None = None
    display_range: list | None = None

    def __post_init__(self) -> None:
        if self.pixel_metric is None:
            self.pixel_metric = self.metric

    def with_pixels_of(self, other: "Prediction") -> "Prediction":
        """This prediction's score and decision with ``other``'s anomaly map and segmentation (same image)."""
        return dataclasses.replace(self, anomaly_map=other.anomaly_map, mask=other.mask,
                                   pixel_threshold=other.pixel_threshold, pixel_metric=other.pixel_metric,
                                   display_range=other.display_range)

    def to_json(self) -> dict:
        """The scalar part as JSON-ready values (vocabulary of the REST API)."""
        return {
            "score": self.score,
            "distended": self.distended,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "metric": self.metric,
            "pixel_metric": self.pixel_metric,
            "display_range": self.display_range,
            "box": [int(v) for v in self.box],
        }


@dataclass
class NetworkOutputs:
    """One batch on the network grid.

    Attributes:
        x: ``(B, 1, S, S)`` input images in ``[-1, 1]`` (unmasked).
        grid_boxes: ``(B, 4)`` boxes on the grid.
        reconstruction: ``(B, 1, S, S)`` in ``[-1, 1]`` (RIAD: mean of the cell sizes' reconstructions).
        maps: ``{metric: (B, 1, S, S)}`` anomaly maps (RIAD: mean over the cell sizes).
        scores: ``{metric: (B,)}`` pooled as the settings say (``pooling`` over ``score_region``).
    """

    x: torch.Tensor
    grid_boxes: torch.Tensor
    reconstruction: torch.Tensor
    maps: dict
    scores: dict


class LorisPredictor:
    """A LoRIS model ready to predict: network in eval mode on ``device``, settings, calibration.

    Args:
        network: a :class:`~lib.loris.network.LorisNetwork` with trained weights.
        settings: the model's settings.
        calibration: ``{metric: {"threshold", "pixel_threshold", ...}}``, or None before calibration
            (then only :meth:`network_outputs` and :meth:`score_batch` work).
        device: where to run.
        optimize: serve a frozen :class:`~lib.loris.network.InferenceNetwork` copy (batch norms folded,
            channels-last; same outputs within float32 rounding, faster); False = ``network`` itself in eval mode.
        precision: the network's forward in ``float32`` (default) or ``bf16``/``fp16`` autocast
            (:mod:`lib.training.precision`; GPUs); the maps and scores are computed in float32 either way.
    """

    def __init__(self, network: torch.nn.Module, settings: LorisSettings, calibration: dict | None = None,
                 device: str | torch.device = "cpu", optimize: bool = True, precision: str = "float32") -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        network = network.to(self.device).eval()
        self.network = InferenceNetwork(network) if optimize else network
        self.settings = settings
        self.calibration = calibration

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu",
             precision: str = "float32") -> "LorisPredictor":
        """Load ``model_dir`` once (raises ModelError / NotTrainedError, see :mod:`lib.loris.model_files`)."""
        bundle = load_model(model_dir)
        network = load_weights(build_network(bundle.settings), bundle.state_dict, model_dir)
        return cls(network, bundle.settings, bundle.calibration, device, precision=precision)

    # --- thresholds -----------------------------------------------------------------------------------------
    def thresholds(self, metric: str) -> tuple[float, float]:
        """``(threshold, pixel_threshold)`` of ``metric``; NotTrainedError when the model is not calibrated."""
        entry = self._calibration_entry(metric)
        return float(entry["threshold"]), float(entry["pixel_threshold"])

    def display_range(self, metric: str) -> list[float] | None:
        """``[low, high]`` of ``metric``'s map for a colour scale, from the calibration (see
        :mod:`lib.loris.calibration`)."""
        value = self._calibration_entry(metric).get("display_range")
        return [float(v) for v in value] if value else None

    def _calibration_entry(self, metric: str) -> dict:
        check_metric(metric)
        entry = (self.calibration or {}).get(metric)
        if not entry:
            raise NotTrainedError(f"the model has no calibrated thresholds for metric {metric!r}")
        return entry

    # --- network grid ---------------------------------------------------------------------------------------
    def network_outputs(self, images: Sequence[np.ndarray], boxes: Sequence[Box], metrics=None) -> NetworkOutputs:
        """One forward pass for a batch of images ``(H, W)`` in ``[0, 1]`` and their boxes (original pixels)."""
        metrics = tuple(metrics or (self.settings.metric,))
        x, grid_boxes = preprocess.batch(images, boxes, self.settings.image_size)
        x, grid_boxes = x.to(self.device), grid_boxes.to(self.device)
        generator = torch.Generator().manual_seed(self.settings.seed)  # RIAD masks: same result every call
        logger.info(f"{FORWARD_LOG}: {x.shape[0]} image(s) at {x.shape[-1]} px")
        with torch.inference_mode():
            with autocast(self.precision, self.device):
                recons = reconstruct(self.network, x, grid_boxes, self.settings, generator=generator)
            recons = [r.float() for r in recons]
            maps = None
            for r in recons:
                m = anomaly_maps(x, r, metrics)
                maps = m if maps is None else {k: maps[k] + m[k] for k in metrics}
            if len(recons) > 1:
                maps = {k: v / len(recons) for k, v in maps.items()}
            recon = recons[0] if len(recons) == 1 else torch.stack(recons).mean(dim=0)
            scores = {k: image_scores(v, grid_boxes, self.settings.pooling, self.settings.score_region)
                      for k, v in maps.items()}
        return NetworkOutputs(x, grid_boxes, recon, maps, scores)

    def batches(self, images: Sequence[np.ndarray], boxes: Sequence[Box], metrics=None,
                batch_size: int = 16) -> Iterator[tuple[int, NetworkOutputs]]:
        """The one batched loop over many images: ``(start index, NetworkOutputs)`` per ``batch_size`` images.

        Training's calibration, inference, scoring and the evaluation all go through it.
        """
        metrics = tuple(metrics or (self.settings.metric,))
        for start in range(0, len(images), batch_size):
            yield start, self.network_outputs(images[start:start + batch_size], boxes[start:start + batch_size], metrics)

    def score_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box], metrics=None,
                    batch_size: int = 16) -> dict[str, np.ndarray]:
        """Image scores ``{metric: (N,)}`` of many images, ``batch_size`` per forward pass (active learning)."""
        metrics = tuple(metrics or (self.settings.metric,))
        out = {m: [] for m in metrics}
        for _, res in self.batches(images, boxes, metrics, batch_size):
            for m in metrics:
                out[m].append(res.scores[m].float().cpu().numpy())
        return {m: np.concatenate(v) if v else np.zeros(0, np.float32) for m, v in out.items()}

    # --- original geometry ----------------------------------------------------------------------------------
    def predict_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box], metrics=None,
                      batch_size: int = 16, with_reconstruction: bool = True) -> list[dict[str, Prediction]]:
        """Predictions for many images, every requested metric from one forward pass per batch.

        Args:
            images: ``(H, W)`` float arrays in ``[0, 1]`` (sizes may differ).
            boxes: one box per image, original pixels (validated).
            metrics: metrics to return (default: the model's metric).
            with_reconstruction: False skips bringing the reconstruction back to the image geometry
                (``Prediction.reconstruction`` is None; a server answering with the mask only).

        Returns:
            one ``{metric: Prediction}`` per image.
        """
        metrics = tuple(check_metric(m) for m in (metrics or (self.settings.metric,)))
        if len(images) != len(boxes):
            raise DataError(f"{len(images)} images but {len(boxes)} boxes")
        thresholds = {m: self.thresholds(m) for m in metrics}
        checked = []
        for i, (img, box) in enumerate(zip(images, boxes)):
            img = np.asarray(img, dtype=np.float32)
            if img.ndim != 2:
                raise DataError(f"image {i}: expected a 2D (H, W) image, got shape {img.shape}")
            checked.append(validate_box(box, img.shape[1], img.shape[0], f"image {i} box"))
        results: list[dict[str, Prediction]] = []
        arrays = [np.asarray(im, dtype=np.float32) for im in images]
        for start, res in self.batches(arrays, checked, metrics, batch_size):
            chunk, cboxes = arrays[start:start + batch_size], checked[start:start + batch_size]
            for j, (img, box) in enumerate(zip(chunk, cboxes)):
                h, w = img.shape
                recon = _unit_image(res.reconstruction[j], (h, w)) if with_reconstruction else None
                region = box_region(box, h, w) if self.settings.segment_in_box else None
                per_metric = {}
                for m in metrics:
                    thr, pthr = thresholds[m]
                    amap = preprocess.to_original(res.maps[m][j], (w, h))
                    score = float(res.scores[m][j])
                    per_metric[m] = Prediction(
                        box=box, reconstruction=recon, anomaly_map=amap, score=score, distended=bool(score >= thr),
                        mask=segment(amap, pthr, region), threshold=thr, pixel_threshold=pthr, metric=m,
                        display_range=self.display_range(m),
                    )
                results.append(per_metric)
        return results

    def predict_served(self, images: Sequence[np.ndarray], boxes: Sequence[Box], metric: str | None = None,
                       with_reconstruction: bool = True, batch_size: int = 16) -> list[Prediction]:
        """What the model serves for each image, one forward pass per batch.

        ``metric`` None: the score and decision of ``settings.metric`` with the anomaly map and segmentation of
        ``settings.pixel_metric``; a ``metric``: everything of that metric.
        """
        if metric:
            return [p[metric] for p in self.predict_batch(images, boxes, (metric,), batch_size, with_reconstruction)]
        score_metric, pixel_metric = self.settings.metric, self.settings.pixel_metric
        both = self.predict_batch(images, boxes, tuple(dict.fromkeys((score_metric, pixel_metric))), batch_size,
                                  with_reconstruction)
        return [p[score_metric].with_pixels_of(p[pixel_metric]) for p in both]

    def predict(self, image: np.ndarray, box: Box, metric: str | None = None,
                with_reconstruction: bool = True) -> Prediction:
        """LoRIS on one image ``(H, W)`` in ``[0, 1]`` with its recess ``box`` (original pixels): what
        :meth:`predict_served` gives for it."""
        return self.predict_served([image], [box], metric, with_reconstruction)[0]


def _unit_image(recon: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A grid reconstruction ``(1, S, S)`` in ``[-1, 1]`` -> float32 ``(H, W)`` in ``[0, 1]`` (resized, clipped)."""
    h, w = shape
    t = preprocess.resize(recon.reshape(1, 1, *recon.shape[-2:]).float(), (h, w))[0, 0]
    return preprocess.to_unit_range(t).clamp_(0.0, 1.0).cpu().numpy()


def _nrrd_fields(pixel_spacing_mm=None) -> dict:
    """NRRD fields of a map or mask besides type and sizes: x = column, y = row, origin 0, raw samples, and
    ``space directions`` diag(x spacing, y spacing) in mm (1, 1 when the spacing is unknown)."""
    sx, sy = (float(v) for v in pixel_spacing_mm) if pixel_spacing_mm is not None else (1.0, 1.0)
    return {"space dimension": 2, "space directions": np.diag([sx, sy]), "kinds": ["domain", "domain"],
            "endian": "little", "encoding": "raw", "space origin": np.zeros(2)}


def _write_map_file(path: str | os.PathLike, array: np.ndarray, pixel_spacing_mm=None) -> None:
    # pynrrd writes the header and the samples as they are: ~0.5 ms less than SimpleITK for 640 x 480.
    # Raw: ~10x faster to write than gzip; anomaly maps barely compress.
    import nrrd

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"an anomaly map is a 2D (H, W) array, got shape {array.shape}")
    nrrd.write(str(path), array, _nrrd_fields(pixel_spacing_mm), index_order="C")


def _write_segmentation_file(path: str | os.PathLike, mask: np.ndarray, pixel_spacing_mm=None) -> None:
    # uint8 0/1, gzip level 1: a mask compresses to a few kB in about a millisecond
    import nrrd

    fields = {**_nrrd_fields(pixel_spacing_mm), "encoding": "gzip"}
    nrrd.write(str(path), np.ascontiguousarray(mask, dtype=np.uint8), fields, index_order="C", compression_level=1)


def _write_reconstruction_file(path: str | os.PathLike, reconstruction: np.ndarray) -> None:
    # stored (zlib level 0, rows unfiltered): speckle barely compresses; level 1 took ~20x longer on 640 x 480
    Path(path).write_bytes(encode_png_unfiltered(png_pixels(reconstruction), 0))


def _write_mask_file(path: str | os.PathLike, mask: np.ndarray) -> None:
    # 0/255, zlib level 1, rows unfiltered: a few kB
    Path(path).write_bytes(encode_png_unfiltered(png_pixels(np.asarray(mask, dtype=bool)), 1))


def write_nrrd(path: str | os.PathLike, array: np.ndarray, pixel_spacing_mm=None) -> None:
    """Write a float32 ``(H, W)`` map atomically as raw NRRD: x = column, y = row, origin 0, spacing
    ``pixel_spacing_mm`` ``(x, y)`` in mm (1 when None)."""
    with atomic_path(path, suffix=".nrrd") as tmp:
        _write_map_file(tmp, array, pixel_spacing_mm)


def result_dict(prediction: Prediction, extra: dict | None = None) -> dict:
    """The ``result.json`` content of ``prediction``: its scalars, ``extra``, the file names, ``mask_pixels``."""
    result = {**prediction.to_json(), **(extra or {}), "files": dict(OUTPUT_FILES)}
    result["mask_pixels"] = int(np.count_nonzero(prediction.mask))
    return result


_BACKGROUND: ThreadPoolExecutor | None = None


def _background() -> ThreadPoolExecutor:
    global _BACKGROUND
    if _BACKGROUND is None:
        _BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loris-write")
    return _BACKGROUND


def write_outputs(prediction: Prediction, out_dir: str | os.PathLike, extra: dict | None = None,
                  pixel_spacing_mm=None) -> dict:
    """Write a prediction's files into ``out_dir``; returns the ``result.json`` dict.

    ``pixel_spacing_mm`` ``(x, y)``: the image's pixel spacing, carried by the NRRD files' space directions.

    Every file is written under a hidden temporary name in ``out_dir``; then the image files are
    renamed onto their names in :data:`OUTPUT_FILES`, and ``result.json`` last. If a write fails, no
    file of this run appears (an earlier run's files in ``out_dir`` stay as they were) and no temporary
    file is left. The reconstruction is encoded and written on a worker thread while this one writes
    the map, the mask and the result (zlib and file writes release the GIL).
    """
    if prediction.reconstruction is None:
        raise ValueError("write_outputs needs the reconstruction: predict with with_reconstruction=True")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    temporary = {kind: out_dir / f".{name}.{token}.tmp{Path(name).suffix}" for kind, name in OUTPUT_FILES.items()}
    try:
        job = _background().submit(_write_reconstruction_file, temporary["reconstruction"], prediction.reconstruction)
        try:
            _write_map_file(temporary["anomaly_map"], prediction.anomaly_map, pixel_spacing_mm)
            _write_mask_file(temporary["mask"], prediction.mask)
            _write_segmentation_file(temporary["segmentation"], prediction.mask, pixel_spacing_mm)
            result = result_dict(prediction, extra)
            temporary["result"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        finally:
            job.result()  # waited for even when a write here failed, so that its file can be removed
        for kind, tmp in temporary.items():  # result.json last; fails only when a folder is in the way
            os.replace(tmp, out_dir / OUTPUT_FILES[kind])
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    return result
