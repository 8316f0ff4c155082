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
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

from lib.data.records import Box
from lib.detection.model_files import load_best
from lib.detection.network import build_detector, build_network
from lib.detection.preprocess import check_image, network_image, original_box
from lib.detection.settings import DetectorSettings
from lib.errors import ModelError


@dataclass(frozen=True)
class Detection:
    """The recess box found in one image.

    Attributes:
        box: ``(x_min, y_min, x_max, y_max)`` integer pixels of the original image, max exclusive
            (the ``labels.csv`` convention).
        confidence: the detector's score of that box, in [0, 1].
    """

    box: Box
    confidence: float

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "confidence": float(self.confidence)}


def run_network(detector: RetinaNetDetector, batch: torch.Tensor) -> list[tuple[np.ndarray, float] | None]:
    """Best network-grid box and its score for each ``(1, S, S)`` image of ``batch`` ``(B, 1, S, S)``.

    Returns, per image, ``(float box (4,) on the S x S grid, score)`` for the
    highest-scoring box after NMS, or None when no candidate passed the
    detector's box-selector floor. The detector is put in eval mode.
    """
    detector.eval()
    with torch.no_grad():
        outputs = detector(batch)
    best = []
    for out in outputs:
        scores = out[detector.pred_score_key]
        if scores.numel() == 0:
            best.append(None)
            continue
        i = int(torch.argmax(scores))
        best.append((out[detector.target_box_key][i].detach().cpu().numpy().astype(np.float64), float(scores[i])))
    return best


BLANK_RANGE = 1.0 / 255.0
"""An image whose intensity range (max - min) is below this is blank: nothing can be found in it."""


def is_blank(image: np.ndarray) -> bool:
    """True for a ``(H, W)`` image in [0, 1] with (almost) constant intensity."""
    return float(image.max() - image.min()) < BLANK_RANGE


class RecessDetector:
    """A trained RetinaNet recess detector (see :mod:`lib.detection.network`).

    Attributes:
        settings: the :class:`DetectorSettings` the model was trained with.
        score_threshold: boxes with a lower confidence are reported as "nothing found".
        info: what ``model.pt`` says about its training (epoch, monitor, validation metrics).
    """

    def __init__(self, detector: RetinaNetDetector, settings: DetectorSettings, device: torch.device, info: dict | None = None):
        self.detector = detector.to(device).eval()
        self.settings = settings
        self.device = device
        self.score_threshold = settings.score_threshold
        self.info = info or {}

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "RecessDetector":
        """Load the best checkpoint of a model directory written by :func:`lib.detection.train.train_detector`.

        Raises:
            ModelError: missing directory, corrupt/foreign/old checkpoint, or weights that do not fit the settings.
            NotTrainedError: the directory holds no trained detector yet.
        """
        data = load_best(model_dir)
        settings = DetectorSettings.from_dict(data["settings"], where=f"{model_dir}: saved detector settings")
        network = build_network(settings)
        try:
            network.load_state_dict(data["network"])
        except RuntimeError as exc:
            raise ModelError(f"{model_dir}: detector weights do not match their settings ({exc})") from None
        info = {k: v for k, v in data.items() if k not in ("network", "settings")}
        return cls(build_detector(settings, network), settings, torch.device(device), info)

    def detect(self, image: np.ndarray, min_confidence: float | None = None) -> Detection | None:
        """The recess box of one ``(H, W)`` float image in [0, 1], or None when nothing reaches the threshold.

        A blank image (constant intensity, see :func:`is_blank`) always gives None.

        Args:
            image: grayscale image, ``(H, W)``, values in [0, 1] (as :func:`lib.data.imageio.read_image` gives).
            min_confidence: override of :attr:`score_threshold` (metrics use 0 to rank every image's best box).
        """
        return self.detect_batch([image], min_confidence=min_confidence)[0]

    def detect_batch(self, images: Sequence[np.ndarray], min_confidence: float | None = None,
                     batch_size: int = 8) -> list[Detection | None]:
        """:meth:`detect` for several images (any sizes), ``batch_size`` at a time through the network."""
        threshold = self.score_threshold if min_confidence is None else float(min_confidence)
        size = self.settings.image_size
        checked = [check_image(im, f"image {i}") for i, im in enumerate(images)]
        results: list[Detection | None] = [None] * len(checked)
        # A blank image (intensity range under one 8-bit grey level) has no structure, hence no recess:
        # answer "nothing found" without asking the network, whose score there would be meaningless.
        todo = [i for i, im in enumerate(checked) if not is_blank(im)]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = torch.stack([network_image(checked[i], size) for i in chunk]).to(self.device)
            for i, best in zip(chunk, run_network(self.detector, batch)):
                if best is None or best[1] < threshold:
                    continue
                height, width = checked[i].shape
                results[i] = Detection(box=original_box(best[0], (width, height), size), confidence=best[1])
        return results
