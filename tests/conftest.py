"""Shared test helpers: where the host submodules live, and how to run code against them.

The two research hosts (bytedance/1d-tokenizer, LlamaGen) both ship a top-level ``utils``
package, so they cannot be imported into one process. Their tests therefore run their checks in
a fresh interpreter with only that host's root on ``sys.path`` (:func:`run_host_checks`).
"""
from __future__ import annotations

import json
import os
import re
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


_RUNS: Dict[str, "subprocess.Popen[str]"] = {}


def start_host_checks(name: str, script: Path, checks: Sequence[str]) -> "subprocess.Popen[str] | None":
    """Start ``python script CHECK...`` (no CHECK: all of them) in a fresh interpreter whose cwd and ``sys.path`` start with
    the host root (as the host's own scripts expect), unless already started; None if the host
    is missing. Single-threaded torch: the models are tiny, and two hosts can then run side by side.
    """
    key = str(Path(script).resolve())
    if key in _RUNS:
        return _RUNS[key]
    if host_missing_reason(name):
        return None
    root = host_root(name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    _RUNS[key] = subprocess.Popen(
        [sys.executable, str(script), *checks], cwd=root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    return _RUNS[key]


def run_host_checks(name: str, script: Path, checks: Sequence[str], timeout: float = 600) -> Dict[str, dict]:
    """Results of :func:`start_host_checks` (started now if it was not yet): ``{check: record}``,
    one JSON line per check printed by the script: ``{"check", "ok", "error", "seconds"}``."""
    require_host(name)
    proc = start_host_checks(name, script, checks)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    results: Dict[str, dict] = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"check"' in line:
            rec = json.loads(line)
            results[rec["check"]] = rec
    missing = [c for c in checks if c not in results]
    if missing:
        raise AssertionError(
            f"host checks {missing} produced no result (exit code {proc.returncode}).\n"
            f"stdout tail:\n{stdout[-3000:]}\nstderr tail:\n{stderr[-6000:]}"
        )
    return results


# upstream test modules run as host-check scripts (run with no arguments = all their checks)
UPSTREAM_SUITES = {"test_upstream_1d_tokenizer.py": "1d-tokenizer", "test_upstream_llamagen.py": "LlamaGen"}


def pytest_configure(config: pytest.Config) -> None:
    """Start the host-check subprocesses before collection (importing torch and the rest of the
    suite takes a while) when the run will include them; they then run in parallel."""
    if re.search(r"not\s+upstream", config.getoption("markexpr", "") or ""):
        return
    here = Path(__file__).resolve().parent
    targets = [Path(a.split("::")[0]).resolve() for a in (config.args or [str(here)])]
    for fname, host in UPSTREAM_SUITES.items():
        script = here / fname
        if any(script == t or t in script.parents for t in targets):
            start_host_checks(host, script, ())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start any selected host-check subprocess that is not running yet."""
    seen = set()
    for item in session.items:
        mod = getattr(item, "module", None)
        if mod is None or mod in seen or not hasattr(mod, "HOST_CHECKS"):
            continue
        seen.add(mod)
        host, checks = mod.HOST_CHECKS
        start_host_checks(host, Path(mod.__file__), checks)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for proc in _RUNS.values():  # only our own children, by handle
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def check_passed(results: Dict[str, dict], name: str) -> dict:
    rec = results[name]
    if rec.get("skip"):
        pytest.skip(rec["skip"])
    if not rec["ok"]:
        pytest.fail(f"host check {name!r} failed:\n{rec['error']}", pytrace=False)
    return rec


def host_check_tests(host: str, script: Path, checks: Sequence[str]):
    """The pytest side of an upstream test module: ``(pytestmark, results fixture, test)``.

    ``pytestmark, results, test_host_check = host_check_tests(HOST, Path(__file__), CHECKS)``
    gives one test per check, run in the host's own interpreter (see :func:`start_host_checks`).
    """
    reason = host_missing_reason(host)
    marks = [pytest.mark.upstream, pytest.mark.skipif(reason is not None, reason=str(reason))]

    @pytest.fixture(scope="module")
    def results():
        return run_host_checks(host, script, checks)

    @pytest.mark.parametrize("check", checks)
    def test_host_check(results, check):
        check_passed(results, check)

    return marks, results, test_host_check
