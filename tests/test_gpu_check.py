"""benchmarks/gpu_check.py as CI runs it (``--device cpu --smoke``, tiny shapes, the checkout on
PYTHONPATH as on the GPU machine), and its promise that each check is independent."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from conftest import host_missing_reason

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CHECK_KEYS = {"name", "status", "reason", "seconds", "data", "targets", "failures", "skipped_parts"}
TARGET_KEYS = {"name", "measured", "op", "target", "unit", "met"}

pytestmark = pytest.mark.slow  # ~30 s: inductor compile, two host interpreters


def _run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(out), *args],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


def _load_strict(path: Path) -> dict:
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=reject)


def _checks(report: dict) -> dict:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    proc = _run(out)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc, _load_strict(out)


def test_smoke_run_writes_strict_json_and_prints_the_table(smoke):
    proc, report = smoke
    assert report["schema"] == gpu_check.SCHEMA and report["mode"] == "smoke" and report["passed"] is True
    assert report["device"]["type"] == "cpu" and report["targets_judged"] is False
    assert [c["name"] for c in report["checks"]] == list(gpu_check.ALL_CHECKS)
    for c in report["checks"]:
        assert set(c) == CHECK_KEYS, c["name"]
        assert c["status"] in gpu_check.STATUSES
        assert c["status"] != "skip" or c["reason"], f"{c['name']} skipped without a reason"
        for t in c["targets"]:
            assert set(t) == TARGET_KEYS and t["met"] is None  # a smoke run judges no target
    assert report["summary"]["fail"] == 0 and report["summary"]["error"] == 0
    for name in gpu_check.ALL_CHECKS:
        assert f"| {name} |" in proc.stdout
    assert "NOT judged" in proc.stdout


def test_library_checks_pass_on_cpu(smoke):
    checks = _checks(smoke[1])
    for name in ("environment", "quantizer_correctness", "quantizer_speed", "sampler_overhead", "compile"):
        assert checks[name]["status"] == "pass", (name, checks[name]["reason"])

    correct = checks["quantizer_correctness"]
    for dim in gpu_check.SMOKE.dims:
        for precision in ("fp32", "bf16_autocast"):
            rec = correct["data"][f"dim{dim}_{precision}"]
            assert rec["identical"] and rec["mismatches"] == 0  # indices equal the brute-force argmin
            assert rec["grads_finite"] and rec["grads_nonzero"] and rec["loss"] is not None
    assert correct["data"]["dim8_bf16_autocast"]["z_dtype"] == "bfloat16"
    assert "CUDA" in correct["skipped_parts"]["sync_debug_mode"]

    rows = checks["quantizer_speed"]["data"]["rows"]
    assert len(rows) == len(gpu_check.SMOKE.dims) * len(gpu_check.SMOKE.speed_batches) * 2
    assert all(set(r["ms"]) == {"a", "c", "d:cosine"} and all(v > 0 for v in r["ms"].values()) for r in rows)
    assert len(checks["quantizer_speed"]["targets"]) == 3 * len(rows)

    assert checks["compile"]["data"]["indices_equal_eager"] is True
    assert checks["sampler_overhead"]["data"]["step_ms_sampler"] > 0


@pytest.mark.parametrize("check, host", [("llamagen_generate", "LlamaGen"), ("titok_train", "1d-tokenizer")])
def test_host_checks_run_where_the_host_is_checked_out(smoke, check, host):
    rec = _checks(smoke[1])[check]
    missing_packages = [p for p in gpu_check.TITOK_PACKAGES if importlib.util.find_spec(p) is None] \
        if check == "titok_train" else []
    if host_missing_reason(host):
        assert rec["status"] == "skip" and "git submodule update" in rec["reason"]
    elif missing_packages:
        assert rec["status"] == "skip" and missing_packages[0] in rec["reason"]
    else:
        assert rec["status"] == "pass", rec["reason"] + rec["data"].get("traceback", "")
        if check == "llamagen_generate":
            assert rec["data"]["sampler_over_plain"] > 0
            assert rec["data"]["plain_tokens_outside_schedule"] > 0  # upstream sampling ignores K(i)
        else:
            assert rec["data"]["vcq_cosine"]["quantizer"] == "TiTokVCQ"
            assert rec["data"]["upstream"]["quantizer"] == "VectorQuantizer"
            assert all(v is not None for arm in ("vcq_cosine", "upstream") for v in rec["data"][arm]["losses"])


def test_missing_hosts_are_skipped_with_their_reason_and_the_run_goes_on(tmp_path):
    out = tmp_path / "gpu_check.json"
    nowhere = tmp_path / "not_checked_out"
    proc = _run(out, "--only", "environment", "llamagen_generate", "titok_train",
                env={"VCQ_LLAMAGEN_ROOT": str(nowhere), "VCQ_1D_TOKENIZER_ROOT": str(nowhere)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    checks = _checks(_load_strict(out))
    assert checks["environment"]["status"] == "pass"
    assert checks["environment"]["data"]["hosts"] == {"LlamaGen": False, "1d-tokenizer": False}
    for name in ("llamagen_generate", "titok_train"):
        assert checks[name]["status"] == "skip" and str(nowhere) in checks[name]["reason"]
    assert checks["compile"]["status"] == "skip" and "--only" in checks["compile"]["reason"]


def test_a_failing_check_is_recorded_and_the_others_still_run():
    cfg = gpu_check.Config(device=gpu_check.torch.device("cpu"), smoke=True, sizes=gpu_check.SMOKE)

    def raises(rec, cfg):
        rec.data["before"] = 1
        raise RuntimeError("boom")

    def misses(rec, cfg):
        rec.expect(True, "fine")
        rec.expect(False, "indices differ")
        rec.data["after"] = 2  # an expectation does not stop the check

    def skips(rec, cfg):
        raise gpu_check.SkipCheck("no such host")

    records = [gpu_check.run_check(n, fn, cfg) for n, fn in (("a", raises), ("b", misses), ("c", skips))]
    a, b, c = records
    assert a.status == "error" and "RuntimeError: boom" in a.reason and "boom" in a.data["traceback"]
    assert b.status == "fail" and b.reason == "indices differ" and b.data["after"] == 2
    assert c.status == "skip" and c.reason == "no such host"
    report = gpu_check.build_report(cfg, records, 1.0, 480.0)
    assert report["passed"] is False and report["summary"]["error"] == 1 and report["summary"]["fail"] == 1
    json.dumps(report, allow_nan=False)
