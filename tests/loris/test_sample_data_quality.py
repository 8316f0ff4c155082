"""On `python -m lib sample-data` output, a small LoRIS separates the classes and segments the fluid, not the box.

A quality floor, not a benchmark: fixed seeds, held-out patients, loose bounds (the numbers of a
stated run live in the README). 16 patients of 320 x 240 frames, a small LoRIS at 64 px for 20 epochs.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lib.data.imageio import read_image, read_mask
from lib.data.splits import split_train_valid
from lib.data.synthetic import write_sample_data
from lib.loris.predictor import LorisPredictor
from lib.loris.settings import NETWORKS, LorisSettings
from lib.loris.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def held_out_predictions(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_quality")
    records = write_sample_data(root / "data", patients=16, seed=0, image_size=(320, 240))
    rest, test = split_train_valid(records, 0.3, seed=0)
    train_records, valid_records = split_train_valid(rest, 0.25, seed=1)
    # At 64 px and 20 epochs the strided MONAI UNet reaches a usable segmentation fastest (DD Dice 0.85 on these
    # seeds, against 0.30-0.36 for the reference design at this size); the reference design's advantage shows at
    # the preset's 128 px (docs/quick-preset.md).
    settings = LorisSettings.quick(**NETWORKS["unet"], image_size=64, max_epochs=20, patience=20, seed=0)
    train(train_records, root / "model", settings, valid_records=valid_records, progress=False)
    predictor = LorisPredictor.load(root / "model")
    return test, [predictor.predict(read_image(r.image_path), r.box) for r in test]  # what the server answers


def test_held_out_distended_images_score_higher_than_normal_ones(held_out_predictions):
    test, predictions = held_out_predictions
    labels = [r.label == "distended" for r in test]
    assert 0 < sum(labels) < len(labels)
    assert roc_auc_score(labels, [p.score for p in predictions]) > 0.7  # 1.0 seen with these seeds


def test_segmentation_overlaps_the_distended_region_and_not_the_normal_box(held_out_predictions):
    test, predictions = held_out_predictions
    dice, share = [], {"normal": [], "distended": []}
    for record, prediction in zip(test, predictions):
        x0, y0, x1, y1 = record.box
        share[record.label].append(prediction.mask[y0:y1, x0:x1].mean())
        if record.label == "distended":
            truth = read_mask(record.mask_path)
            assert prediction.mask.shape == truth.shape  # in the original geometry
            dice.append(2 * (truth & prediction.mask).sum() / (truth.sum() + prediction.mask.sum()))
    assert np.mean(dice) > 0.3  # 0.85 seen with these seeds
    # a segmentation that is the box covers all of it on both classes; this one marks little of a normal box
    normal, distended = np.median(share["normal"]), np.median(share["distended"])
    assert normal <= 0.1 and normal < distended, (normal, distended)  # 0.04 and 0.26 seen
