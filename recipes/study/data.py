"""Study data: shapes whose class is global structure only, plus scikit-learn's digits.

The demo's shapes (``recipes.pipeline.data.make_shapes``) give every class its own colour, so one
pixel tells the class and a first-k probe cannot tell global from local encoding. Here the class
is the outline alone; everything a local view sees is drawn independently of it:

- foreground and background colours: each uniform in [0, 1]^3, redrawn until they differ by at
  least ``MIN_CONTRAST`` (a condition that does not look at the class);
- area: the shape covers a fraction of the image drawn uniformly from ``AREA_RANGE`` and each
  outline is scaled to exactly that area (computed analytically per outline), so the mean colour
  (bg + area * (fg - bg)) carries no class information in expectation;
- position: the shape's centre is uniform over the places where the whole shape fits;
- pixels are 4 x 4 supersampled (anti-aliased edges), plus N(0, ``NOISE_STD``) noise.

:data:`CLASS_ENCODING` is the sentence a report quotes. ``check_global_only`` in the tests shows
the claim: a linear probe on one 4 x 4 patch or on the mean colour is near chance, while a small
CNN on the whole image is far above it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vcq_plugin._errors import check_int, unknown_name_error

# outline name -> area of the outline at half-size r = 1 (r is the bounding half-width)
STUDY_SHAPES: tuple[tuple[str, float], ...] = (
    ("disk", math.pi),                                   # x^2 + y^2 <= 1
    ("square", 4.0),                                     # |x|, |y| <= 1
    ("triangle", 2.0),                                   # apex (0, -1), base from (-1, 1) to (1, 1)
    ("ring", math.pi * (1.0 - 0.55**2)),                 # 0.55 <= sqrt(x^2 + y^2) <= 1
    ("plus", 4.0 * 2 * 0.34 - (2 * 0.34) ** 2),          # two 2 x 0.68 bars, their overlap once
    ("diamond", 2.0),                                    # |x| + |y| <= 1
    ("hbar", 4.0 * 0.36),                                # |x| <= 1, |y| <= 0.36
    ("vbar", 4.0 * 0.36),                                # |y| <= 1, |x| <= 0.36
)
AREA_RANGE = (0.12, 0.30)   # fraction of the image the shape covers, uniform, the same for every class
MIN_CONTRAST = 0.35         # Euclidean RGB distance between foreground and background, at least
NOISE_STD = 0.02
SUPERSAMPLE = 4
CLASS_ENCODING = (
    "class = the outline of one shape ({names}); foreground and background colours (uniform RGB, "
    "contrast >= {contrast}), area ({lo:.0%}-{hi:.0%} of the image, uniform, each outline scaled to it), "
    "and position (uniform where the shape fits) are drawn independently of the class, so no single "
    "patch and no colour statistic identifies it: only the global structure does"
)


def class_encoding(num_classes: int = len(STUDY_SHAPES)) -> str:
    """The sentence saying how the class is encoded in :func:`make_study_shapes` images."""
    names = ", ".join(n for n, _ in STUDY_SHAPES[:num_classes])
    return CLASS_ENCODING.format(names=names, contrast=MIN_CONTRAST, lo=AREA_RANGE[0], hi=AREA_RANGE[1])


def _mask(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside-test of outline ``kind`` at half-size 1, centred at 0 (y grows downwards)."""
    if kind == "disk":
        return x**2 + y**2 <= 1.0
    if kind == "square":
        return (np.abs(x) <= 1.0) & (np.abs(y) <= 1.0)
    if kind == "triangle":  # apex (0, -1), base y = 1 from x = -1 to 1: area 2
        t = (y + 1.0) / 2.0
        return (t >= 0.0) & (t <= 1.0) & (np.abs(x) <= t)
    if kind == "ring":
        d2 = x**2 + y**2
        return (d2 <= 1.0) & (d2 >= 0.55**2)
    if kind == "plus":
        w = 0.34
        return ((np.abs(y) <= w) & (np.abs(x) <= 1.0)) | ((np.abs(x) <= w) & (np.abs(y) <= 1.0))
    if kind == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if kind == "hbar":
        return (np.abs(x) <= 1.0) & (np.abs(y) <= 0.36)
    if kind == "vbar":
        return (np.abs(y) <= 1.0) & (np.abs(x) <= 0.36)
    raise AssertionError(kind)  # pragma: no cover - STUDY_SHAPES is closed


def make_study_shapes(num_images: int, image_size: int = 16, num_classes: int = len(STUDY_SHAPES),
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes whose class is the outline only (see the module docstring and :func:`class_encoding`).

    Returns images float32 (N, 3, S, S) in [0, 1] and labels int64 (N,), classes balanced
    (``N mod num_classes`` classes get one more image) and shuffled. A pure function of its arguments.
    """
    num_images = check_int("num_images", num_images, minimum=1)
    image_size = check_int("image_size", image_size, minimum=8)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if num_classes > len(STUDY_SHAPES):
        raise ValueError(f"num_classes must be <= {len(STUDY_SHAPES)} (the study's outlines), got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % num_classes)
    s, ss = image_size, image_size * SUPERSAMPLE
    grid = (np.arange(ss) + 0.5) / ss  # [0, 1] supersampled pixel centres
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((num_images, 3, s, s), dtype=np.float32)
    for n, c in enumerate(labels):
        kind, unit_area = STUDY_SHAPES[c]
        area = rng.uniform(*AREA_RANGE)
        r = math.sqrt(area / unit_area)  # half-size so that the outline covers ``area`` of the unit square
        if r >= 0.5:
            raise AssertionError(f"{kind} at area {area:.2f} does not fit")  # AREA_RANGE keeps r < 0.5
        cy, cx = rng.uniform(r, 1.0 - r, size=2)
        fine = _mask(kind, (xx - cx) / r, (yy - cy) / r).astype(np.float32)
        cover = fine.reshape(s, SUPERSAMPLE, s, SUPERSAMPLE).mean(axis=(1, 3))  # anti-aliased coverage
        while True:
            fg, bg = rng.uniform(0.0, 1.0, size=3), rng.uniform(0.0, 1.0, size=3)
            if np.linalg.norm(fg - bg) >= MIN_CONTRAST:
                break
        img = bg[:, None, None] + cover[None] * (fg - bg)[:, None, None]
        img = img + rng.normal(0.0, NOISE_STD, size=img.shape)
        images[n] = np.clip(img, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


STUDY_DATASETS = ("study_shapes", "digits")


def load_study_dataset(name: str, *, num_images: int | None, image_size: int, num_classes: int | None = None,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``study_shapes`` (:func:`make_study_shapes`) or ``digits`` (the recipes' own
    ``make_digits``: scikit-learn's bundled 8 x 8 digits, 1797 images, 10 classes)."""
    if name == "study_shapes":
        return make_study_shapes(num_images or 4000, image_size, num_classes or len(STUDY_SHAPES), seed)
    if name == "digits":
        from recipes.pipeline.data import make_digits

        return make_digits(num_images, image_size, seed)
    raise unknown_name_error("study dataset", name, STUDY_DATASETS)


def dataset_description(name: str, num_classes: int | None = None) -> str:
    """How the class is encoded, for the report."""
    if name == "study_shapes":
        return class_encoding(num_classes or len(STUDY_SHAPES))
    if name == "digits":
        return ("scikit-learn's bundled handwritten digits (1797 images of 8 x 8, 10 classes, resized "
                "bilinearly): the class is the digit drawn, as written by people (not made by this project)")
    raise unknown_name_error("study dataset", name, STUDY_DATASETS)
