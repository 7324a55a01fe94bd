"""The CPU demo recipe end to end on a tiny config (seconds), resume after a crash, bad configs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.pipeline import rundir
from recipes.pipeline.config import ConfigError, load_config
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


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    result = run_recipe(tiny_config(run_dir))
    return run_dir, result


def test_default_config_is_the_titok_pytorch_demo():
    cfg = load_config(DEMO)
    assert cfg.host == "titok-pytorch"
    assert set(cfg.variants) == {"vcq", "constant"}
    assert cfg.variants.vcq.quantizer == "vcq_cosine" and cfg.variants.constant.quantizer == "constant"
    assert 256 <= cfg.tokenizer.codebook_size <= 1024


def test_run_folder_is_complete(demo_run):
    run_dir, _ = demo_run
    for rel in ["config.yaml", "summary.md", "cliff/report.json", "cliff/fig2a_entropy_cliff.png",
                "cliff/fig2b_schedules.png", "tokenizer_vcq/checkpoint.pt", "tokenizer_constant/checkpoint.pt",
                "tokenizer_vcq/recon.png", "ar_vcq/checkpoint.pt", "samples_vcq/grid.png", "samples_vcq/samples.npz"]:
        assert (run_dir / rel).is_file(), rel
    assert not list(run_dir.rglob("*.tmp")), "temporary files left behind"


def test_tokens_well_formed(demo_run):
    run_dir, _ = demo_run
    for name, kind in [("vcq", "cosine"), ("constant", "constant")]:
        d = run_dir / "tokens" / name
        tokens, labels = np.load(d / "tokens.npy"), np.load(d / "labels.npy")
        sched = CodebookSchedule.from_dict(json.loads((d / "schedule.json").read_text()))
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


def test_samples_obey_schedule_and_grid(demo_run):
    from PIL import Image

    run_dir, _ = demo_run
    toks = np.load(run_dir / "samples_vcq" / "tokens.npy")
    sched = CodebookSchedule.from_dict(json.loads((run_dir / "tokens" / "vcq" / "schedule.json").read_text()))
    assert toks.shape == (4 * 2, 6)
    assert (toks >= 0).all() and (toks < sched.sizes.numpy()[None]).all()
    with np.load(run_dir / "samples_vcq" / "samples.npz") as z:
        assert z["arr_0"].shape == (8, 16, 16, 3) and z["arr_0"].dtype == np.uint8
        assert z["arr_1"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    w, h = Image.open(run_dir / "samples_vcq" / "grid.png").size
    assert w > 2 * 32 and h > 4 * 32  # 2 columns x 4 class rows of 32-pixel (upscaled) images


def test_summary_reports_istar_psnr_nll_probe_for_both(demo_run):
    run_dir, result = demo_run
    text = (run_dir / "summary.md").read_text()
    for name in ("vcq", "constant"):
        s = result["report"]["sets"][name]
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        istar = lambda v: "—" if v is None else str(v)  # noqa: E731  (summary.md writes None as —)
        assert cells[3] == istar(s["computed_istar"]) and cells[4] == istar(s["measured_istar"])
        assert float(cells[5]) == pytest.approx(result["tokenizers"][name]["psnr_heldout"], abs=0.01)
        assert float(cells[6]) == pytest.approx(s["probe"]["top1"], abs=1e-3)
    assert "held-out NLL" in text and f"{result['ar']['vcq']['heldout']['bits_per_token']:.3f}" in text


def test_rerun_skips_finished_stages(demo_run):
    run_dir, first = demo_run
    before = (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns
    again = run_recipe(tiny_config(run_dir))
    assert (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns == before
    assert again["tokenizers"]["vcq"]["psnr_heldout"] == first["tokenizers"]["vcq"]["psnr_heldout"]


def test_parallel_tokenizer_stages_give_the_same_tokens(tmp_path, demo_run):
    run_dir = tmp_path / "run"
    run_recipe(tiny_config(run_dir, "parallel=true", "ar.train_on=[]"))
    for name in ("vcq", "constant"):
        assert np.array_equal(np.load(run_dir / "tokens" / name / "tokens.npy"),
                              np.load(demo_run[0] / "tokens" / name / "tokens.npy"))


def test_crash_during_tokenizer_training_resumes(tmp_path, monkeypatch, demo_run):
    """Kill tokenizer training after step 3 (checkpoint at 2), rerun the same command: it resumes
    from step 2, ends at the configured step count, and matches the uninterrupted run exactly."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_vcq:3")
    with pytest.raises(rundir.InjectedFailure):
        run_recipe(tiny_config(run_dir))
    ckpt = torch.load(run_dir / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    assert not (run_dir / "tokenizer_vcq" / "stage.json").exists()
    monkeypatch.delenv(rundir.FAIL_ENV)

    result = run_recipe(tiny_config(run_dir, "variants={vcq: {quantizer: vcq_cosine, k_min: 2}}", "ar.train_on=[]"))
    info = result["tokenizers"]["vcq"]
    assert info["resumed_from"] == 2 and info["steps"] == 6
    ref = torch.load(demo_run[0] / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    done = torch.load(run_dir / "tokenizer_vcq" / "checkpoint.pt", weights_only=False)
    assert done["step"] == ref["step"] == 6
    for k, v in ref["model"].items():
        assert torch.equal(v, done["model"][k]), k
    assert np.array_equal(np.load(run_dir / "tokens/vcq/tokens.npy"), np.load(demo_run[0] / "tokens/vcq/tokens.npy"))


# ---------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("override, match", [
    ("variants.vcq.quantizer=vcq_cosin", "Did you mean 'vcq_cosine'"),
    ("variants.vcq.seq_len=32", "seq_len=32 but the tokenizer produces 6 tokens"),
    ("ar.vocab_size=20", "K_max=32 image tokens"),
    ("data.name=imagefolder", "data.path is required"),
    ("host=titok", "unknown host 'titok'"),
    ("sampling.sampler=awre_cfg", "unknown sampler"),
    ("metrics.inception_weights=/nonexistent/pt_inception.pth", "is not a file"),
    ("tokenizer.restart_dead_codes_every=3", "must be a multiple"),
])
def test_bad_config_fails_before_training(tmp_path, override, match):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        run_recipe(tiny_config(run_dir, override))
    assert not run_dir.exists()


def test_missing_data_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_recipe(tiny_config(tmp_path / "run", "data.name=imagefolder", f"data.path={tmp_path / 'nope'}"))


def test_cli_reports_config_errors(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("run_titok_vcq", REPO / "recipes" / "run_titok_vcq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--config", str(DEMO), f"run_dir={tmp_path / 'run'}", "tokenizer.codebook_size=100000",
                   "ar.vocab_size=1000"])
    assert rc == 2
    assert "K_max=100000" in capsys.readouterr().err
    assert mod.main(["--config", str(tmp_path / "missing.yaml")]) == 2
