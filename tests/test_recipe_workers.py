"""Worker processes of ``parallel: true`` never outlive the main process (Ctrl-C, SIGTERM, SIGKILL), and a
rerun resumes cleanly. Real signals to a real entry-script process (Linux /proc to find the workers)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_recipe_demo import REPO, TINY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds worker processes through /proc")]

LONG = [a for a in TINY if not a.startswith(("parallel=", "tokenizer.steps=", "tokenizer.ckpt_every="))] + [
    "parallel=true", "ar.train_on=[]", "tokenizer.steps=400", "tokenizer.ckpt_every=10"]


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for c in _children(todo.pop()):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped running (only its exit status is left)


def _start(run_dir: Path, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "recipes" / "run_titok_vcq.py"), *LONG, f"run_dir={run_dir}"],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_workers_stop_within_10s_when_the_main_process_ends(tmp_path, sig):
    run_dir = tmp_path / "run"
    with open(tmp_path / "log.txt", "wb") as log:
        main = _start(run_dir, log)
        try:
            deadline = time.monotonic() + 180
            while not all((run_dir / f"tokenizer_{v}" / "checkpoint.pt").exists() for v in ("vcq", "constant")):
                assert main.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
                assert time.monotonic() < deadline, "the workers never wrote a checkpoint"
                time.sleep(0.1)
            workers = _descendants(main.pid)
            assert len(workers) >= 2, workers  # two tokenizer workers (+ multiprocessing's resource tracker)
            os.kill(main.pid, sig)  # only the main process: no process-group signal
            main.wait(timeout=30)
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = [p for p in workers if _alive(p)]
        finally:
            for p in _descendants(main.pid) | {main.pid}:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
    assert left == [], f"worker processes still running 10 s after {sig.name} of the main process: {left}"
    if sig != signal.SIGKILL:
        return
    # the same command again resumes from the checkpoints and finishes
    res = subprocess.run([sys.executable, str(REPO / "recipes" / "run_titok_vcq.py"), *LONG, f"run_dir={run_dir}"],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    for v in ("vcq", "constant"):
        rec = json.loads((run_dir / f"tokenizer_{v}" / "stage.json").read_text())
        assert rec["status"] == "done" and rec["result"]["steps"] == 400 and rec["result"]["resumed_from"] >= 10
        assert json.loads((run_dir / "tokens" / v / "stage.json").read_text())["status"] == "done"
