"""The 1d-tokenizer path of recipes/run_titok_vcq.py for a few CPU steps through the host's own
training utilities (create_model_and_loss_module, train_one_epoch, accelerate checkpoints,
auto_resume), on tiny images from webdataset shards the test writes. Stage-1 TiTok needs the
MaskGIT-VQGAN proxy tokenizer: the test saves a randomly initialised one (no download).

Skipped unless third_party/1d-tokenizer is checked out and its training requirements
(open_clip_torch, torchinfo, webdataset, accelerate) are installed.
"""
from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / "third_party" / "1d-tokenizer"
MISSING = [m for m in ("open_clip", "torchinfo", "webdataset", "accelerate", "transformers", "diffusers", "termcolor", "iopath") if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.upstream,
    pytest.mark.skipif(not (HOST / "modeling" / "titok.py").is_file(),
                       reason="third_party/1d-tokenizer is not checked out (git submodule update --init third_party/1d-tokenizer)"),
    pytest.mark.skipif(bool(MISSING), reason=f"1d-tokenizer's training needs {MISSING} (pip install -r third_party/1d-tokenizer/requirements.txt)"),
]

RANDOM_PROXY = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import modeling.titok as t
load, lsd = torch.load, torch.nn.Module.load_state_dict
torch.load = lambda *a, **k: {}
torch.nn.Module.load_state_dict = lambda self, *a, **k: None
try:
    torch.manual_seed(0)
    m = t.PretrainedTokenizer("random")
finally:
    torch.load, torch.nn.Module.load_state_dict = load, lsd
torch.save(m.state_dict(), sys.argv[2])
"""


def _write_shards(folder: Path, n_shards: int = 2, per_shard: int = 8) -> str:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        with tarfile.open(folder / f"shard-{s:04d}.tar", "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(i % 4).encode())):
                    info = tarfile.TarInfo(f"{s:04d}_{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return f"{folder}/shard-{{0000..{n_shards - 1:04d}}}.tar"


def _run(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "recipes" / "run_titok_vcq.py"),
           "--config", str(REPO / "recipes" / "configs" / "titok_vcq_b.yaml"), *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_1d_tokenizer_recipe_trains_with_vcq_and_resumes(tmp_path):
    proxy = tmp_path / "maskgit_random.bin"
    subprocess.run([sys.executable, "-c", RANDOM_PROXY, str(HOST), str(proxy)], check=True, timeout=300,
                   env=dict(os.environ, OMP_NUM_THREADS="1"))
    shards = _write_shards(tmp_path / "shards")
    out = tmp_path / "out"
    tiny = [
        "recipe.evaluate=false",
        f"experiment.output_dir={out}", "experiment.max_train_examples=16", "experiment.save_every=2",
        "experiment.eval_every=1000", "experiment.generate_every=1000", "experiment.log_every=1",
        "experiment.log_grad_norm_every=1000",
        "model.vq_model.codebook_size=64", "model.vq_model.num_latent_tokens=8",
        "model.vq_model.vit_enc_model_size=small", "model.vq_model.vit_dec_model_size=small",
        f"model.vq_model.pretrained_tokenizer_weight={proxy}",
        f"dataset.params.train_shards_path_or_url={shards}", f"dataset.params.eval_shards_path_or_url={shards}",
        "dataset.params.num_workers_per_gpu=1",
        "dataset.preprocessing.resize_shorter_edge=32", "dataset.preprocessing.crop_size=32",
        "lr_scheduler.params.warmup_steps=1", "lr_scheduler.params.hold_steps=1",  # lr_schedule: paper (hooked)
        "training.per_gpu_batch_size=4", "training.mixed_precision='no'", "training.enable_tf32=false",
        "training.max_train_steps=3",
    ]
    first = _run(tmp_path, tiny)
    assert first.returncode == 0, first.stderr[-4000:]
    log = (out / "log0.txt").read_text()
    assert "VCQ: quantizer=vcq_cosine" in log and "K_max=64 L=8" in log
    assert (out / "checkpoint-3").is_dir()
    # Appendix A's shape through the host's loop and accelerate: 1 warm-up, 1 at the peak, linear to 1e-5 at 3
    assert _logged_lrs(log) == ["0.000100", "0.000100", "0.000010"], _logged_lrs(log)

    again = _run(tmp_path, tiny[:-1] + ["training.max_train_steps=5"])
    assert again.returncode == 0, again.stderr[-4000:]
    log = (out / "log0.txt").read_text()
    assert "checkpoint-3" in log.split("All globbed checkpoints are:")[-1].splitlines()[0]
    assert (out / "checkpoint-5").is_dir()
    # resumed at update 3 (accelerate restored the scheduler), now decaying to 1e-5 at 5: 4e-5, then 1e-5
    assert _logged_lrs(log)[-2:] == ["0.000040", "0.000010"], _logged_lrs(log)


def _logged_lrs(log: str) -> list[str]:
    """The learning rates train_one_epoch logged (after each update), in order."""
    return re.findall(r"LR: (\d+\.\d+)", log)
