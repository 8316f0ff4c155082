"""Active-learning strategies that pick the next unlabelled image for the clinician.

Both read the scores :mod:`lib.activelearning.scoring` stores in the image info
(``info["loris"]``) and never run a model themselves. The order is documented
and deterministic:

* ``loris_uncertain``: smallest ``|score - threshold|`` first (the model's least
  certain decision), ties by image id;
* ``loris_most_anomalous``: highest ``score`` first (distended recesses are rare:
  find them fast), ties by image id.

Unlabelled images without a score yet come after every scored one, by image id.
The answer is ``{"id", "score", "threshold", "distended", "scored"}`` (score fields
None for an unscored image); no unlabelled image left: ``{}``.
"""

from __future__ import annotations

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.activelearning.scoring import INFO_KEY

ORDERS = ("uncertain", "most_anomalous")


class LorisStrategy(Strategy):
    """Pick the first unlabelled image in the order named by ``order`` (one of :data:`ORDERS`)."""

    def __init__(self, order: str):
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; valid orders are {', '.join(ORDERS)}")
        description = {
            "uncertain": "LoRIS: unlabelled image whose score is closest to the decision threshold",
            "most_anomalous": "LoRIS: unlabelled image with the highest anomaly score",
        }[order]
        super().__init__(description)
        self.order = order

    def _key(self, image_id: str, scored: dict | None):
        if not scored or scored.get("score") is None:
            return (1, 0.0, image_id)
        if self.order == "uncertain":
            return (0, abs(float(scored["score"]) - float(scored["threshold"])), image_id)
        return (0, -float(scored["score"]), image_id)

    def __call__(self, request, datastore: Datastore):
        candidates = datastore.get_unlabeled_images()
        if not candidates:
            return None
        scores = {image_id: datastore.get_image_info(image_id).get(INFO_KEY) for image_id in candidates}
        best = min(candidates, key=lambda image_id: self._key(image_id, scores[image_id]))
        scored = scores[best] or {}
        return {
            "id": best,
            "score": scored.get("score"),
            "threshold": scored.get("threshold"),
            "distended": scored.get("distended"),
            "scored": bool(scored),
        }
