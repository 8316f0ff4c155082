"""How much of the box the served segmentation covers, asked through a running server as a client would.

For every labelled image of the server's datastore, ``POST /infer/loris`` with the image's own
annotated box; the share of the box's pixels in the returned segmentation, median per class.

    python docs/experiments/served_box_share.py http://127.0.0.1:8000 [TOKEN]

A segmentation that is the box covers 100 % on both classes; the project expects a small share on
normal images and a larger one on distended images.
"""

import io
import json
import sys

import numpy as np
import requests
from PIL import Image


def main(url: str, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    objects = requests.get(f"{url}/datastore/", params={"output": "all"}, headers=headers, timeout=60).json()["objects"]
    shares: dict[str, list[float]] = {"normal": [], "distended": []}
    for image_id, obj in sorted(objects.items()):
        info = obj.get("labels", {}).get("final", {}).get("info", {})
        label, box = info.get("label"), info.get("box")
        if label not in shares or not box:
            continue
        answer = requests.post(f"{url}/infer/loris", params={"image": image_id}, headers=headers,
                               data={"params": json.dumps({"box": box})}, timeout=300)
        answer.raise_for_status()
        # multipart answer: the PNG label is the part that starts with the PNG signature
        start = answer.content.index(b"\x89PNG")
        mask = np.asarray(Image.open(io.BytesIO(answer.content[start:])))
        x0, y0, x1, y1 = box
        shares[label].append(float((mask[y0:y1, x0:x1] > 0).mean()))
    for label, values in shares.items():
        v = np.asarray(values)
        print(f"{label:9} images {v.size:3d}  box share median {np.median(v):.3f}  "
              f"(quartiles {np.quantile(v, 0.25):.3f} / {np.quantile(v, 0.75):.3f}, max {v.max():.3f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
