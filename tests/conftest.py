"""Shared test helpers: where the host submodules live, and how to run code against them.

The two research hosts (bytedance/1d-tokenizer, LlamaGen) both ship a top-level ``utils``
package, so they cannot be imported into one process. Their tests therefore run their checks in
a fresh interpreter with only that host's root on ``sys.path`` (:func:`run_host_checks`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
THIRD_PARTY = REPO / "third_party"
# a file each checkout of the host has (an uninitialised submodule is an empty directory)
_HOST_MARKERS = {
    "1d-tokenizer": "modeling/titok.py",
    "LlamaGen": "autoregressive/models/generate.py",
}


def host_root(name: str) -> Path:
    return THIRD_PARTY / name


def host_missing_reason(name: str) -> str | None:
    """None when ``third_party/NAME`` is checked out, else the skip reason saying how to get it."""
    marker = host_root(name) / _HOST_MARKERS[name]
    if marker.is_file():
        return None
    return (
        f"host codebase third_party/{name} is not checked out; run "
        f"`git submodule update --init third_party/{name}` (see third_party/README.md)"
    )


def require_host(name: str) -> Path:
    """Skip the calling test unless ``third_party/NAME`` is present; returns its root."""
    reason = host_missing_reason(name)
    if reason:
        pytest.skip(reason)
    return host_root(name)


def run_host_checks(name: str, script: Path, checks: Sequence[str], timeout: float = 240) -> Dict[str, dict]:
    """Run ``python script CHECK...`` in a fresh interpreter whose cwd and ``sys.path[0]`` are the
    host root (as the host's own scripts expect). The script prints one JSON line per check:
    ``{"check": name, "ok": bool, "error": traceback or "", ...}``. Returns ``{check: record}``.
    """
    root = require_host(name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(
        [sys.executable, str(script), *checks], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )
    results: Dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"check"' in line:
            rec = json.loads(line)
            results[rec["check"]] = rec
    missing = [c for c in checks if c not in results]
    if missing:
        raise AssertionError(
            f"host checks {missing} produced no result (exit code {proc.returncode}).\n"
            f"stdout tail:\n{proc.stdout[-3000:]}\nstderr tail:\n{proc.stderr[-6000:]}"
        )
    return results


def check_passed(results: Dict[str, dict], name: str) -> dict:
    rec = results[name]
    if not rec["ok"]:
        pytest.fail(f"host check {name!r} failed:\n{rec['error']}", pytrace=False)
    return rec
