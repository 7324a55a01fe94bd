"""Worker threads whose torch ops run on one core each, for the CPU prefix search.

The tiled search (:mod:`vcq_plugin.prefix_search`) computes independent tiles of 3-4 ops of about
1 ms each. Issued by one thread, every op forks and joins OpenMP's team: measured on the 2-core
machine (torch 2.14), a fork-join costs ~90 us with ``OMP_WAIT_POLICY=PASSIVE`` and 10-20 us
spinning, i.e. up to half of the search's time at K_max 16384, L 256, B 32. Here instead the
calling thread and ``torch.get_num_threads() - 1`` worker threads each run whole tiles
single-threaded, taking them in turn: the search is 1.3-2x faster (``benchmarks/quantizer.py``).
``VCQ_SEARCH_WORKERS=0`` turns them off.

The caller takes a share rather than sleeping until the workers are done: it starts at once, where
a worker first has to be woken (0.2-0.4 ms on the 2-core machine), and it has no one to wait for when
it finishes last (the VCQ-cosine search 0.3-0.6 ms faster per call with 2 threads, measured
interleaved). For its share it runs single-threaded (:func:`single_threaded`).

This relies on OpenMP's thread count being per thread (ATen's OpenMP backend): the workers set
theirs to 1, and the caller's is back to what it was when the search returns. Other backends, and
``torch.compile`` tracing, keep the single-thread loop.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")

_OFF = os.environ.get("VCQ_SEARCH_WORKERS", "") == "0"
_pool: "SingleThreadedWorkers | None" = None
_pool_lock = threading.Lock()


class SingleThreadedWorkers(ThreadPoolExecutor):
    """``size`` threads whose torch ops run single-threaded (their own OpenMP / MKL thread count)."""

    def __init__(self, size: int) -> None:
        super().__init__(size, thread_name_prefix="vcq-search", initializer=self._single_threaded)
        self.size, self.pid = size, os.getpid()
        default = torch.get_num_threads()
        ready = threading.Barrier(size + 1)
        for _ in range(size):  # each task holds its thread until all exist and are initialised
            self.submit(ready.wait)
        ready.wait()
        # set_num_threads also sets ATen's default for threads that have not run a parallel op yet:
        # put it back (this thread's own count is unchanged: OpenMP's is per thread)
        torch.set_num_threads(default)

    @staticmethod
    def _single_threaded() -> None:
        torch.get_num_threads()  # ATen's lazy per-thread init first, so it cannot undo the next line
        torch.set_num_threads(1)


def search_workers(device: torch.device, units: int) -> SingleThreadedWorkers | None:
    """The worker threads that share a search of ``units`` independent units on ``device`` with the
    calling thread (``torch.get_num_threads() - 1`` of them), or None: the calling thread computes
    everything (not on CPU, fewer than 2 units or threads, under ``torch.compile``,
    ``VCQ_SEARCH_WORKERS=0``, or ATen's thread count is not OpenMP's)."""
    global _pool
    if device.type != "cpu" or units < 2 or _OFF or not _openmp_backend() or compiling():
        return None
    size = torch.get_num_threads() - 1  # the caller is one of the threads
    if size < 1:
        return None
    with _pool_lock:
        if _pool is None or _pool.size != size or _pool.pid != os.getpid():  # a new count, or a forked child
            if _pool is not None and _pool.pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = SingleThreadedWorkers(size)
        return _pool


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """This thread's torch ops single-threaded for the block (the caller's share of a search), its
    thread count restored after, also on error. ``torch.set_num_threads`` sets OpenMP's and MKL's
    count for this thread only (0.7 us for both calls, measured), and ATen's default for threads
    that have not yet run a parallel op, so such a thread starting meanwhile would get one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compiling() -> bool:
    """Whether torch.compile is tracing (threads and TorchScript cannot be traced): ``torch.compiler.is_compiling``
    from torch 2.3, ``torch._dynamo.is_compiling`` before."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling
    return bool(is_compiling())


@lru_cache(maxsize=1)
def _openmp_backend() -> bool:
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


class Once(Generic[T]):
    """``fn()`` computed by the first thread that asks; the others wait for it and share it."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn, self._lock, self._value = fn, threading.Lock(), None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._fn()
            return self._value


class Turns(Generic[T]):
    """A sequence's items handed out to threads: each item goes to exactly one of them, in order."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items, self._lock = iter(items), threading.Lock()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._lock:
                item = next(self._items, None)
            if item is None:
                return
            yield item
