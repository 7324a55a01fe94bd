"""A 2-process accelerate launch (CPU, gloo) of 1d-tokenizer's own ``scripts/train_titok.py``
with ``quantizer: vcq_cosine``, through ``python -m vcq_plugin.patches.run``, on a tiny config
(the host's TiTok stage-1 YAML with small ViTs, 8 tokens, K_max 64, 32 px random images): both runs
finish, both ranks hold the same weights and the same synced usage statistics (the union of the
ranks' own), and the second run resumes from the first run's checkpoint.

Run as a script (that is how the launched ranks use it: ``patches.run`` executes this file as
``__main__`` after ``vcq_plugin.register()``), this module records each rank's quantizer whenever the
host's ``save_checkpoint`` runs, in every rank (weights, ``used_codes(i, sync=False)``,
``used_codes(i)``, ``codes_used()``), then runs the host's script unchanged.

Nothing is downloaded: the MaskGIT-VQGAN proxy tokenizer and the Inception network of the host's
evaluator are randomly initialised and saved where the host script looks for them (the working
directory, which ``hf_hub_download`` reads in offline mode, and ``$TORCH_HOME/hub/checkpoints``);
evaluation never runs (``eval_every`` > steps).
"""
from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / "third_party" / "1d-tokenizer"
PROBE = "vcq_probe"  # file prefix; must not start with "checkpoint" (the host's auto_resume globs that)

if __name__ != "__main__":
    from conftest import host_missing_reason

    pytestmark = [
        pytest.mark.upstream,
        pytest.mark.slow,  # two 2-rank launches of the host's trainer: ~1-3 min on the shared 2-core machine
        pytest.mark.skipif(host_missing_reason("1d-tokenizer") is not None,
                           reason=str(host_missing_reason("1d-tokenizer"))),
    ]

RANDOM_WEIGHTS = """
import sys, torch
from benchmarks.gpu_check import _no_weight_loading
import modeling.titok as titok
import evaluator.inception as inception
with _no_weight_loading():
    torch.manual_seed(0)
    proxy = titok.PretrainedTokenizer("random-init")
    inception.load_state_dict_from_url = lambda *a, **k: {}
    net = inception.get_inception_model()
torch.save(proxy.state_dict(), sys.argv[1])
torch.save({k: v.float() if v.is_floating_point() else v for k, v in net.state_dict().items()}, sys.argv[2])
"""
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # evaluator/inception.py FID_WEIGHTS_URL's file name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(run: Path, shards: str, max_steps: int) -> Path:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(HOST / "configs" / "training" / "TiTok" / "stage1" / "titok_b64.yaml")
    OmegaConf.update(cfg, "model.vq_model", dict(
        quantizer="vcq_cosine", vcq={"k_min": 2}, codebook_size=64, num_latent_tokens=8,
        vit_enc_model_size="small", vit_dec_model_size="small", pretrained_tokenizer_weight="maskgit_random.bin"),
        merge=True)
    OmegaConf.update(cfg, "experiment", dict(
        output_dir=str(run / "out"), max_train_examples=16, save_every=2, eval_every=1000, generate_every=1000,
        log_every=1, log_grad_norm_every=1000, resume=True), merge=True)
    # at 942a96f create_dataloader builds the image webdataset only when `pretokenization` is set
    OmegaConf.update(cfg, "dataset.params", dict(
        train_shards_path_or_url=shards, eval_shards_path_or_url=shards, num_workers_per_gpu=1,
        pretokenization="images"), merge=True)
    OmegaConf.update(cfg, "dataset.preprocessing", dict(resize_shorter_edge=32, crop_size=32), merge=True)
    OmegaConf.update(cfg, "lr_scheduler.params.warmup_steps", 1)
    OmegaConf.update(cfg, "training", dict(
        per_gpu_batch_size=2, mixed_precision="no", enable_tf32=False, enable_wandb=False,
        max_train_steps=max_steps), merge=True)
    path = run / f"titok_vcq_tiny_{max_steps}.yaml"
    OmegaConf.save(cfg, path)
    return path


def _launch(run: Path, config: Path, env: dict) -> subprocess.CompletedProcess:
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up (accelerate 1.16's
    # simple_launcher); --multi_gpu starts 2 torchrun ranks, and ACCELERATE_USE_CPU=1 (in env) makes the host's
    # Accelerator() take MULTI_CPU / gloo (without it each rank trains alone, as if single-process)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "vcq_plugin.patches.run", str(Path(__file__).resolve()), str(HOST / "scripts" / "train_titok.py"),
           f"config={config}"]
    return subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=900)


def prepared_run(tmp_path: Path) -> tuple[Path, dict]:
    """A run folder with the randomly initialised proxy tokenizer and Inception weights where the host
    looks for them, and the environment of a CPU (gloo) accelerate launch: ``(run, env)``."""
    run = tmp_path / "run"
    run.mkdir()
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HOST), str(REPO)]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(torch_home), WANDB_MODE="disabled",
               PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1")
    subprocess.run([sys.executable, "-c", RANDOM_WEIGHTS, str(run / "maskgit_random.bin"),
                    str(torch_home / "hub" / "checkpoints" / INCEPTION_FILE)], check=True, env=env, timeout=600)
    return run, env


def _probes(out: Path, step: int) -> list:
    return [torch.load(out / f"{PROBE}_step{step}_rank{r}.pt") for r in range(2)]


def test_two_rank_accelerate_training_agrees_and_resumes(tmp_path):
    from test_recipe_upstream_1d import MISSING, _write_shards

    if MISSING:
        pytest.skip(f"1d-tokenizer's training needs {MISSING} (pip install -e '.[titok]')")
    run, env = prepared_run(tmp_path)
    shards = _write_shards(tmp_path / "shards")
    out = run / "out"

    first = _launch(run, _config(run, shards, max_steps=2), env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    assert (out / "checkpoint-2").is_dir() and (out / "log1.txt").is_file()  # two ranks ran
    log = (out / "log0.txt").read_text()
    assert "Training from scratch" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log  # 2 ranks x 2

    second = _launch(run, _config(run, shards, max_steps=4), env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    log = (out / "log0.txt").read_text()  # the host's logger appends: the second run's lines are last
    resumed = log.split("All globbed checkpoints are:")[-1]
    assert "checkpoint-2" in resumed.splitlines()[0] and f"Load checkpoint from {out / 'checkpoint-2'}" in resumed
    assert (out / "checkpoint-4").is_dir() and "Step: 4 " in resumed and "Step: 1 " not in resumed

    for step in (2, 4):
        r0, r1 = _probes(out, step)
        assert r0["quantizer"] == r1["quantizer"] == "TiTokVCQ"
        assert r0["state"].keys() == r1["state"].keys()
        for key in r0["state"]:  # DDP: both ranks hold the same weights, the shared codebook included
            assert torch.equal(r0["state"][key], r1["state"][key]), (step, key)
        sizes = r0["sizes"]
        for i in range(len(sizes)):
            union = r0["local"][i] | r1["local"][i]
            assert r0["local"][i].shape == (int(sizes[i]),)
            assert torch.equal(r0["synced"][i], union) and torch.equal(r1["synced"][i], union), (step, i)
        assert torch.equal(r0["codes_used"], r1["codes_used"])
        assert torch.equal(r0["codes_used"], torch.stack([r0["synced"][i].sum() for i in range(len(sizes))]))
        assert bool((r0["codes_used"] >= 1).all())
    # the resumed run started from checkpoint-2's weights and trained on: step 4 differs from step 2
    before, after = _probes(out, 2)[0]["state"], _probes(out, 4)[0]["state"]
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------- the launched ranks' side
def _record_quantizer_at_checkpoints() -> None:
    """Wrap the host's ``save_checkpoint`` so every rank also saves its quantizer's view."""
    import utils.train_utils as train_utils

    original = train_utils.save_checkpoint

    def save_checkpoint(model, output_dir, accelerator, global_step, logger):
        path = original(model, output_dir, accelerator, global_step, logger=logger)
        unwrapped = accelerator.unwrap_model(model)
        q = unwrapped.quantize
        record = dict(
            quantizer=type(q).__name__, sizes=q.schedule.sizes.clone(),
            state={k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()},
            local=[q.used_codes(i, sync=False).cpu().clone() for i in range(q.seq_len)],
            synced=[q.used_codes(i).cpu().clone() for i in range(q.seq_len)],  # collectives: every rank is here
            codes_used=q.codes_used().cpu().clone(),
        )
        torch.save(record, Path(output_dir) / f"{PROBE}_step{global_step}_rank{accelerator.process_index}.pt")
        return path

    train_utils.save_checkpoint = save_checkpoint


if __name__ == "__main__":  # python -m vcq_plugin.patches.run THIS_FILE HOST_SCRIPT ARGS... (in each rank)
    _record_quantizer_at_checkpoints()
    script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
