"""Atomic file output, the one writer family of the project (library, recipes, CLI).

Every writer puts the bytes in a temp file next to the target and moves it into place with
``os.replace``, so a run killed at any moment never leaves a half-written checkpoint, report or
sample file. Writers hash what they write (sha256, computed while writing) and return a
:class:`Written` (path, sha256, size) that can be used wherever a path is expected. JSON is strict:
NaN / Infinity are refused (write ``null`` plus a reason instead).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

_UMASK = os.umask(0)
os.umask(_UMASK)


class Written(NamedTuple):
    """What a writer wrote: ``path``, the ``sha256`` hex digest and ``size`` in bytes of its content.
    Usable as a path (``open(w)``, ``Path(w)``, ``f"{w}"``)."""

    path: Path
    sha256: str
    size: int

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success move it onto ``path``, on error delete it.

    ``suffix`` lets writers that insist on an extension (``np.savez`` adds ``.npz``,
    ``savefig`` infers the format) keep it: e.g. ``suffix=".tmp.npz"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _HashingFile:
    """A binary file wrapper that feeds every written byte to sha256 (numpy / torch write through it)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self._h, self.size = f, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._h.update(view)
        self.size += view.nbytes
        return self._f.write(view)

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> Written:
    """Call ``write(f)`` on a binary, write-only file object, atomically, hashing what it writes.

    ``f`` has ``write`` and ``flush`` only (no ``seek`` / ``tell``): enough for ``np.save``,
    ``torch.save`` and PIL's ``Image.save(f, format=...)``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        f = _HashingFile(raw)
        write(f)
        raw.flush()
        os.fsync(raw.fileno())
    return Written(Path(path), f.hexdigest(), f.size)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Written:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Written:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    """numpy / torch scalars and arrays, paths: their plain JSON form (strictness still applies)."""
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy scalar / array, torch tensor
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The key path of the first NaN / Infinity in ``obj`` (None when there is none)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else f"{where or '<root>'} = {obj}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _non_finite(v, f"{where}.{k}" if where else str(k))
            if hit:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _non_finite(v, f"{where}[{i}]")
            if hit:
                return hit
    elif hasattr(obj, "tolist") and callable(obj.tolist):
        return _non_finite(obj.tolist(), where)
    return None


def json_text(obj: Any, *, indent: int | None = 1, sort_keys: bool = False, where: str = "JSON") -> str:
    """Strict JSON text (``allow_nan=False``); a NaN / Infinity raises a ValueError naming its key."""
    try:
        return json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False, default=_json_default)
    except ValueError as e:
        hit = _non_finite(obj)
        if hit is None:
            raise
        raise ValueError(f"{where}: {hit} is not valid JSON (no NaN / Infinity); write null plus a reason "
                         "instead") from e


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 1, sort_keys: bool = False) -> Written:
    """Strict JSON, atomically: NaN / Infinity raise a ValueError naming the file and the key."""
    return atomic_write_text(path, json_text(obj, indent=indent, sort_keys=sort_keys, where=str(path)) + "\n")


def atomic_write_npy(path: str | os.PathLike, array: Any) -> Written:
    """``np.save`` (no pickles), atomically."""
    import numpy as np

    arr = np.asarray(array)
    return atomic_write(path, lambda f: np.lib.format.write_array(f, arr, allow_pickle=False))


def atomic_write_torch(path: str | os.PathLike, obj: Any) -> Written:
    """``torch.save``, atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
