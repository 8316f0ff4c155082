"""Boxes and images between the original pixel grid and the detector's S x S grid."""

from __future__ import annotations

import numpy as np
import pytest

from lib.detection.augment import BoxAugmenter
from lib.detection.preprocess import network_box, network_image, original_box
from lib.detection.settings import DetectorSettings


@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("image_size", [(640, 480), (97, 61), (1024, 768), (300, 1000), (64, 64)])
def test_boxes_survive_the_resize_round_trip_exactly(size, image_size):
    width, height = image_size
    rng = np.random.default_rng(size + width)
    boxes = [(0, 0, width, height), (0, 0, 1, 1), (width - 1, height - 1, width, height)]
    for _ in range(200):
        x0, x1 = sorted(rng.choice(width + 1, size=2, replace=False))
        y0, y1 = sorted(rng.choice(height + 1, size=2, replace=False))
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    for box in boxes:
        assert original_box(network_box(box, image_size, size), image_size, size) == box


def test_network_image_is_the_transposed_resized_image_so_boxes_need_no_axis_swap():
    # monai.apps.detection reads [x_min, y_min, x_max, y_max] along the tensor's spatial axes in order.
    image = np.zeros((60, 120), np.float32)
    image[10:20, 30:90] = 1.0  # rows 10-19 (y), columns 30-89 (x)
    tensor = network_image(image, 64)
    assert tuple(tensor.shape) == (1, 64, 64)
    box = network_box((30, 10, 90, 20), (120, 60), 64)
    xs, ys = np.nonzero(tensor[0].numpy() > 0.5)
    assert (xs.min(), xs.max() + 1) == (round(box[0]), round(box[2]))
    assert (ys.min(), ys.max() + 1) == (round(box[1]), round(box[3]))


@pytest.mark.parametrize("flip", [False, True])
def test_augmented_views_keep_the_box_on_the_object(flip):
    settings = DetectorSettings(image_size=64, flip=flip, gain_range=0.0, gamma_range=0.0, noise_std=0.0,
                                scale_range=0.3, translate_fraction=0.2)
    augment = BoxAugmenter(settings, seed=3)
    image = np.zeros((80, 120), np.float32)
    image[30:40, 20:100] = 1.0
    for _ in range(20):
        tensor, box = augment(image, (20, 30, 100, 40))
        assert tuple(tensor.shape) == (1, 64, 64)
        xs, ys = np.nonzero(tensor[0].numpy() > 0.5)
        # Area resizing blurs the object's edge by at most one network pixel.
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64


def test_without_augmentation_training_sees_exactly_the_inference_view():
    settings = DetectorSettings(image_size=64, augment=False)
    image = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    tensor, box = BoxAugmenter(settings)(image, (5, 6, 40, 20))
    assert np.array_equal(tensor.numpy(), network_image(image, 64).numpy())
    assert box == network_box((5, 6, 40, 20), (70, 50), 64)
