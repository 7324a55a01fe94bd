"""ADM sample files: ``np.savez`` archives with ``arr_0`` = uint8 images [N, H, W, 3] (and optional
``arr_1`` = int64 class labels [N]), the layout of ADM's evaluator and reference batches.

The ADM protocol evaluates 50,000 samples of 256 x 256; fewer samples bias FID upwards
(:func:`check_sample_count` warns).
"""
from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .._errors import check_int
from .._io import atomic_path

ADM_NUM_SAMPLES = 50_000
ADM_IMAGE_SIZE = 256


def to_uint8_nhwc(images: np.ndarray | torch.Tensor, *, clamp: bool = False, name: str = "images") -> np.ndarray:
    """Convert images to uint8 [N, H, W, 3].

    Accepts uint8 [N, H, W, 3] (returned as is) or [N, 3, H, W], or floating point [N, 3, H, W]
    in [0, 1] (rounded to the nearest of 0..255). Float values outside [0, 1] raise ValueError
    unless ``clamp=True``.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D (uint8 [N, H, W, 3] or float [N, 3, H, W]), got shape {images.shape}")
    if images.dtype == np.uint8:
        if images.shape[-1] == 3:
            return np.ascontiguousarray(images)
        if images.shape[1] == 3:
            return np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        raise ValueError(f"uint8 {name} must be [N, H, W, 3] or [N, 3, H, W], got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    if images.shape[1] != 3:
        raise ValueError(f"float {name} must be [N, 3, H, W] in [0, 1], got shape {images.shape}")
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or inf")
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        if not clamp:
            raise ValueError(
                f"float {name} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                "pass clamp=True to clip them explicitly"
            )
        images = np.clip(images, 0.0, 1.0)
    out = np.rint(images * 255.0).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def check_sample_count(n: int, *, expected: int = ADM_NUM_SAMPLES, what: str = "samples") -> str | None:
    """Warn (and return the message) when fewer than ``expected`` images are evaluated."""
    if n >= expected:
        return None
    msg = (
        f"only {n} {what} evaluated; the ADM protocol uses {expected:,}. FID/IS/precision/recall on fewer "
        "samples are biased and not comparable to published numbers"
    )
    warnings.warn(msg, stacklevel=3)
    return msg


def _atomic_npz(path: Path, write_members) -> Path:
    """Write a zip (npz) at ``path`` via temp file + os.replace. ``write_members(zipfile)``."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end with .npz, got {str(path)!r}")
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            write_members(zf)
    return path


def _write_array_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def write_adm_npz(
    images: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    *,
    labels: np.ndarray | torch.Tensor | None = None,
    clamp: bool = False,
) -> Path:
    """Write images as an ADM sample/reference batch ``.npz`` (atomically) and return its path.

    images: uint8 [N, H, W, 3] or float [N, 3, H, W] in [0, 1] (see :func:`to_uint8_nhwc`).
    labels: optional int class labels [N], stored as ``arr_1``.
    """
    arr = to_uint8_nhwc(images, clamp=clamp)
    members = {"arr_0": arr}
    if labels is not None:
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if lab.shape != (arr.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be integers of shape [{arr.shape[0]}], got {lab.dtype} {lab.shape}")
        members["arr_1"] = lab.astype(np.int64)

    def write(zf):
        for k, v in members.items():
            _write_array_member(zf, k, v)

    return _atomic_npz(Path(path), write)


class AdmSampleWriter:
    """Stream generated batches into an ADM ``.npz`` without holding all images in memory.

    ``with AdmSampleWriter(path, num_samples=50_000) as w: w.add(batch)`` ... Batches go to a
    memory-mapped temp ``.npy`` next to ``path``; :meth:`close` zips it into ``path`` atomically
    (only the ``num_samples`` first images; warns when fewer were added).
    """

    def __init__(self, path: str | os.PathLike, num_samples: int = ADM_NUM_SAMPLES, image_size: int = ADM_IMAGE_SIZE):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ValueError(f"path must end with .npz, got {str(self.path)!r}")
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".npy", dir=self.path.parent)
        os.close(fd)
        shape = (self.num_samples, self.image_size, self.image_size, 3)
        self._mm = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.uint8, shape=shape)
        self._labels: list[np.ndarray] = []
        self.count = 0

    def add(self, images: np.ndarray | torch.Tensor, labels=None, *, clamp: bool = False) -> int:
        """Append a batch (layouts as :func:`write_adm_npz`); returns how many were kept."""
        if self._mm is None:
            raise RuntimeError("AdmSampleWriter is closed")
        arr = to_uint8_nhwc(images, clamp=clamp)
        if arr.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must be {self.image_size}x{self.image_size}x3, got {arr.shape[1:]}")
        keep = min(arr.shape[0], self.num_samples - self.count)
        self._mm[self.count:self.count + keep] = arr[:keep]
        if labels is not None:
            lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if lab.shape != (arr.shape[0],):
                raise ValueError(f"labels must have shape [{arr.shape[0]}], got {lab.shape}")
            self._labels.append(lab[:keep].astype(np.int64))
        elif self._labels:
            raise ValueError("labels were given for earlier batches but not for this one")
        self.count += keep
        return keep

    @property
    def full(self) -> bool:
        return self.count >= self.num_samples

    def close(self) -> Path:
        """Write ``path`` (atomically) and remove the temp file. Returns ``path``."""
        if self._mm is None:
            return self.path
        try:
            self._mm.flush()
            arr = self._mm[: self.count]
            check_sample_count(self.count, expected=self.num_samples)

            def write(zf):
                _write_array_member(zf, "arr_0", arr)
                if self._labels:
                    _write_array_member(zf, "arr_1", np.concatenate(self._labels))

            _atomic_npz(self.path, write)
        finally:
            self._mm = None
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return self.path

    def abort(self) -> None:
        """Drop everything (no output file)."""
        self._mm = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "AdmSampleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
