"""Study data: images whose class is global structure only, plus scikit-learn's digits.

The demo's shapes (``recipes.pipeline.data.make_shapes``) give every class its own colour, so one
pixel tells the class and a first-k probe cannot tell global from local encoding. Here everything
a local view sees is drawn independently of the class; two generators:

- ``study_arrangements`` (the study's default, :func:`make_study_arrangements`): the class is the
  layout of three identical disks (row, column, diagonal, anti-diagonal, four corners); disk
  radius, spacing, position and colours are drawn independently of it. One disk, the drawn area
  and the colours say nothing about the class.
- ``study_shapes`` (:func:`make_study_shapes`): the class is the outline of one shape (disk,
  square, ...), each outline scaled to an area drawn independently of the class.

Colours (``colours=``): ``dark`` (the study's: a dark grey background, a bright random foreground)
or ``uniform`` (both uniform RGB with a minimum contrast). Both are independent of the class. Why
the study uses ``dark`` arrangements (measured, seed 0, the study's 16 px tokenizer, 800 steps): a
frozen classifier (100 % on real held-out images) recognises the tokenizer's reconstructions of
``dark`` arrangements 98.5 % of the time and a linear probe on all 16 tokens reads 75 %; with
``uniform`` colours the tokenizer spends its capacity on the colours and reconstructs a flat
background (reconstructions 14.5 %, probe 12 %, chance 12.5 %); ``dark`` outlines: 65 % / 70 %.
A class the tokenizer cannot keep would make every generation and probe metric read chance.

Pixels are 4 x 4 supersampled (anti-aliased edges), plus N(0, ``NOISE_STD``) noise.
:func:`class_encoding` / :func:`arrangement_encoding` are the sentences the report quotes; the
tests show the claim: a linear probe on one 4 x 4 patch or on the mean colour is near chance,
while a small CNN on the whole image is far above it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from recipes.pipeline.data import balanced_labels
from vcq_plugin._errors import unknown_name_error

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
    "class = the outline of one shape ({names}); foreground and background colours, area ({lo:.0%}-{hi:.0%} of the image, uniform, each outline scaled to it), "
    "and position (uniform where the shape fits) are drawn independently of the class, so no single "
    "patch and no colour statistic identifies it: only the global structure does"
)


def class_encoding(num_classes: int = len(STUDY_SHAPES)) -> str:
    """The sentence saying how the class is encoded in :func:`make_study_shapes` images."""
    names = ", ".join(n for n, _ in STUDY_SHAPES[:num_classes])
    return CLASS_ENCODING.format(names=names, lo=AREA_RANGE[0], hi=AREA_RANGE[1])


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
                      seed: int = 0, colours: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes whose class is the outline only (see the module docstring and :func:`class_encoding`).

    Returns images float32 (N, 3, S, S) in [0, 1] and labels int64 (N,), classes balanced
    (``N mod num_classes`` classes get one more image) and shuffled. A pure function of its arguments.
    """
    rng, labels = balanced_labels(num_images, image_size, num_classes, seed, max_classes=len(STUDY_SHAPES),
                                  what="(the study's outlines)", min_classes=2)
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
        fg, bg = _colours(rng, colours)
        img = bg[:, None, None] + cover[None] * (fg - bg)[:, None, None]
        img = img + rng.normal(0.0, NOISE_STD, size=img.shape)
        images[n] = np.clip(img, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# arrangements: three identical disks; the class is where they sit relative to each other
# (lattice offsets, in units of the spacing d). Every class has three disks of one radius, so the
# drawn area, colours, size and position say nothing about it; one disk alone says nothing either.
STUDY_ARRANGEMENTS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("row", ((-1, 0), (0, 0), (1, 0))),
    ("column", ((0, -1), (0, 0), (0, 1))),
    ("diagonal", ((-1, -1), (0, 0), (1, 1))),
    ("anti-diagonal", ((-1, 1), (0, 0), (1, -1))),
    ("corner top-left", ((0, 0), (1, 0), (0, 1))),
    ("corner top-right", ((0, 0), (1, 0), (1, 1))),
    ("corner bottom-right", ((1, 0), (1, 1), (0, 1))),
    ("corner bottom-left", ((0, 0), (0, 1), (1, 1))),
)
DISK_RADIUS = (0.10, 0.13)   # fraction of the image side, uniform, the same for every class
SPACING = (2.2, 2.6)         # disk centre spacing in radii, uniform (disks never touch)
ARRANGEMENT_ENCODING = (
    "class = the arrangement of three identical disks ({names}); disk radius ({rlo:.0%}-{rhi:.0%} of the side), "
    "spacing ({slo}-{shi} radii), position (uniform on the image taken as a torus: a layout crossing an "
    "edge continues on the opposite side), foreground and background colours "
    "are drawn independently of the class, so the drawn area, the colours "
    "any one disk and any one position say nothing about it: only the global layout does")


def arrangement_encoding(num_classes: int = len(STUDY_ARRANGEMENTS)) -> str:
    """The sentence saying how the class is encoded in :func:`make_study_arrangements` images."""
    names = ", ".join(n for n, _ in STUDY_ARRANGEMENTS[:num_classes])
    return ARRANGEMENT_ENCODING.format(names=names, rlo=DISK_RADIUS[0], rhi=DISK_RADIUS[1], slo=SPACING[0],
                                       shi=SPACING[1])


COLOUR_SCHEMES = ("uniform", "dark")


def _colours(rng: np.random.Generator, scheme: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) RGB, never looking at the class.

    ``uniform``: both uniform in [0, 1]^3, redrawn until they differ by >= MIN_CONTRAST.
    ``dark``: a dark grey background (uniform in [0, 0.2], the same in every channel) and a bright
    foreground (uniform in [0.45, 1]^3): the colour nuisance is smaller, the layout dominates the pixels.
    """
    if scheme == "dark":
        return rng.uniform(0.45, 1.0, size=3), np.full(3, rng.uniform(0.0, 0.2))
    if scheme != "uniform":
        raise unknown_name_error("colour scheme", scheme, COLOUR_SCHEMES)
    while True:
        fg, bg = rng.uniform(0.0, 1.0, size=3), rng.uniform(0.0, 1.0, size=3)
        if np.linalg.norm(fg - bg) >= MIN_CONTRAST:
            return fg, bg


def make_study_arrangements(num_images: int, image_size: int = 16, num_classes: int = len(STUDY_ARRANGEMENTS),
                            seed: int = 0, colours: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """Three-disk arrangements whose class is the layout only (:func:`arrangement_encoding`).

    Returns images float32 (N, 3, S, S) in [0, 1] and labels int64 (N,), balanced and shuffled;
    4 x 4 supersampled disks plus N(0, ``NOISE_STD``) noise. A pure function of its arguments.
    """
    rng, labels = balanced_labels(num_images, image_size, num_classes, seed, max_classes=len(STUDY_ARRANGEMENTS),
                                  what="(the study's arrangements)", min_classes=2)
    s, ss = image_size, image_size * SUPERSAMPLE
    grid = (np.arange(ss) + 0.5) / ss
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((num_images, 3, s, s), dtype=np.float32)
    for n, c in enumerate(labels):
        offsets = np.asarray(STUDY_ARRANGEMENTS[c][1], dtype=np.float64)
        offsets = offsets - (offsets.min(0) + offsets.max(0)) / 2.0  # centre the layout's bounding box
        r = rng.uniform(*DISK_RADIUS)
        d = r * rng.uniform(*SPACING)
        cx, cy = rng.uniform(0.0, 1.0, size=2)  # anywhere: the image is a torus (see below)
        fine = np.zeros_like(xx, dtype=bool)
        for ox, oy in offsets:
            # periodic distance: a layout crossing an edge continues on the opposite side, so every pixel
            # is covered equally often in every class (no position statistic tells the class)
            dx = (xx - cx - ox * d + 0.5) % 1.0 - 0.5
            dy = (yy - cy - oy * d + 0.5) % 1.0 - 0.5
            fine |= dx**2 + dy**2 <= r * r
        cover = fine.astype(np.float32).reshape(s, SUPERSAMPLE, s, SUPERSAMPLE).mean(axis=(1, 3))
        fg, bg = _colours(rng, colours)
        img = bg[:, None, None] + cover[None] * (fg - bg)[:, None, None]
        img = img + rng.normal(0.0, NOISE_STD, size=img.shape)
        images[n] = np.clip(img, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


STUDY_DATASETS = ("study_arrangements", "study_shapes", "digits")
DEFAULT_COLOURS = "dark"


def load_study_dataset(name: str, *, num_images: int | None, image_size: int, num_classes: int | None = None,
                       seed: int = 0, colours: str = DEFAULT_COLOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """``study_arrangements`` / ``study_shapes`` (made here; ``num_images`` default 4000) or ``digits``
    (the recipes' own ``make_digits``: scikit-learn's bundled 8 x 8 digits, 1797 images, 10 classes)."""
    if name == "study_arrangements":
        return make_study_arrangements(num_images or 4000, image_size, num_classes or len(STUDY_ARRANGEMENTS),
                                       seed, colours)
    if name == "study_shapes":
        return make_study_shapes(num_images or 4000, image_size, num_classes or len(STUDY_SHAPES), seed, colours)
    if name == "digits":
        from recipes.pipeline.data import make_digits

        return make_digits(num_images, image_size, seed)
    raise unknown_name_error("study dataset", name, STUDY_DATASETS)


def dataset_description(name: str, num_classes: int | None = None, colours: str = DEFAULT_COLOURS) -> str:
    """How the class is encoded, for the report."""
    scheme = {"dark": "dark grey background, bright random foreground",
              "uniform": "uniform random foreground and background"}.get(colours, colours)
    if name == "study_arrangements":
        return arrangement_encoding(num_classes or len(STUDY_ARRANGEMENTS)) + f" (colours: {scheme})"
    if name == "study_shapes":
        return class_encoding(num_classes or len(STUDY_SHAPES)) + f" (colours: {scheme})"
    if name == "digits":
        return ("scikit-learn's bundled handwritten digits (1797 images of 8 x 8, 10 classes, resized "
                "bilinearly): the class is the digit drawn, as written by people (not made by this project)")
    raise unknown_name_error("study dataset", name, STUDY_DATASETS)
