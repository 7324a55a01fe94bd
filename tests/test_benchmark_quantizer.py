"""benchmarks/quantizer.py: the bootstrap interval of (c)/(d) and the computed verdict line, on a tiny
problem in its own interpreter (the script sets OpenMP's wait policy and glibc's malloc thresholds
for its process)."""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "quantizer.py"


@pytest.fixture
def bench(monkeypatch):
    """The script as a module; the OMP_WAIT_POLICY it sets on import is undone after the test."""
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    from benchmarks import quantizer

    return quantizer


def test_ratio_interval_is_exact_for_a_constant_ratio(bench):
    assert bench.ratio_interval([3.0, 3.0, 3.0, 3.0], [1.5, 1.5, 1.5, 1.5]) == (2.0, 2.0)


def test_ratio_interval_brackets_the_ratio_of_medians_and_is_reproducible(bench):
    num = [60.0, 66.0, 58.0, 71.0, 63.0, 64.0, 80.0, 59.0, 62.0, 65.0, 61.0, 67.0, 70.0, 57.0, 64.5]
    den = [25.0, 26.5, 24.0, 30.0, 25.5, 27.0, 31.0, 24.5, 26.0, 26.0, 25.0, 28.0, 29.0, 23.5, 26.2]
    lo, hi = bench.ratio_interval(num, den)
    assert lo < statistics.median(num) / statistics.median(den) < hi
    assert (lo, hi) == bench.ratio_interval(num, den)  # a fixed seed: the same interval every run
    assert min(num) / max(den) <= lo and hi <= max(num) / min(den)  # medians of resamples of the data


@pytest.mark.slow  # ~20 s: its own interpreter
def test_the_script_prints_a_computed_verdict_on_a_tiny_problem():
    args = ["--dims", "8", "--modes", "eval", "--k-max", "256", "--seq-len", "16", "--batch", "4",
            "--reps", "1", "--fast-reps", "5"]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]  # indices identical to the brute-force reference
    verdict = re.search(r"cosine \(c\)/\(d\) wall, eval: dim 8 ([\d.]+)x \(95 % ([\d.]+)-([\d.]+)\); "
                        r">= 2\.5x at every dim in this run: (True|False)", run.stdout)
    assert verdict, run.stdout[-2000:]
    ratio, lo, hi = (float(verdict.group(i)) for i in (1, 2, 3))
    assert lo <= ratio <= hi and verdict.group(4) == str(ratio >= 2.5)
