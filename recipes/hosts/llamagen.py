"""Full-scale AR stages on LlamaGen (``recipes/run_llamagen_vcq.py``): extract, train, sample.

- ``extract``: codes of the VCQ TiTok tokenizer (bytedance/1d-tokenizer host, weights from the
  tokenizer recipe) for every training image, with LlamaGen's ten-crop augmentation (its
  ``center_crop_arr`` at ``crop_range`` then ``TenCrop``: 5 crops + their flips), written in the
  layout LlamaGen's ``train_c2i.py`` reads: ``<code_path>/imagenet<size>_codes/<i>.npy`` (1, 10, L)
  and ``..._labels/<i>.npy`` (1,). ``code_path`` must contain "flip" so the trainer draws one view.
- ``train``: LlamaGen's ``autoregressive/train/train_c2i.py`` under ``torchrun``, after
  ``vcq_plugin.register(hosts=["llamagen"])`` (``recipes.hosts.llamagen_launch``); with
  ``lr_schedule: paper`` its AdamW gets Appendix A's schedule from a drift-checked hook, with ``host``
  the script runs exactly upstream (constant learning rate).
- ``sample``: LlamaGen's ``generate()`` with ``sampler=AwareCFGSampler`` (registry preset) in a
  LlamaGen process -> tokens.npy; decoded by the TiTok tokenizer in a 1d-tokenizer process ->
  PNGs + an ADM .npz. The two hosts both ship a top-level ``utils`` package, so they never share
  a process: each host step is its own interpreter with that host's root on ``sys.path``.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from recipes.pipeline.config import ConfigError
from vcq_plugin._io import atomic_write_text
from vcq_plugin.patches.llamagen import EXTRA_GPT_MODELS  # noqa: F401  (re-exported for the recipes)

REPO = Path(__file__).resolve().parents[2]
HOST_DIRS = {"llamagen": "LlamaGen", "1d-tokenizer": "1d-tokenizer"}
HOST_MARKERS = {"llamagen": "autoregressive/train/train_c2i.py", "1d-tokenizer": "modeling/titok.py"}
# LlamaGen has GPT-B/L (12/768, 24/1024, as the paper) but its GPT-XL has 36 layers; the paper's XL
# (32 layers / 20 heads / 1280) is added to LlamaGen's GPT_models by the drift-checked GPT_models hook
# of vcq_plugin.register(hosts=["llamagen"]) under the names of EXTRA_GPT_MODELS (imported above: one home,
# the patch).
GPU_STAGES = ("train", "sample")


class HostMissingError(RuntimeError):
    """A host codebase the config names is not checked out; never replaced by another host."""


def host_root(host: str) -> Path:
    """``$VCQ_<HOST>_ROOT`` or ``third_party/<host>``; HostMissingError when not checked out."""
    env = "VCQ_" + host.upper().replace("-", "_") + "_ROOT"
    root = Path(os.environ.get(env) or REPO / "third_party" / HOST_DIRS[host])
    if not (root / HOST_MARKERS[host]).is_file():
        raise HostMissingError(
            f"host {host!r} is not available at {root}: run `git submodule update --init "
            f"third_party/{HOST_DIRS[host]}` (or set {env}); this recipe does not fall back to another host")
    return root


def require_cuda(stage: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"stage {stage!r} needs a CUDA GPU (LlamaGen trains/samples with NCCL + bf16 on GPUs) and none is "
            "visible; run it on a GPU machine. The CPU demo is `python recipes/run_titok_vcq.py`.")


def tokenizer_config(cfg: DictConfig) -> DictConfig:
    """The 1d-tokenizer config (``tokenizer.config``) whose codes the GPT learns, as the host reads it;
    its own schema checks it (paths excepted: its shards are not needed here)."""
    from recipes.pipeline.config import TITOK1D_TOKENIZER_FILE, load_config
    from .titok_1d import host_config

    path = Path(str(cfg.tokenizer.config))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        raise ConfigError(f"tokenizer.config={str(cfg.tokenizer.config)!r} does not exist")
    return host_config(load_config(path, schema=TITOK1D_TOKENIZER_FILE, check_paths=False).cfg)


def check_stage_paths(stage: str, cfg: DictConfig) -> None:
    """Before any work of ``stage``: the host submodules first, then the data and weights it reads."""
    hosts = {"extract": ("1d-tokenizer", "llamagen"), "train": ("llamagen",), "sample": ("llamagen", "1d-tokenizer")}
    for host in hosts[stage]:
        host_root(host)
    files = {"extract": [("data.path", cfg.data.path, "dir"), ("tokenizer.weights", cfg.tokenizer.weights, "file")],
             "train": [("data.code_path", cfg.data.code_path, "dir")],
             "sample": [("sampling.checkpoint", cfg.sampling.checkpoint, "file"),
                        ("tokenizer.weights", cfg.tokenizer.weights, "file")]}
    for key, value, kind in files[stage]:
        if value is None:
            raise ConfigError(f"{key} must be set for the {stage} stage")
        p = Path(os.path.expanduser(str(value)))
        if not (p.is_dir() if kind == "dir" else p.is_file()):
            raise ConfigError(f"{key}={str(value)!r} is not an existing {'folder' if kind == 'dir' else 'file'} "
                              f"(needed by the {stage} stage)")


def _child(host: str, module: str, args: Sequence[str], *, launcher: Sequence[str] = ()) -> int:
    """Run ``python -m module args`` (or under ``launcher``) with the host root first on sys.path."""
    root = host_root(host)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [*launcher, "-m", module, *args] if launcher else [sys.executable, "-m", module, *args]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.call(cmd, env=env)


def train_c2i_args(cfg: DictConfig) -> list[str]:
    """LlamaGen train_c2i.py arguments from the recipe config."""
    g, t = cfg.gpt, cfg.train
    args = ["--code-path", str(cfg.data.code_path), "--cloud-save-path", str(t.results_dir),
            "--results-dir", str(t.results_dir), "--gpt-model", str(g.model), "--gpt-type", "c2i",
            "--vocab-size", str(g.vocab_size), "--cls-token-num", str(g.cls_token_num),
            "--dropout-p", str(g.dropout_p), "--token-dropout-p", str(g.token_dropout_p),
            "--drop-path-rate", str(g.drop_path_rate), "--dataset", "imagenet_code",
            "--image-size", str(cfg.data.image_size), "--downsample-size", str(g.downsample_size),
            "--num-classes", str(cfg.data.num_classes), "--epochs", str(t.epochs), "--lr", str(t.lr),
            "--weight-decay", str(t.weight_decay), "--beta1", str(t.beta1), "--beta2", str(t.beta2),
            "--max-grad-norm", str(t.max_grad_norm), "--global-batch-size", str(t.global_batch_size),
            "--global-seed", str(cfg.seed), "--num-workers", str(t.num_workers), "--ckpt-every", str(t.ckpt_every),
            "--mixed-precision", str(t.mixed_precision), "--log-every", str(t.log_every)]
    if t.ema:
        args.append("--ema")
    if t.no_compile:
        args.append("--no-compile")
    if t.resume_from:
        args += ["--gpt-ckpt", str(t.resume_from)]
    return args


def launch_args(cfg: DictConfig) -> list[str]:
    """``recipes.hosts.llamagen_launch`` arguments: the schedule of ``lr_schedule: paper`` (none for ``host``),
    then :func:`train_c2i_args`."""
    from recipes.pipeline.config import llamagen_lr_schedule
    from .llamagen_launch import launcher_args

    schedule = llamagen_lr_schedule(cfg)
    return launcher_args(None if schedule is None else schedule.to_dict(), train_c2i_args(cfg))


def run_stage(stage: str, loaded: Any) -> int:
    """Run ``extract | train | sample`` of a checked config (``load_config``): CUDA for the GPU stages,
    then the host submodules, then the stage's data and weights, before any work."""
    if stage not in ("extract", "train", "sample"):
        raise ConfigError(f"unknown stage {stage!r}; allowed: extract, train, sample")
    cfg = loaded.cfg
    if loaded.host != "llamagen":
        raise ConfigError(f"{loaded.source} is a config for host {loaded.host!r}, not 'llamagen'")
    if stage in GPU_STAGES:
        require_cuda(stage)
    check_stage_paths(stage, cfg)
    resolved = Path(str(cfg.run_dir)) / f"{stage}_config.yaml"
    resolved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(resolved, OmegaConf.to_yaml(cfg))
    if stage == "extract":
        return _child("1d-tokenizer", "recipes.hosts.llamagen_host", ["extract", str(resolved)])
    if stage == "train":
        nproc = str(cfg.train.nproc_per_node)
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    f"--master_port={cfg.train.master_port}"]
        return _child("llamagen", "recipes.hosts.llamagen_launch", launch_args(cfg), launcher=launcher)
    rc = _child("llamagen", "recipes.hosts.llamagen_host", ["generate", str(resolved)])
    if rc:
        return rc
    return _child("1d-tokenizer", "recipes.hosts.llamagen_host", ["decode", str(resolved)])
