"""Image sources (ADM ``.npz``, image folders, in-memory arrays) and the per-reference cache.

An ADM reference batch (e.g. ``VIRTUAL_imagenet256_labeled.npz``) holds ``arr_0`` (uint8
[N, 256, 256, 3]) and ``mu``/``sigma`` (pool_3 statistics from ADM's TensorFlow Inception).
``.npz`` files are read in batches straight from the archive, so 50,000 samples never sit in
memory at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch

from .._io import atomic_path
from .samples import to_uint8_nhwc

ImageSource = Union[str, os.PathLike, np.ndarray, torch.Tensor]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {version}")


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


@contextlib.contextmanager
def _readable_npz(path: str | os.PathLike, name: str = "file") -> Iterator[zipfile.ZipFile]:
    """``zipfile.ZipFile(path)``; a truncated, corrupt or non-zip file becomes a ValueError naming it."""
    try:
        with zipfile.ZipFile(path) as zf:
            yield zf
    except _ZIP_ERRORS as e:
        raise ValueError(
            f"{name}: {str(path)!r} is not a readable .npz archive (truncated, corrupt or not a zip file: {e}); "
            "write it again, e.g. with vcq_plugin.metrics.write_adm_npz"
        ) from None


def npz_keys(path: str | os.PathLike, name: str = "file") -> list[str]:
    """Array names in an ``.npz`` (ValueError naming the file when it is not a readable archive)."""
    with _readable_npz(path, name) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _folder_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {str(path)!r}")
    return files


def _read_image(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class ImageSet:
    """A resolved image source: ``kind`` in {"npz", "folder", "array"}; images uint8 NHWC."""

    kind: str
    num_images: int
    image_shape: tuple[int, int, int]  # (H, W, 3)
    path: Path | None = None
    array: np.ndarray | None = None
    files: tuple[Path, ...] = ()

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield uint8 [B, H, W, 3] batches in order."""
        if self.kind == "array":
            for i in range(0, self.num_images, batch_size):
                yield self.array[i:i + batch_size]
        elif self.kind == "npz":
            with _readable_npz(self.path) as zf, zf.open("arr_0.npy") as f:
                shape, fortran, dtype = _npy_header(f)
                per = int(np.prod(shape[1:])) * dtype.itemsize
                for i in range(0, self.num_images, batch_size):
                    n = min(batch_size, self.num_images - i)
                    try:  # a corrupt member fails its CRC check (BadZipFile) while it is read
                        buf = f.read(n * per)
                    except _ZIP_ERRORS as e:
                        raise ValueError(f"{str(self.path)!r}: arr_0 is corrupt ({e}); write the file again") from None
                    if len(buf) != n * per:
                        raise ValueError(f"{str(self.path)!r}: arr_0 ends after {i + len(buf) // per} of "
                                         f"{self.num_images} images (truncated); write the file again")
                    yield np.frombuffer(buf, dtype=dtype).reshape((n,) + tuple(shape[1:]))
        else:
            for i in range(0, self.num_images, batch_size):
                chunk = [_read_image(p) for p in self.files[i:i + batch_size]]
                for p, im in zip(self.files[i:i + batch_size], chunk):
                    if im.shape != self.image_shape:
                        raise ValueError(
                            f"all images in a folder must have the same size {self.image_shape}; "
                            f"{str(p)!r} is {im.shape}"
                        )
                yield np.stack(chunk)

    def load(self) -> np.ndarray:
        """All images as one uint8 [N, H, W, 3] array."""
        if self.kind == "array":
            return self.array
        return np.concatenate(list(self.batches(max(1, self.num_images))))

    def identity(self) -> dict | None:
        """What identifies a file source for caching (path, size, mtime); None for arrays."""
        if self.path is None:
            return None
        if self.kind == "folder":
            st = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.files]
            return {"folder": str(self.path.resolve()), "files": hashlib.sha256(repr(st).encode()).hexdigest()}
        s = self.path.stat()
        return {"file": str(self.path.resolve()), "size": s.st_size, "mtime_ns": s.st_mtime_ns}


def open_images(source: ImageSource, *, name: str = "images") -> ImageSet:
    """Resolve an ADM ``.npz`` (``arr_0``), a folder of images, or an array/tensor.

    Arrays: uint8 [N, H, W, 3] / [N, 3, H, W] or float [N, 3, H, W] in [0, 1].
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        arr = to_uint8_nhwc(source, name=name)
        if arr.shape[0] == 0:
            raise ValueError(f"{name} is empty")
        return ImageSet("array", arr.shape[0], tuple(arr.shape[1:]), array=arr)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (.npz or folder), numpy array or tensor, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        files = _folder_files(path)
        first = _read_image(files[0])
        return ImageSet("folder", len(files), tuple(first.shape), path=path, files=tuple(files))
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file or folder {str(path)!r}")
    if path.suffix != ".npz":
        raise ValueError(f"{name} must be an .npz file or a folder of images, got {str(path)!r}")
    with _readable_npz(path, name) as zf:
        members = zf.namelist()
        if "arr_0.npy" not in members:
            keys = [n[:-4] for n in members if n.endswith(".npy")]
            raise ValueError(f"{name}: {str(path)!r} has no 'arr_0' image array, so it is not an ADM sample or "
                             f"reference batch (arrays in it: {keys})")
        with zf.open("arr_0.npy") as f:
            try:
                shape, fortran, dtype = _npy_header(f)
            except (ValueError, *_ZIP_ERRORS) as e:
                raise ValueError(f"{name}: arr_0 in {str(path)!r} is corrupt or not a .npy array ({e})") from None
            header_bytes = f.tell()
        stored = zf.getinfo("arr_0.npy").file_size
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
        raise ValueError(f"{name}: arr_0 in {str(path)!r} must be uint8 [N, H, W, 3] (C order), got {dtype} {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name}: {str(path)!r} holds no images")
    expected = header_bytes + int(np.prod(shape))
    if stored != expected:
        raise ValueError(f"{name}: arr_0 in {str(path)!r} holds {stored - header_bytes} bytes of image data but its "
                         f"header declares {tuple(shape)} = {expected - header_bytes} bytes (truncated or corrupt)")
    return ImageSet("npz", int(shape[0]), tuple(int(s) for s in shape[1:]), path=path)


def load_images(source: ImageSource) -> np.ndarray:
    """Load a DIR / ``.npz`` (``arr_0``) / array as one uint8 [N, H, W, 3] array."""
    return open_images(source).load()


def load_reference_stats(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """``mu``/``sigma`` (float64 [2048], [2048, 2048]) stored in an ADM reference ``.npz``, or None."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return None
    keys = npz_keys(path, "reference")
    if "mu" not in keys or "sigma" not in keys:
        return None
    try:
        with np.load(path) as z:
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except (ValueError, OSError, *_ZIP_ERRORS) as e:
        raise ValueError(f"reference: mu/sigma in {str(path)!r} are not readable ({e})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"mu/sigma in {str(path)!r} have bad shapes {mu.shape} / {sigma.shape}")
    return {"mu": mu, "sigma": sigma}


# ---------------------------------------------------------------------------------------------
# per-reference feature cache

CACHE_ENV = "VCQ_METRICS_CACHE"
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$VCQ_METRICS_CACHE`` or ``$TORCH_HOME/vcq_metrics_cache``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()).parent / "vcq_metrics_cache"


def cache_path(cache_dir: str | os.PathLike, identity: dict, extractor_id: dict) -> Path:
    """Cache file for (reference identity, feature extractor identity)."""
    key = json.dumps({"v": _CACHE_VERSION, "ref": identity, "fe": extractor_id}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    stem = Path(identity.get("file") or identity.get("folder") or "ref").name.replace(".", "_")
    return Path(cache_dir) / f"{stem}-{digest}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # corrupt / partial: recompute


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic ``np.savez`` (temp file + os.replace)."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)
