"""Full-scale AR stages on LlamaGen (``recipes/run_llamagen_vcq.py``): extract, train, sample.

- ``extract``: codes of the VCQ TiTok tokenizer (bytedance/1d-tokenizer host, weights from the
  tokenizer recipe) for every training image, with LlamaGen's ten-crop augmentation (its
  ``center_crop_arr`` at ``crop_range`` then ``TenCrop``: 5 crops + their flips), written in the
  layout LlamaGen's ``train_c2i.py`` reads: ``<code_path>/imagenet<size>_codes/<i>.npy`` (1, 10, L)
  and ``..._labels/<i>.npy`` (1,). ``code_path`` must contain "flip" so the trainer draws one view.
- ``train``: LlamaGen's ``autoregressive/train/train_c2i.py`` run unchanged under ``torchrun``,
  after ``vcq_plugin.register(hosts=["llamagen"])`` (``recipes.hosts.llamagen_launch``).
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

REPO = Path(__file__).resolve().parents[2]
HOST_DIRS = {"llamagen": "LlamaGen", "1d-tokenizer": "1d-tokenizer"}
HOST_MARKERS = {"llamagen": "autoregressive/train/train_c2i.py", "1d-tokenizer": "modeling/titok.py"}
# LlamaGen has GPT-B/L (12/768, 24/1024, as the paper) but its GPT-XL has 36 layers; the paper's XL
# has 32 layers / 20 heads / 1280. The launcher adds it to LlamaGen's GPT_models under this name.
EXTRA_GPT_MODELS = {"GPT-VCQ-XL": dict(n_layer=32, n_head=20, dim=1280)}
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


def validate_llamagen(cfg: DictConfig) -> None:
    """Checks before any work: vocabulary vs K_max, the GPT name, code_path layout, data path."""
    tok_cfg = tokenizer_config(cfg)
    k_max = int(tok_cfg.model.vq_model.codebook_size)
    vocab = int(cfg.gpt.vocab_size)
    if k_max > vocab:
        raise ConfigError(f"K_max={k_max} (tokenizer codebook_size) is larger than the AR vocabulary "
                          f"gpt.vocab_size={vocab}; set gpt.vocab_size >= {k_max}")
    seq = int(tok_cfg.model.vq_model.num_latent_tokens)
    block = (int(cfg.data.image_size) // int(cfg.gpt.get("downsample_size", 16))) ** 2
    if seq != block:
        raise ConfigError(f"the tokenizer gives {seq} tokens but LlamaGen's GPT block is (image_size / "
                          f"downsample_size)^2 = {block}; adjust data.image_size or gpt.downsample_size")
    if "flip" not in str(cfg.data.code_path):
        raise ConfigError(f"data.code_path={cfg.data.code_path!r} must contain 'flip': LlamaGen's CustomDataset "
                          "draws one of the ten-crop views only when its directory name contains 'flip'")


def tokenizer_config(cfg: DictConfig) -> DictConfig:
    path = Path(str(cfg.tokenizer.config))
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        raise ConfigError(f"tokenizer.config {str(cfg.tokenizer.config)!r} does not exist")
    return OmegaConf.load(path)


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
            "--image-size", str(cfg.data.image_size), "--downsample-size", str(g.get("downsample_size", 16)),
            "--num-classes", str(cfg.data.num_classes), "--epochs", str(t.epochs), "--lr", str(t.lr),
            "--weight-decay", str(t.weight_decay), "--beta1", str(t.beta1), "--beta2", str(t.beta2),
            "--max-grad-norm", str(t.max_grad_norm), "--global-batch-size", str(t.global_batch_size),
            "--global-seed", str(cfg.seed), "--num-workers", str(t.num_workers), "--ckpt-every", str(t.ckpt_every),
            "--mixed-precision", str(t.mixed_precision), "--log-every", str(t.get("log_every", 100))]
    if t.get("ema"):
        args.append("--ema")
    if t.get("no_compile"):
        args.append("--no-compile")
    if t.get("resume_from"):
        args += ["--gpt-ckpt", str(t.resume_from)]
    return args


def run_stage(stage: str, cfg: DictConfig, config_path: str) -> int:
    """Run ``extract | train | sample``; GPU-only stages refuse clearly without CUDA."""
    if stage not in ("extract", "train", "sample"):
        raise ConfigError(f"unknown stage {stage!r}; allowed: extract, train, sample")
    if cfg.get("host") != "llamagen":
        raise ConfigError(f"{config_path} is a config for host {cfg.get('host')!r}, not 'llamagen'")
    validate_llamagen(cfg)
    if stage in GPU_STAGES:
        require_cuda(stage)
    resolved = Path(str(cfg.run_dir)) / f"{stage}_config.yaml"
    resolved.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, resolved)
    if stage == "extract":
        return _child("1d-tokenizer", "recipes.hosts.llamagen_host", ["extract", str(resolved)])
    if stage == "train":
        nproc = str(cfg.train.nproc_per_node)
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    f"--master_port={cfg.train.get('master_port', 29500)}"]
        return _child("llamagen", "recipes.hosts.llamagen_launch", train_c2i_args(cfg), launcher=launcher)
    rc = _child("llamagen", "recipes.hosts.llamagen_host", ["generate", str(resolved)])
    if rc:
        return rc
    return _child("1d-tokenizer", "recipes.hosts.llamagen_host", ["decode", str(resolved)])


def load(config_path: str, overrides: Sequence[str]) -> Any:
    from recipes.pipeline.config import load_config

    return load_config(config_path, overrides)
