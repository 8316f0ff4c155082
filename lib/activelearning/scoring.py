"""``loris_scoring``: score every unlabelled image with the current LoRIS model, for active learning.

MONAI Label runs scoring methods in a background process (at start, after a
training and after each active-learning request, unless
``MONAI_LABEL_AUTO_UPDATE_SCORING=false``; ``POST /scoring/loris_scoring`` runs it
on demand). For each unlabelled image whose stored score is not from the current
model, the pipeline (:mod:`lib.pipeline`, box policy ``skip``) takes the box stored
in the image info (an imported box), else the recess detector's; images get scored
``batch_size`` at a time with one forward pass per batch, and each batch is written
to the datastore in one locked update.

Stored in the image info under ``"loris"``::

    {"score": float, "threshold": float, "distended": bool, "metric": str,
     "box": [x0, y0, x1, y1], "box_source": "image_info" | "detector",
     "frame": int, "model_version": str, "ts": unix time}

A DICOM cine loop is scored frame by frame (its frames share the batches) and stored
with its most anomalous frame's score, box and ``frame`` (0 = the first), as the
``loris`` infer task answers it. Images without a stored box and without a detector
box are skipped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.utils.others.generic import name_to_device

from lib.data.imageio import read_image_file
from lib.errors import LorisError, ModelError
from lib.infers.loris import predictor_cache
from lib.infers.recess_detection import detector_cache
from lib.pipeline import Pipeline

logger = logging.getLogger(__name__)

INFO_KEY = "loris"


class LorisScoring(ScoringMethod):
    """Score unlabelled images (see the module docstring)."""

    def __init__(self, model_dir: Path, detector_dir: Path, batch_size: int = 8):
        super().__init__("LoRIS anomaly score of every unlabelled image (box from image info or detector)")
        self.model_dir = Path(model_dir)
        self.detector_dir = Path(detector_dir)
        self.batch_size = batch_size

    def info(self):
        return {"description": self.description, "config": {"batch_size": self.batch_size}}

    def __call__(self, request, datastore: Datastore):
        started = time.time()
        predictors = predictor_cache(self.model_dir)
        version = predictors.version()
        if version is None:
            logger.info("loris_scoring: no LoRIS model yet; nothing scored")
            return {"scored": 0, "skipped": 0, "reason": "loris is not trained yet"}
        todo = [
            image_id for image_id in sorted(datastore.get_unlabeled_images())
            if datastore.get_image_info(image_id).get(INFO_KEY, {}).get("model_version") != version
        ]
        if not todo:
            return {"scored": 0, "skipped": 0, "model_version": version}
        device = name_to_device(request.get("device"))
        try:
            predictor = predictors.get(device)
            metric = predictor.settings.metric
            threshold, _ = predictor.thresholds(metric)
        except ModelError as exc:  # not trained or not calibrated yet
            logger.warning(f"loris_scoring: {exc}")
            return {"scored": 0, "skipped": len(todo), "reason": str(exc)}
        detectors = detector_cache(self.detector_dir)
        pipeline = Pipeline(predictor, lambda: detectors.get(device))
        batch_size = max(1, int(request.get("batch_size", self.batch_size)))
        scored = skipped = 0
        for start in range(0, len(todo), batch_size):
            ids, images, boxes, owners = [], [], [], []  # owners[k]: (image id, frame) of images[k]
            for image_id in todo[start:start + batch_size]:
                try:
                    frames = read_image_file(datastore.get_image_uri(image_id)).frames
                except LorisError as exc:
                    logger.warning(f"loris_scoring: skipping {image_id}: {exc}")
                    skipped += 1
                    continue
                ids.append(image_id)
                box = datastore.get_image_info(image_id).get("box")
                for k, frame in enumerate(frames):
                    images.append(frame)
                    boxes.append(box)
                    owners.append((image_id, k))
            names = [f"image {i!r} info" for i, _ in owners]
            try:
                results = pipeline.scores(images, boxes, policy="skip", names=names, given_source="image_info",
                                          batch_size=batch_size)
            except LorisError as exc:  # a stored box that does not fit its image: score the frames one by one
                results = []
                for name, image, box in zip(names, images, boxes):
                    try:
                        results += pipeline.scores([image], [box], "skip", [name], "image_info")
                    except LorisError as one:
                        logger.warning(f"loris_scoring: skipping {name}: {one}")
                        results.append((None, None))
            best: dict = {}  # image id -> (score, frame, box choice) of its most anomalous frame
            for (image_id, k), (choice, score) in zip(owners, results):
                if score is not None and (image_id not in best or score > best[image_id][0]):
                    best[image_id] = (score, k, choice)
            now = int(time.time())
            infos = {
                image_id: {INFO_KEY: {
                    "score": score, "threshold": threshold, "distended": bool(score >= threshold),
                    "metric": metric, "box": [int(v) for v in choice.box], "box_source": choice.source,
                    "frame": k, "model_version": version, "ts": now,
                }}
                for image_id, (score, k, choice) in best.items()
            }
            skipped += len(ids) - len(infos)
            if infos:
                scored += datastore.update_image_infos(infos)
        summary = {"scored": scored, "skipped": skipped, "model_version": version,
                   "seconds": round(time.time() - started, 2)}
        logger.info(f"loris_scoring: {summary}")
        return summary
