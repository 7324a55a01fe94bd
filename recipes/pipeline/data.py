"""Datasets for the recipes: procedural class-conditional shapes and scikit-learn digits (the CPU
demo, made on the fly, nothing downloaded) and an ImageFolder (full scale).

Images are float32 tensors in [0, 1], shape (N, 3, H, W); labels int64 (N,).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vcq_plugin._errors import check_int, unknown_name_error

DEMO_DATASETS = ("shapes", "digits")
DATASETS = DEMO_DATASETS + ("imagefolder",)

# class -> (shape, RGB colour); the colour and the shape both identify the class
SHAPE_CLASSES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("disk", (0.95, 0.15, 0.15)),      # red disk
    ("square", (0.15, 0.85, 0.2)),     # green square
    ("triangle", (0.2, 0.35, 1.0)),    # blue triangle
    ("hbar", (1.0, 0.9, 0.1)),         # yellow horizontal bar
    ("vbar", (0.95, 0.2, 0.95)),       # magenta vertical bar
    ("ring", (0.1, 0.9, 0.95)),        # cyan ring
    ("plus", (1.0, 0.55, 0.05)),       # orange plus
    ("diamond", (0.95, 0.95, 0.95)),   # white diamond
)


def balanced_labels(num_images: int, image_size: int, num_classes: int, seed: int, *, max_classes: int,
                    what: str, min_classes: int = 1) -> tuple[np.random.Generator, np.ndarray]:
    """Checks a procedural generator's arguments and draws its labels: ``(rng, labels)``, labels
    int (N,) with classes balanced (``N mod num_classes`` classes get one more) and shuffled by
    ``rng = np.random.default_rng(seed)``, which the generator goes on drawing from."""
    num_images = check_int("num_images", num_images, minimum=1)
    check_int("image_size", image_size, minimum=8)
    num_classes = check_int("num_classes", num_classes, minimum=min_classes)
    if num_classes > max_classes:
        raise ValueError(f"num_classes must be <= {max_classes} {what}, got {num_classes}")
    rng = np.random.default_rng(seed)
    return rng, rng.permutation(np.arange(num_images) % num_classes)


def make_shapes(num_images: int, image_size: int = 32, num_classes: int = 8, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural coloured shapes: class c has a fixed shape and hue; position, size,
    colour brightness and background tint vary per image. Returns images (N, 3, S, S) in [0, 1]
    and labels (N,) int64 (classes balanced, shuffled)."""
    rng, labels = balanced_labels(num_images, image_size, num_classes, seed,
                                  max_classes=len(SHAPE_CLASSES), what="for the shapes dataset")
    s = image_size
    yy, xx = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="ij")
    yy, xx = yy / s, xx / s  # [0, 1]
    images = np.empty((num_images, 3, s, s), dtype=np.float32)
    for n, c in enumerate(labels):
        kind, colour = SHAPE_CLASSES[c]
        r = rng.uniform(0.24, 0.36)  # half-size, fraction of the image
        cy, cx = rng.uniform(r + 0.04, 1 - r - 0.04, size=2)
        dy, dx = yy - cy, xx - cx
        if kind == "disk":
            mask = dy**2 + dx**2 <= r**2
        elif kind == "square":
            mask = (np.abs(dy) <= r * 0.9) & (np.abs(dx) <= r * 0.9)
        elif kind == "triangle":
            t = (dy + r) / (2 * r)  # 0 at the apex, 1 at the base
            mask = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
        elif kind == "hbar":
            mask = (np.abs(dy) <= r * 0.35) & (np.abs(dx) <= r * 1.1)
        elif kind == "vbar":
            mask = (np.abs(dx) <= r * 0.35) & (np.abs(dy) <= r * 1.1)
        elif kind == "ring":
            d2 = dy**2 + dx**2
            mask = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
        elif kind == "plus":
            w = r * 0.35
            mask = ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
        elif kind == "diamond":
            mask = np.abs(dy) + np.abs(dx) <= r * 1.1
        else:  # pragma: no cover - SHAPE_CLASSES is closed
            raise AssertionError(kind)
        bg = rng.uniform(0.0, 0.18, size=3)
        fg = np.clip(np.asarray(colour) * rng.uniform(0.8, 1.0), 0, 1)
        img = np.where(mask[None], fg[:, None, None], bg[:, None, None])
        img = img + rng.normal(0, 0.02, size=img.shape)
        images[n] = np.clip(img, 0, 1)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def make_digits(num_images: int | None = None, image_size: int = 16, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), bilinearly resized to
    ``image_size`` and repeated to 3 channels. ``num_images`` > 1797 draws with small random shifts."""
    from sklearn.datasets import load_digits

    d = load_digits()
    base = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(d.target.astype(np.int64))
    base = F.interpolate(base, size=(image_size, image_size), mode="bilinear", align_corners=False)
    n = base.shape[0] if num_images is None else check_int("num_images", num_images, minimum=1)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.resize(np.arange(base.shape[0]), n)) if n != base.shape[0] else np.arange(n)
    images, labels = base[idx].clamp(0, 1), labels[idx]
    if n > base.shape[0]:  # the extra copies get a one-pixel shift so they are distinct images
        shifts = rng.integers(-1, 2, size=(n, 2))
        images = torch.stack([torch.roll(im, tuple(int(v) for v in sh), dims=(1, 2)) for im, sh in zip(images, shifts)])
    return images.repeat(1, 3, 1, 1).contiguous(), labels


def load_imagefolder(path: str | os.PathLike, image_size: int, num_images: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision ImageFolder, centre-cropped and resized to ``image_size``, loaded to memory."""
    from torchvision import datasets, transforms

    check_data_path(path)
    tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(path), transform=tf)
    n = len(ds) if num_images is None else min(len(ds), int(num_images))
    xs, ys = zip(*(ds[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def check_data_path(path: str | os.PathLike | None, what: str = "data.path") -> Path:
    if path is None or str(path) == "":
        raise ValueError(f"{what} is required for this dataset but is not set")
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; point it at your dataset")
    return p


def load_dataset(name: str, *, num_images: int | None, image_size: int, num_classes: int,
                 path: str | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on ``name`` in ``shapes | digits | imagefolder`` (values checked by the config schema;
    ``num_images`` None = the whole dataset, not possible for shapes)."""
    if name == "shapes":
        if num_images is None:
            raise ValueError("the shapes dataset needs num_images")
        return make_shapes(num_images, image_size, num_classes, seed)
    if name == "digits":
        return make_digits(num_images, image_size, seed)
    if name == "imagefolder":
        return load_imagefolder(path, image_size, num_images)
    raise unknown_name_error("dataset", name, DATASETS)


def class_names(name: str, num_classes: int, path: str | None = None) -> list[str]:
    """Readable class names for figure rows: shape names, digits, or the ImageFolder's folder names."""
    if name == "shapes":
        return [kind for kind, _ in SHAPE_CLASSES[:num_classes]]
    if name == "digits":
        return [f"digit {i}" for i in range(num_classes)]
    root = check_data_path(path)
    return sorted(p.name for p in root.iterdir() if p.is_dir())[:num_classes]


def holdout_split(num_images: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, heldout_idx) split; held-out gets round(fraction * N) >= 1 images."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed + 7919).permutation(num_images)
    n_held = max(1, int(round(fraction * num_images)))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The indices of batch ``step``: a pure function of (seed, step), so a resumed run sees the
    same batches as an uninterrupted one."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=min(batch_size, n), replace=False)
