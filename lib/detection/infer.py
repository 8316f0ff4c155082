"""Running a trained recess detector: one box per image, in the image's own pixels.

>>> detector = RecessDetector.load("runs/detector")
>>> found = detector.detect(image)          # image: (H, W) float in [0, 1]
>>> found.box, found.confidence if found else "nothing found"
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lib.data.records import Box
from lib.detection.model_files import load_model
from lib.detection.network import RecessNet, build_network, decode
from lib.detection.preprocess import check_image, network_image, original_box
from lib.detection.settings import DetectorSettings
from lib.training.model_folder import load_weights

DEFAULT_FLOOR = 0.5
"""Confidence floor of a model that has not been calibrated yet (only while it trains)."""


@dataclass(frozen=True)
class Detection:
    """The recess box found in one image.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` integer pixels of the original image, max exclusive
            (the ``labels.csv`` convention).
        confidence: the detector's confidence that this is the recess, in [0, 1] (the peak of its
            centre heatmap).
    """

    box: Box
    confidence: float

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "confidence": float(self.confidence)}


def predict(network: RecessNet, batch: torch.Tensor, flip_test: bool = False, vote: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(B, 4)`` on the input grid and confidences ``(B,)`` for a ``(B, 1, H', W')`` batch.

    With ``flip_test`` the horizontally flipped batch is run too; its boxes are flipped back and the two
    answers averaged (boxes and confidences). The network is put in eval mode.
    """
    network.eval()
    with torch.no_grad():
        boxes, confidences = decode(*network(batch), vote=vote)
        if flip_test:
            width = batch.shape[-1]
            flipped, flipped_conf = decode(*network(torch.flip(batch, dims=[-1])), vote=vote)
            unflipped = torch.stack([width - flipped[:, 2], flipped[:, 1], width - flipped[:, 0], flipped[:, 3]], 1)
            boxes, confidences = (boxes + unflipped) / 2, (confidences + flipped_conf) / 2
    return boxes.cpu().numpy().astype(np.float64), confidences.cpu().numpy().astype(np.float64)


BLANK_RANGE = 1.0 / 255.0
"""An image whose intensity range (max - min) is below this is blank: nothing can be found in it."""


def is_blank(image: np.ndarray) -> bool:
    """True for a ``(H, W)`` image in [0, 1] with (almost) constant intensity."""
    return float(image.max() - image.min()) < BLANK_RANGE


class RecessDetector:
    """A trained one-box recess detector (see :mod:`lib.detection.network`).

    Attributes:
        settings: the :class:`DetectorSettings` the model was trained with.
        score_threshold: boxes with a lower confidence are reported as "nothing found": the model's
            calibrated confidence floor, or ``settings.score_threshold`` when that is set.
        info: what ``model.pt`` says about its training (``epoch``, ``monitor``, ``validation``, ``calibration``,
            ``training``; :class:`lib.detection.model_files.DetectorBundle`).
    """

    def __init__(self, network: RecessNet, settings: DetectorSettings, device: torch.device | str = "cpu",
                 info: dict | None = None):
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.settings = settings
        self.info = info or {}
        floor = (self.info.get("calibration") or {}).get("confidence_floor", DEFAULT_FLOOR)
        self.score_threshold = float(settings.score_threshold if settings.score_threshold is not None else floor)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "RecessDetector":
        """Load the model of a folder written by :func:`lib.detection.train.train_detector`
        (:mod:`lib.detection.model_files`).

        Raises:
            ModelError: missing folder, corrupt/foreign/older model, or weights that do not fit the settings.
            NotTrainedError: the folder holds no trained detector yet.
        """
        bundle = load_model(model_dir)
        network = load_weights(build_network(bundle.settings), bundle.state_dict, model_dir, "detector weights")
        return cls(network, bundle.settings, device, bundle.info)

    def detect(self, image: np.ndarray, min_confidence: float | None = None) -> Detection | None:
        """The recess box of one ``(H, W)`` float image in [0, 1], or None when nothing reaches the threshold.

        A blank image (constant intensity, see :func:`is_blank`) always gives None.

        Args:
            image: grayscale image, ``(H, W)``, values in [0, 1] (as :func:`lib.data.imageio.read_image` gives).
            min_confidence: override of :attr:`score_threshold` (metrics use 0 to rank every image's best box).
        """
        return self.detect_batch([image], min_confidence=min_confidence)[0]

    def confidences(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[float | None]:
        """The confidence of the best box of each image (None for a blank image), whatever the threshold."""
        found = self.detect_batch(images, min_confidence=0.0, batch_size=batch_size)
        return [None if f is None else f.confidence for f in found]

    def detect_batch(self, images: Sequence[np.ndarray], min_confidence: float | None = None,
                     batch_size: int = 8) -> list[Detection | None]:
        """:meth:`detect` for several images (any sizes), ``batch_size`` at a time through the network."""
        threshold = self.score_threshold if min_confidence is None else float(min_confidence)
        shape = self.settings.input_shape
        checked = [check_image(im, f"image {i}") for i, im in enumerate(images)]
        results: list[Detection | None] = [None] * len(checked)
        # A blank image (intensity range under one 8-bit grey level) has no structure, hence no recess:
        # answer "nothing found" without asking the network, whose score there would be meaningless.
        todo = [i for i, im in enumerate(checked) if not is_blank(im)]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = torch.stack([network_image(checked[i], shape) for i in chunk]).to(self.device)
            boxes, confidences = predict(self.network, batch, self.settings.flip_test, self.settings.edge_vote)
            for i, box, confidence in zip(chunk, boxes, confidences):
                if confidence < threshold:
                    continue
                height, width = checked[i].shape
                results[i] = Detection(box=original_box(box, (width, height), shape), confidence=float(confidence))
        return results
