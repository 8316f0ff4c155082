"""Boxes and images between the original pixel grid and the detector's input grid; box-exact augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from lib.detection.augment import BoxAugmenter, bulge
from lib.detection.preprocess import network_box, network_image, original_box
from lib.detection.settings import DetectorSettings


@pytest.mark.parametrize("shape", [(48, 64), (96, 128), (192, 256), (256, 256)])
@pytest.mark.parametrize("image_size", [(640, 480), (97, 61), (1024, 768), (300, 1000), (64, 64)])
def test_boxes_survive_the_resize_round_trip_exactly(shape, image_size):
    width, height = image_size
    rng = np.random.default_rng(shape[1] + width)
    boxes = [(0, 0, width, height), (0, 0, 1, 1), (width - 1, height - 1, width, height)]
    for _ in range(200):
        x0, x1 = sorted(rng.choice(width + 1, size=2, replace=False))
        y0, y1 = sorted(rng.choice(height + 1, size=2, replace=False))
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    for box in boxes:
        assert original_box(network_box(box, image_size, shape), image_size, shape) == box


def test_the_input_grid_keeps_the_frame_shape_and_rows_stay_rows():
    assert DetectorSettings().input_shape == (192, 256)  # a 640 x 480 frame keeps its 4:3 shape
    assert DetectorSettings(image_size=64).input_shape == (64, 64)  # rounded to whole stride-32 steps
    image = np.zeros((60, 120), np.float32)
    image[10:20, 30:90] = 1.0  # rows 10-19 (y), columns 30-89 (x)
    tensor = network_image(image, (48, 64))
    assert tuple(tensor.shape) == (1, 48, 64)
    box = network_box((30, 10, 90, 20), (120, 60), (48, 64))
    ys, xs = np.nonzero(tensor[0].numpy() > 0.5)
    assert (xs.min(), xs.max() + 1) == (round(box[0]), round(box[2]))
    assert (ys.min(), ys.max() + 1) == (round(box[1]), round(box[3]))


@pytest.mark.parametrize("flip", [False, True])
def test_augmented_views_keep_the_box_on_the_object(flip):
    settings = DetectorSettings(image_size=64, image_aspect=0.75, flip=flip, gain_range=0.0, gamma_range=0.0,
                                noise_std=0.0, scale_range=0.3, stretch_range=0.3, translate_fraction=0.2,
                                bulge_fraction=0.0)
    augment = BoxAugmenter(settings, seed=3)
    image = np.zeros((80, 120), np.float32)
    image[30:40, 20:100] = 1.0
    for _ in range(20):
        tensor, box = augment(image, (20, 30, 100, 40))
        assert tuple(tensor.shape) == (1, 64, 64)
        ys, xs = np.nonzero(tensor[0].numpy() > 0.5)
        # Area resizing blurs the object's edge by at most one network pixel.
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
        assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64


def test_without_augmentation_training_sees_exactly_the_inference_view():
    settings = DetectorSettings(image_size=64, augment=False)
    image = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    tensor, box = BoxAugmenter(settings)(image, (5, 6, 40, 20))
    assert np.array_equal(tensor.numpy(), network_image(image, (64, 64)).numpy())
    assert box == network_box((5, 6, 40, 20), (70, 50), (64, 64))


def _thin_recess(tilt: float = 0.0):
    """A 200 x 300 frame of textured tissue with a thin dark line (rows ~98-102, columns 60-240) and its box."""
    rng = np.random.default_rng(1)
    image = np.clip(0.6 + 0.08 * rng.standard_normal((200, 300)), 0, 1).astype(np.float32)
    for x in range(60, 240):
        centre = 100 + tilt * (x - 150)
        image[int(round(centre)) - 2 : int(round(centre)) + 3, x] = 0.05
    return image, (50, 80, 250, 121)


@pytest.mark.parametrize("tilt", [0.0, 0.08])
def test_bulge_swells_the_recess_into_a_dark_lens_inside_a_taller_box(tilt):
    image, box = _thin_recess(tilt)
    swollen, new_box = bulge(image, box, np.random.default_rng(0), swell=0.5, fluid=1.0)
    assert swollen.shape == image.shape and swollen.dtype == np.float32
    assert new_box[0] == box[0] and new_box[2] == box[2]  # same extent along the recess
    assert new_box[1] < box[1] and new_box[3] >= box[3]  # taller, mostly upwards (fluid lifts the tendon)
    dark = swollen < 0.2
    rows = np.nonzero(dark[:, box[0] : box[2]].any(axis=1))[0]
    # the 5-px line became a lens about half a box height (20 px) thicker
    assert rows.max() - rows.min() + 1 > 5 + 15
    assert (new_box[3] - new_box[1]) - (box[3] - box[1]) == pytest.approx(20, abs=1.5)
    # the lens stays inside the new box, and the frame outside the box's reach is untouched
    assert not dark[: new_box[1]].any() and not dark[new_box[3] :].any()
    assert np.array_equal(swollen[:, :40], image[:, :40])
