"""Study data: the class of a study shape is global structure only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from recipes.study.data import (
    AREA_RANGE,
    STUDY_ARRANGEMENTS,
    STUDY_SHAPES,
    arrangement_encoding,
    class_encoding,
    dataset_description,
    load_study_dataset,
    make_study_arrangements,
    make_study_shapes,
)
from recipes.study.features import predict, train_classifier


@pytest.mark.parametrize("make", [make_study_shapes, make_study_arrangements])
@pytest.mark.parametrize("colours", ["uniform", "dark"])
def test_images_are_deterministic_balanced_and_in_range(make, colours):
    x, y = make(203, 16, seed=3, colours=colours)
    x2, y2 = make(203, 16, seed=3, colours=colours)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (203, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    counts = np.bincount(y.numpy(), minlength=8)
    assert counts.max() - counts.min() <= 1
    assert not torch.equal(x, make(203, 16, seed=4, colours=colours)[0])


def test_arrangements_draw_three_disks_of_equal_area_in_every_class():
    x, y = make_study_arrangements(400, 64, seed=0, colours="dark")
    bright = (x.numpy().max(axis=1) > 0.35).mean(axis=(1, 2))  # share of foreground pixels
    per_class = [bright[y.numpy() == c].mean() for c in range(len(STUDY_ARRANGEMENTS))]
    # 3 disks of radius 0.10-0.13: 3 pi r^2 = 0.094-0.159 of the image, mean ~0.125, the same for every class
    assert 0.10 < min(per_class) and max(per_class) < 0.15 and max(per_class) - min(per_class) < 0.02


def test_every_outline_covers_the_drawn_area():
    # the unit areas in STUDY_SHAPES are what the rasteriser draws: coverage of a large image, per class,
    # lies inside AREA_RANGE (anti-aliased edges, 64 px: a few % of slack)
    x, y = make_study_shapes(160, 64, seed=0)
    fg_share = []
    for img in x.numpy():
        flat = img.reshape(3, -1)
        # background = the colour of the corner pixel (shapes never reach all four corners)
        corners = [flat[:, 0], flat[:, 63], flat[:, -64], flat[:, -1]]
        bg = np.median(np.stack(corners), axis=0)
        off = np.linalg.norm(flat - bg[:, None], axis=0) > 0.15
        fg_share.append(off.mean())
    fg_share = np.array(fg_share)
    for c in range(len(STUDY_SHAPES)):
        share = fg_share[y.numpy() == c]
        assert AREA_RANGE[0] - 0.03 < share.min() and share.max() < AREA_RANGE[1] + 0.03, STUDY_SHAPES[c][0]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_classes must be <="):
        make_study_shapes(10, 16, num_classes=9)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        make_study_shapes(10, 16, num_classes=1)
    with pytest.raises(ValueError, match="unknown study dataset"):
        load_study_dataset("shapez", num_images=10, image_size=16)
    with pytest.raises(ValueError, match="unknown colour scheme"):
        make_study_arrangements(10, 16, colours="neon")
    with pytest.raises(ValueError, match="num_classes must be <="):
        make_study_arrangements(10, 16, num_classes=9)


def test_descriptions_say_how_the_class_is_encoded():
    assert "independently of the class" in class_encoding() and "vbar" in class_encoding()
    assert "ring" not in class_encoding(3)
    assert "anti-diagonal" in arrangement_encoding() and "dark grey" in dataset_description("study_arrangements")
    x, _ = load_study_dataset("study_arrangements", num_images=16, image_size=16)
    assert torch.equal(x, make_study_arrangements(16, 16, colours="dark")[0])
    assert "scikit-learn" in dataset_description("digits")
    x, y = load_study_dataset("digits", num_images=None, image_size=16)
    assert x.shape == (1797, 3, 16, 16) and int(y.max()) == 9


def _linear_probe(features: np.ndarray, y: np.ndarray, n_train: int) -> float:
    model = LogisticRegression(max_iter=3000).fit(features[:n_train], y[:n_train])
    return float(model.score(features[n_train:], y[n_train:]))


@pytest.fixture
def one_thread():
    """Small CNNs on a shared CPU: 2 threads under load ran 10x slower than 1 (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("make, colours, steps, width, hflip", [
    (make_study_arrangements, "dark", 800, 16, False),  # the study's data; a flip would change the class
    (make_study_shapes, "uniform", 250, 16, True),
])
def test_class_is_global_only_patch_and_colour_probes_near_chance_cnn_far_above(one_thread, make, colours, steps,
                                                                               width, hflip):
    x, y = make(2400, 16, seed=0, colours=colours)
    n_train = 1800
    xn, yn = x.numpy(), y.numpy()
    chance = 1.0 / 8
    mean_colour = _linear_probe(xn.mean(axis=(2, 3)), yn, n_train)
    patches = [_linear_probe(xn[:, :, r:r + 4, c:c + 4].reshape(len(xn), -1), yn, n_train)
               for r, c in ((0, 0), (6, 6), (4, 8))]
    cnn, info = train_classifier(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=8,
                                 steps=steps, width=width, hflip=hflip, seed=0)
    print(make.__name__, colours, "mean colour", mean_colour, "patches", patches, "cnn", info["heldout_top1"])
    assert mean_colour < chance + 0.06
    assert max(patches) < chance + 0.10
    assert info["heldout_top1"] > 0.85
    assert info["heldout_top1"] == pytest.approx(
        float((predict(cnn, x[n_train:]).argmax(1) == y[n_train:]).float().mean()))
