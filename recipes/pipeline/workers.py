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


def run_in_processes(jobs: Sequence[Job], max_workers: int) -> None:
    """Run every job in its own spawned process, at most ``max_workers`` at once; wait for all of them.

    Raises :class:`WorkerError` naming the first job that failed (after the others finished). On any
    exception while waiting (e.g. KeyboardInterrupt) the running workers are terminated first.
    """
    ctx = mp.get_context("spawn")
    queue = list(jobs)
    running: dict[str, tuple[Any, Any]] = {}
    failures: list[str] = []
    try:
        while queue or running:
            while queue and len(running) < max(1, max_workers):
                job = queue.pop(0)
                parent_conn, child_conn = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child_main, args=(child_conn, os.getpid(), job.target, job.args),
                                name=f"vcq-{job.name}", daemon=False)
                p.start()
                child_conn.close()
                log.info("[%s] started in worker process %d", job.name, p.pid)
                running[job.name] = (p, parent_conn)
            for name, (p, conn) in list(running.items()):
                p.join(timeout=0.2)
                if p.exitcode is None:
                    continue
                msg = conn.recv() if conn.poll() else ("error", "exit", f"exit code {p.exitcode}")
                conn.close()
                del running[name]
                if msg[0] != "ok":
                    failures.append(f"[{name}] failed in worker process {p.pid}: {msg[1]}: {msg[2]}")
    except BaseException:
        _terminate([p for p, _ in running.values()])
        raise
    if failures:
        raise WorkerError("; ".join(failures))


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
