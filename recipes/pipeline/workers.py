"""Worker processes that never outlive the main process.

:func:`run_in_processes` runs jobs in spawned processes, at most ``max_workers`` at a time. Each
worker asks Linux for a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so whatever ends
the main process (Ctrl-C, SIGTERM, SIGKILL, the OOM killer) also ends its workers at once; where
``prctl`` is not available a watch thread polls the parent pid every second. If the main process
itself stops waiting (an exception, KeyboardInterrupt) it terminates its workers before re-raising.
A worker's failure comes back as :class:`WorkerError` with the worker's own message.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

log = logging.getLogger("vcq.recipe")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 1.0
TERMINATE_GRACE_S = 5.0


class WorkerError(RuntimeError):
    """A job failed in its worker process; the message is the worker's."""


@dataclass(frozen=True)
class Job:
    """``target`` is ``"module:function"`` (importable in a fresh interpreter), called as ``function(*args)``."""

    name: str
    target: str
    args: tuple = ()


def die_with_parent(parent_pid: int) -> str:
    """Make this process end when ``parent_pid`` does; returns how ("prctl" or "watch thread")."""
    how = "watch thread"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                how = "prctl"
        except OSError:
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if how != "prctl":
        def watch() -> None:
            while True:
                if os.getppid() != parent_pid:
                    os._exit(1)
                time.sleep(WATCH_INTERVAL_S)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return how


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main(conn: Any, parent_pid: int, target: str, args: tuple) -> None:
    die_with_parent(parent_pid)
    try:
        _resolve(target)(*args)
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent, named
        traceback.print_exc()
        conn.send(("error", type(e).__name__, str(e)))
        conn.close()
        sys.exit(1)
    conn.send(("ok", "", ""))
    conn.close()


class WorkerPool:
    """Jobs in spawned processes, at most ``max_workers`` at once; :meth:`poll` never blocks long, so the
    main process can do other work meanwhile. Use as a context manager: leaving it by an exception
    (e.g. KeyboardInterrupt) terminates the running workers first."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, int(max_workers))
        self._ctx = mp.get_context("spawn")
        self._queue: list[Job] = []
        self._running: dict[str, tuple[Any, Any]] = {}
        self.failures: list[str] = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            _terminate([p for p, _ in self._running.values()])

    def submit(self, job: Job) -> None:
        self._queue.append(job)
        self._fill()

    @property
    def busy(self) -> bool:
        return bool(self._queue or self._running)

    def _fill(self) -> None:
        while self._queue and len(self._running) < self.max_workers:
            job = self._queue.pop(0)
            parent_conn, child_conn = self._ctx.Pipe(duplex=False)
            p = self._ctx.Process(target=_child_main, args=(child_conn, os.getpid(), job.target, job.args),
                                  name=f"vcq-{job.name}", daemon=False)
            p.start()
            child_conn.close()
            log.info("[%s] started in worker process %d", job.name, p.pid)
            self._running[job.name] = (p, parent_conn)

    def poll(self, timeout: float = 0.2) -> list[str]:
        """Names of the jobs that ended since the last call (waits up to ``timeout`` s for one)."""
        ended: list[str] = []
        deadline = time.monotonic() + timeout
        while not ended:
            for name, (p, conn) in list(self._running.items()):
                if p.exitcode is None:
                    continue
                msg = conn.recv() if conn.poll() else ("error", "exit", f"exit code {p.exitcode}")
                conn.close()
                del self._running[name]
                ended.append(name)
                if msg[0] != "ok":
                    self.failures.append(f"[{name}] failed in worker process {p.pid}: {msg[1]}: {msg[2]}")
            if ended or not self._running or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self._fill()
        return ended

    def raise_failures(self) -> None:
        if self.failures:
            raise WorkerError("; ".join(self.failures))


def run_in_processes(jobs: Sequence[Job], max_workers: int) -> None:
    """Run every job in its own spawned process, at most ``max_workers`` at once; wait for all of them.

    Raises :class:`WorkerError` naming the jobs that failed (after the others finished).
    """
    with WorkerPool(max_workers) as pool:
        for job in jobs:
            pool.submit(job)
        while pool.busy:
            pool.poll(timeout=1.0)
    pool.raise_failures()


def _terminate(processes: Sequence[Any]) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(timeout=1.0)
