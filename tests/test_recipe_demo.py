"""The CPU demo recipe end to end on a tiny config (seconds): outputs, figures, summary, resume after a crash."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.pipeline import rundir
from recipes.pipeline.config import load_config
from recipes.pipeline.dispatch import run_recipe
from vcq_plugin.schedule import CodebookSchedule

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "configs" / "demo_cpu.yaml"

TINY = [
    "threads=1", "parallel=false",
    "data.num_images=96", "data.num_classes=4", "data.image_size=16", "data.holdout_fraction=0.25",
    "tokenizer.dim=32", "tokenizer.patch_size=8", "tokenizer.num_latent_tokens=6", "tokenizer.enc_depth=1",
    "tokenizer.dec_depth=1", "tokenizer.heads=2", "tokenizer.dim_head=16", "tokenizer.codebook_size=32",
    "tokenizer.steps=6", "tokenizer.batch_size=16", "tokenizer.ckpt_every=2", "tokenizer.warmup_steps=1",
    "tokenizer.restart_dead_codes_every=2",
    "analysis.probe_k=2",
    "ar.dim=32", "ar.depth=1", "ar.heads=2", "ar.steps=4", "ar.batch_size=16", "ar.ckpt_every=2",
    "ar.warmup_steps=1", "sampling.per_class=2",
]


def tiny_config(run_dir: Path, *extra: str):
    return load_config(DEMO, TINY + [f"run_dir={run_dir}", *extra])


def copy_run(src: Path, tmp_path: Path) -> Path:
    """A copy of the run folder ``src`` at ``tmp_path / "run"`` (tests that damage or rerun a finished run)."""
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    result = run_recipe(tiny_config(run_dir))
    return run_dir, result


def test_default_config_is_the_titok_pytorch_demo():
    cfg = load_config(DEMO).cfg
    assert cfg.host == "titok-pytorch"
    assert set(cfg.variants) == {"vcq", "constant"}
    assert cfg.variants.vcq.quantizer == "vcq_cosine" and cfg.variants.constant.quantizer == "constant"
    assert list(cfg.ar.train_on) == ["vcq", "constant"]  # the AR model on both tokenizers, side by side
    assert 256 <= cfg.tokenizer.codebook_size <= 1024


def test_run_folder_is_complete(demo_run):
    run_dir, _ = demo_run
    for rel in ["config.yaml", "config_history/001.yaml", "summary.md", "recon.png", "cliff/report.json",
                "cliff/fig2a_entropy_cliff.png", "cliff/fig2b_schedules.png", "tokenizer_vcq/checkpoint.pt",
                "tokenizer_constant/checkpoint.pt", "tokenizer_vcq/recon.png"]:
        assert (run_dir / rel).is_file(), rel
    for v in ("vcq", "constant"):
        for rel in [f"ar_{v}/checkpoint.pt", f"samples_{v}/grid.png", f"samples_{v}/samples.npz"]:
            assert (run_dir / rel).is_file(), rel
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def test_every_output_has_its_sha256_recorded(demo_run):
    from vcq_plugin._io import sha256_file

    run_dir, _ = demo_run
    records = [json.loads(p.read_text()) for p in run_dir.rglob("stage.json")]
    assert len(records) == 2 + 2 + 1 + 2 + 2  # tokenizer, tokens, cliff, ar, samples
    for rec in records:
        assert rec["status"] == "done" and rec["invocation"] == 1
        for name, out in rec["outputs"].items():
            assert sha256_file(run_dir / rec["stage"] / name) == out["sha256"], (rec["stage"], name)
    ar = json.loads((run_dir / "ar_vcq" / "stage.json").read_text())
    assert set(ar["inputs"]) == {f"tokens/vcq/{f}" for f in ("tokens.npy", "labels.npy", "heldout_index.npy",
                                                             "schedule.json")}
    assert ar["config"]["ar.steps"] == 4 and "ar.train_on" not in ar["config"]


def test_tokens_well_formed(demo_run):
    run_dir, _ = demo_run
    for name, kind in [("vcq", "cosine"), ("constant", "constant")]:
        d = run_dir / "tokens" / name
        tokens, labels = np.load(d / "tokens.npy"), np.load(d / "labels.npy")
        sched = CodebookSchedule.from_spec(json.loads((d / "schedule.json").read_text()))
        assert tokens.shape == (96, 6) and tokens.dtype == np.int32
        assert labels.shape == (96,) and labels.dtype == np.int64 and set(labels.tolist()) == {0, 1, 2, 3}
        assert sched.kind == kind and sched.seq_len == 6 and sched.k_max == 32
        assert (tokens >= 0).all() and (tokens < sched.sizes.numpy()[None]).all()
        assert np.load(d / "codebook.npy").shape == (32, 32)


def test_report_has_both_cliffs_and_probes(demo_run):
    run_dir, _ = demo_run
    report = json.loads((run_dir / "cliff" / "report.json").read_text())
    assert set(report["sets"]) == {"vcq", "constant"}
    for s in report["sets"].values():
        assert len(s["conditional_entropy"]) == 6
        assert "measured_istar" in s and "computed_istar" in s
        assert 0.0 <= s["probe"]["top1"] <= 1.0
    # Eq. 2 with N = 96 (6.58 bits): a constant K=32 (5 bits/token) codebook reaches it at 2 tokens
    assert report["sets"]["constant"]["computed_istar"] == 2
    assert report["sets"]["vcq"]["computed_istar"] > 2


def _label_column_is_drawn(img, rows: int, row_h: int, top: int) -> bool:
    a = np.asarray(img.convert("L"))
    return all((a[top + r * row_h: top + (r + 1) * row_h, :40] < 128).any() for r in range(rows))


def test_samples_obey_schedule_and_grid_is_readable(demo_run):
    from PIL import Image

    run_dir, _ = demo_run
    for v in ("vcq", "constant"):
        toks = np.load(run_dir / f"samples_{v}" / "tokens.npy")
        sched = CodebookSchedule.from_spec(json.loads((run_dir / "tokens" / v / "schedule.json").read_text()))
        assert toks.shape == (4 * 2, 6)
        assert (toks >= 0).all() and (toks < sched.sizes.numpy()[None]).all()
        with np.load(run_dir / f"samples_{v}" / "samples.npz") as z:
            assert z["arr_0"].shape == (8, 16, 16, 3) and z["arr_0"].dtype == np.uint8
            assert z["arr_1"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        img = Image.open(run_dir / f"samples_{v}" / "grid.png")
        w, h = img.size
        assert w >= 2 * 64 + 40 and h >= 4 * 64  # >= 64 px per sample, plus a column of class names
        assert _label_column_is_drawn(img, rows=4, row_h=66, top=22)
    w, h = Image.open(run_dir / "recon.png").size
    assert h >= 3 * 64  # rows: original, vcq, constant


def _row(text: str, first: str) -> dict[str, str]:
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    header = next(lines[j] for j in range(i, -1, -1) if lines[j].startswith("|") and lines[j + 1].startswith("|---"))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    return dict(zip(cells(header), cells(lines[i])))


def test_summary_explains_columns_and_shows_chance(demo_run):
    run_dir, result = demo_run
    text = (run_dir / "summary.md").read_text()
    for name in ("vcq", "constant"):
        s = result["report"]["sets"][name]
        row = _row(text, name)
        istar = lambda v: "—" if v is None else str(v)  # noqa: E731  (summary.md writes None as —)
        assert row["i* Eq. 2"] == istar(s["computed_istar"]) and row["i* measured"] == istar(s["measured_istar"])
        assert float(row["PSNR (dB)"]) == pytest.approx(result["tokenizers"][name]["psnr_heldout"], abs=0.01)
        assert float(row["probe top-1 (chance 0.250)"]) == pytest.approx(s["probe"]["top1"], abs=1e-3)
        assert "probe top-5 (chance 1.000)" in row  # min(5, C) / C with C = 4
        assert f"{result['ar'][name]['heldout']['bits_per_token']:.3f}" in text
    assert _row(text, "constant")["schedule"] == "K=32" and _row(text, "vcq")["schedule"] == "cosine K=2..32"
    for column in ("schedule", "mean K", "i* Eq. 2", "i* measured", "PSNR", "codes used", "probe top-1 / top-5",
                   "held-out / train NLL", "uniform over K(i)", "every token < K(i)", "class agreement"):
        assert f"- **{column}**:" in text, column
    assert "## Generation checks, side by side" in text
    assert "unique@" not in text and "util<k" not in text  # the analysis table's unexplained columns


def test_short_run_warnings_in_summary_and_result(demo_run):
    run_dir, result = demo_run
    codes = {w.code for w in result["warnings"]}
    assert "short-run" in codes
    text = (run_dir / "summary.md").read_text()
    assert "## Warnings" in text and "tokenizer.steps=6 is far below its default 800" in text
    assert "ar.steps=4 is far below its default 600" in text


def test_default_length_gives_no_short_run_warning():
    from recipes.pipeline.config import SCHEMAS, schema_defaults
    from recipes.pipeline.diagnostics import diagnose

    defaults = schema_defaults(SCHEMAS["titok-pytorch"])
    assert diagnose(defaults, defaults, {}, {}, {"vcq": {"heldout": {"bits_per_token": 1.0}}}) == []


def test_rerun_skips_finished_stages(demo_run):
    run_dir, first = demo_run
    before = (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns
    again = run_recipe(tiny_config(run_dir))
    assert (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns == before
    assert again["tokenizers"]["vcq"]["psnr_heldout"] == first["tokenizers"]["vcq"]["psnr_heldout"]
    assert sorted(p.name for p in (run_dir / "config_history").iterdir()) == ["001.yaml"]  # same command again


@pytest.mark.slow  # worker processes: a fresh interpreter each
def test_parallel_stage_chains_give_the_same_results(tmp_path, demo_run):
    run_dir = tmp_path / "run"
    run_recipe(tiny_config(run_dir, "parallel=true"))
    for name in ("vcq", "constant"):
        assert np.array_equal(np.load(run_dir / "tokens" / name / "tokens.npy"),
                              np.load(demo_run[0] / "tokens" / name / "tokens.npy"))
        assert np.array_equal(np.load(run_dir / f"samples_{name}" / "tokens.npy"),
                              np.load(demo_run[0] / f"samples_{name}" / "tokens.npy"))


@pytest.mark.slow
def test_worker_failure_names_the_stage(tmp_path, monkeypatch):
    from recipes.pipeline.workers import WorkerError

    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_constant:3")
    with pytest.raises(WorkerError, match=r"tokenizer_constant.*InjectedFailure.*after step 3"):
        run_recipe(tiny_config(tmp_path / "run", "parallel=true", "ar.train_on=[]"))


@pytest.mark.parametrize("restart_every", [2, 3])
def test_crash_during_tokenizer_training_resumes(tmp_path, monkeypatch, demo_run, restart_every):
    """Kill tokenizer training after step 3 (checkpoint at 2), rerun the same command: it resumes from
    step 2, ends at the configured step count, and matches the uninterrupted run exactly. With restarts
    every 3 steps the checkpoint falls between two restarts (this used to be refused as a config error)."""
    extra = [f"tokenizer.restart_dead_codes_every={restart_every}", "~variants.constant", "ar.train_on=[]"]
    if restart_every == 2:
        ref_dir = demo_run[0]
    else:
        ref_dir = tmp_path / "ref"
        run_recipe(tiny_config(ref_dir, *extra))
    run_dir = tmp_path / "run"
    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_vcq:3")
    with pytest.raises(rundir.InjectedFailure):
        run_recipe(tiny_config(run_dir, *extra))
    ckpt = torch.load(run_dir / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    assert json.loads((run_dir / "tokenizer_vcq" / "stage.json").read_text())["status"] == "running"
    monkeypatch.delenv(rundir.FAIL_ENV)

    result = run_recipe(tiny_config(run_dir, *extra))
    info = result["tokenizers"]["vcq"]
    assert info["resumed_from"] == 2 and info["steps"] == 6
    ref = torch.load(ref_dir / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    done = torch.load(run_dir / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    assert done["step"] == ref["step"] == 6
    for k, v in ref["model"].items():
        assert torch.equal(v, done["model"][k]), k
    assert np.array_equal(np.load(run_dir / "tokens/vcq/tokens.npy"), np.load(ref_dir / "tokens/vcq/tokens.npy"))


@pytest.mark.slow
def test_entry_script_log_has_no_third_party_warnings(tmp_path):
    """The whole demo through its entry script, workers included: no FutureWarning / UserWarning noise
    (x-transformers' torch.jit.script warning used to appear once per process)."""
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = [a for a in TINY if not a.startswith("parallel=")] + ["parallel=true", f"run_dir={tmp_path / 'run'}"]
    p = subprocess.run([sys.executable, str(REPO / "recipes" / "run_titok_vcq.py"), *args], capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert not re.findall(r"\w+Warning:", out), re.findall(r".*\w+Warning:.*", out)
    assert "WARNING short-run: tokenizer.steps=6" in out  # our own warnings do show, once each
