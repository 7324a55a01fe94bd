"""The study recipe end to end at smoke size (recipes/configs/study_smoke.yaml): a run interrupted in the
middle of one unit's tokenizer resumes from its checkpoint, the report has every arm x seed, a verdict per
applicable paper claim that the verdict code gives on the report's own numbers, intervals, strict JSON;
a rerun with a changed config refuses before any work; ``collect RUN_DIR`` rebuilds the same report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recipes.pipeline.config import ConfigError, load_config
from recipes.pipeline.rundir import FAIL_ENV
from recipes.study.config import STUDY_SCHEMA
from recipes.study.verdict import PAPER_CLAIMS, VERDICTS, applicable_claims, judge

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "configs" / "study_smoke.yaml"
CRASH_STAGE = "study_arrangements/vcq_cosine/seed1/tokenizer"


def _main(argv):
    from recipes.run_study import main

    return main([str(a) for a in argv])


def _strict(text: str):
    def bad(name):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("study") / "smoke"
    mp = pytest.MonkeyPatch()
    mp.setenv(FAIL_ENV, f"{CRASH_STAGE}:20")  # inherited by the worker processes
    try:
        assert _main(["--config", SMOKE, f"run_dir={run_dir}"]) == 2  # one chain crashed, the others finished
    finally:
        mp.undo()
    rec = json.loads((run_dir / CRASH_STAGE / "stage.json").read_text())
    assert rec["status"] == "running" and (run_dir / CRASH_STAGE / "checkpoint.pt").is_file()
    assert not (run_dir / "report.md").exists()
    assert _main(["--config", SMOKE, f"run_dir={run_dir}"]) == 0  # the rerun resumes
    return run_dir


def test_interrupted_run_resumes_from_its_checkpoint(smoke_run):
    rec = json.loads((smoke_run / CRASH_STAGE / "stage.json").read_text())
    assert rec["status"] == "done"
    assert rec["result"]["resumed_from"] == 20 and rec["result"]["steps"] == 40
    other = json.loads((smoke_run / "study_arrangements/constant_kmax/seed0/tokenizer/stage.json").read_text())
    assert other["result"]["resumed_from"] == 0 and other["invocation"] == rec["invocation"] == 1


def test_report_structure_and_verdicts_from_its_own_numbers(smoke_run):
    cfg = load_config(SMOKE, schema=STUDY_SCHEMA).cfg
    report = _strict((smoke_run / "report.json").read_text())
    assert (smoke_run / "report.md").read_text().startswith("# Does VCQ reproduce?")
    ds = report["datasets"]["study_arrangements"]
    arms, seeds = list(cfg.datasets.study_arrangements.arms), [str(s) for s in cfg.seeds]
    assert set(ds["per_seed"]) == set(arms)
    for arm in arms:
        for metric in ("istar_measured", "psnr", "rfd", "nll_gap", "fd_none", "fd_constant", "fd_aware",
                       "precision_aware", "recall_aware", "class_acc_aware", "probe_top1_equal_k",
                       "probe_top1_equal_capacity", "util_min"):
            values = ds["per_seed"][arm][metric]
            assert sorted(values) == sorted(seeds), (arm, metric)
            assert all(v is None or math.isfinite(v) for v in values.values())
        for row in ds["tables"]["table4"]:
            if row["arm"] == arm:
                assert row["fd_nocfg"]["n"] == len(seeds) and row["fd_nocfg"]["low"] is not None  # an interval
    assert {(r["arm"], r["seed"]) for r in ds["tables"]["utilisation"]} == {(a, s) for a in arms for s in seeds}
    assert sorted({r["n"] for r in ds["tables"]["table1"]}) == [27, 108, 432]  # N/16, N/4, N of 432
    claims = {c.id: c for c in applicable_claims(arms, PAPER_CLAIMS)}
    got = {v["claim"]: v for v in report["verdicts"] if v["dataset"] == "study_arrangements"}
    assert set(got) == set(claims) and len(claims) >= 8
    for cid, v in got.items():
        assert v["verdict"] in VERDICTS and v["reason"]
        assert v["verdict"] == judge(claims[cid], ds["per_seed"]).verdict  # computed from the numbers shown
        assert v["ours"]["treatment"]["n"] == len(seeds)
    assert sum(report["verdict_counts"].values()) == len(got)
    assert report["study"]["wall_s"] > 0 and report["study"]["seeds"] == [int(s) for s in seeds]
    for fig in ("fig2a_study_arrangements", "nll_gap_study_arrangements"):  # Fig. 2(a); NLL gap per position
        assert report["figures"][fig] == f"{fig}.png" and (smoke_run / "report" / f"{fig}.png").stat().st_size > 1000


def test_changed_config_refuses_before_any_work(smoke_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("stage.json")}
    assert _main(["--config", SMOKE, f"run_dir={smoke_run}", "ar.steps=41"]) == 2
    err = capsys.readouterr().err
    assert "ar.steps: 40 -> 41" in err and "study_arrangements/constant_kmax/seed0/ar" in err
    assert "restart_from=" in err and "run_dir=" in err
    assert {p: p.stat().st_mtime_ns for p in smoke_run.rglob("stage.json")} == before  # nothing ran


def test_collect_rebuilds_the_report_from_finished_units(smoke_run, tmp_path):
    first = _strict((smoke_run / "report.json").read_text())
    assert _main(["collect", smoke_run, "--out-md", tmp_path / "r.md"]) == 0
    again = _strict((smoke_run / "report.json").read_text())
    assert [v["verdict"] for v in again["verdicts"]] == [v["verdict"] for v in first["verdicts"]]
    assert again["datasets"]["study_arrangements"]["per_seed"] == first["datasets"]["study_arrangements"]["per_seed"]
    assert (tmp_path / "r.md").read_text().startswith("# Does VCQ reproduce?")


def test_study_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tokenizer.steps'"):
        load_config(SMOKE, ["tokenizer.stepz=5"], schema=STUDY_SCHEMA)
    with pytest.raises(ConfigError, match="not another arm"):
        load_config(SMOKE, ["arms.constant_kmax.k_max=mean_of_vcq_cosin"], schema=STUDY_SCHEMA)
    with pytest.raises(ConfigError, match="is not an arm"):
        load_config(SMOKE, ["datasets.study_arrangements.arms=[constant_kmax,vcq_cosine,vcq_sine]"], schema=STUDY_SCHEMA)
    with pytest.raises(ConfigError, match="restart_dead_codes_every=0"):
        load_config(SMOKE, ["tokenizer.restart_dead_codes_every=0"], schema=STUDY_SCHEMA)
    with pytest.raises(ConfigError, match="sampling.modes.aware.sampler"):
        load_config(SMOKE, ["sampling.modes.aware.sampler=awre_cfg"], schema=STUDY_SCHEMA)
    cfg = load_config(ROOT / "recipes/configs/study_cpu.yaml", schema=STUDY_SCHEMA).cfg
    from recipes.study.config import arm_schedule

    assert arm_schedule(cfg, "constant_mean").k_max == round(arm_schedule(cfg, "vcq_cosine").mean_size) == 97
