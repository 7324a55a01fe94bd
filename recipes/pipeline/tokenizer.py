"""Tokenizer stage for the ``titok-pytorch`` host: build, train (resumable), encode, reconstruct.

The tokenizer is titok-pytorch's own ``TiTokTokenizer``; ``vcq_plugin.register(hosts=
["titok-pytorch"])`` makes ``vq_kwargs={"quantizer": "vcq_cosine", ...}`` build a
VariableCodebookQuantizer in place of vector-quantize-pytorch's VectorQuantize. The constant
baseline uses the same path (``quantizer: constant``), so both tokenizers differ only in K(i).
Training uses the host's forward: MSE reconstruction + the quantizer's loss (added by the patch).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch

from vcq_plugin.schedule import CodebookSchedule
from .data import batch_indices
from .train import train_loop

log = logging.getLogger("vcq.recipe")


def schedule_for(quantizer: str, *, k_max: int, seq_len: int, k_min: int = 2, power: float = 2.5) -> CodebookSchedule:
    """The CodebookSchedule a tokenizer variant uses (the only place K(i) comes from)."""
    kw: dict[str, Any] = {"k_max": k_max, "seq_len": seq_len}
    if quantizer != "constant":
        kw["k_min"] = k_min
    if quantizer == "vcq_power":
        kw["power"] = power
    return CodebookSchedule.from_name(quantizer, **kw)


def build_titok(tok_cfg: Mapping[str, Any], variant: Mapping[str, Any], image_size: int) -> torch.nn.Module:
    """``TiTokTokenizer`` with VCQ from ``variant`` (``quantizer``, ``k_min``, ``power``...)."""
    import vcq_plugin
    from titok_pytorch import TiTokTokenizer

    vcq_plugin.register(hosts=["titok-pytorch"])
    vq_kwargs = {"quantizer": variant["quantizer"],
                 "commitment_cost": float(tok_cfg.get("commitment_cost", 0.25)),
                 "use_l2_norm": bool(tok_cfg.get("use_l2_norm", False)),
                 "entropy_loss_ratio": float(tok_cfg.get("entropy_loss_ratio", 0.0))}
    if variant["quantizer"] != "constant":
        vq_kwargs["k_min"] = int(variant.get("k_min", 2))
    if variant["quantizer"] == "vcq_power":
        vq_kwargs["power"] = float(variant.get("power", 2.5))
    tok = TiTokTokenizer(
        dim=int(tok_cfg["dim"]), image_size=image_size, patch_size=int(tok_cfg["patch_size"]),
        num_latent_tokens=int(tok_cfg["num_latent_tokens"]),
        enc_depth=int(tok_cfg["enc_depth"]), dec_depth=int(tok_cfg["dec_depth"]),
        enc_heads=int(tok_cfg["heads"]), dec_heads=int(tok_cfg["heads"]),
        enc_dim_head=int(tok_cfg["dim_head"]), dec_dim_head=int(tok_cfg["dim_head"]),
        codebook_size=int(tok_cfg["codebook_size"]), vq_kwargs=vq_kwargs,
    )
    init_std = tok_cfg.get("init_std")
    if init_std is not None:  # titok-pytorch uses 0.02; a larger std breaks the attention symmetry
        for p in (tok.latents, tok.pos_emb, tok.mask_tokens):  # early, so a tiny model trains in minutes
            torch.nn.init.normal_(p, std=float(init_std))
    expected = schedule_for(variant["quantizer"], k_max=int(tok_cfg["codebook_size"]),
                            seq_len=int(tok_cfg["num_latent_tokens"]), k_min=int(variant.get("k_min", 2)),
                            power=float(variant.get("power", 2.5)))
    got = getattr(tok.vq, "schedule", None)
    if got is None:
        raise RuntimeError(
            f"TiTokTokenizer built {type(tok.vq).__name__}, not a VCQ quantizer: the titok-pytorch patch "
            "is not active (vcq_plugin.register(hosts=['titok-pytorch']) failed?)")
    if got != expected:
        raise RuntimeError(f"the tokenizer's schedule {got!r} differs from the configured {expected!r}")
    return tok


class CodebookRestarts:
    """Dead-code restarts for a VCQ codebook learned by gradient (as Jukebox, or vector-quantize-
    pytorch's ``threshold_ema_dead_code``): every ``every`` steps, each shared code that no position
    picked since the last restart is moved onto a recent encoder output taken at a position allowed
    to use it (K(i) > k). Small data sets and short runs otherwise leave most codes dead.
    The usage statistics are the quantizer's own (``vq.usage``, reset after each restart)."""

    def __init__(self, vq: torch.nn.Module, every: int) -> None:
        if every < 1:
            raise ValueError(f"codebook restart interval must be >= 1, got {every}")
        self.vq, self.every, self._z = vq, int(every), None
        self._handle = vq.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        if module.training:
            self._z = args[0].detach()

    @torch.no_grad()
    def __call__(self, step: int) -> int:
        """Call after optimizer step ``step`` (0-based); returns the number of codes restarted."""
        if (step + 1) % self.every or self._z is None:
            return 0
        vq = self.vq
        dead = (~vq.usage.any(0)).nonzero()[:, 0]
        if dead.numel():
            z = self._z.float()
            if vq.use_l2_norm:
                z = torch.nn.functional.normalize(z, dim=-1)
            b, length, _ = z.shape
            sizes = vq.schedule.sizes.to(dead.device)
            first = torch.searchsorted(sizes, dead, right=True)  # first position with K(i) > k
            pos = first + (torch.rand(dead.shape) * (length - first)).long()
            rows = torch.randint(0, b, dead.shape)
            vq.embedding.weight.data[dead] = z[rows, pos.clamp(max=length - 1)].to(vq.embedding.weight.dtype)
        vq.reset_usage()
        return int(dead.numel())

    def remove(self) -> None:
        self._handle.remove()


def codebook_of(tok: torch.nn.Module) -> np.ndarray:
    """The shared codebook (k_max, D) as float32 numpy."""
    return tok.vq.embedding.weight.detach().cpu().float().numpy()


def train_tokenizer(tok: torch.nn.Module, images: torch.Tensor, cfg: Mapping[str, Any], *, name: str,
                    ckpt_path, seed: int) -> dict:
    """Train on ``images`` (N, 3, H, W) in [0, 1] with the host's loss; resumable at ``ckpt_path``."""
    opt = torch.optim.AdamW(tok.parameters(), lr=float(cfg["lr"]), betas=(0.9, 0.99),
                            weight_decay=float(cfg.get("weight_decay", 0.0)))
    bs = int(cfg["batch_size"])
    every = int(cfg.get("restart_dead_codes_every", 0) or 0)
    restarts = CodebookRestarts(tok.vq, every) if every else None

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(images.shape[0], bs, seed, step))
        return tok(images[idx])  # MSE + VCQ loss (codebook + commitment), via the host patch

    return train_loop(name=name, model=tok, optimizer=opt, loss_fn=loss_fn, total_steps=int(cfg["steps"]),
                      ckpt_path=ckpt_path, ckpt_every=int(cfg["ckpt_every"]), lr=float(cfg["lr"]),
                      warmup_steps=int(cfg.get("warmup_steps", 0)), grad_clip=cfg.get("grad_clip", 1.0),
                      seed=seed, after_step=restarts)


@torch.no_grad()
def encode(tok: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Token ids (N, L) as int32 (uint16 would also do for K_max <= 65536)."""
    tok.eval()
    out = [tok.tokenize(images[i:i + batch_size]).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy().astype(np.int32)


@torch.no_grad()
def decode(tok: torch.nn.Module, ids: torch.Tensor | np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Images (N, 3, H, W) clamped to [0, 1] from token ids (N, L)."""
    tok.eval()
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    out = [tok.codebook_ids_to_images(ids[i:i + batch_size]).clamp(0, 1) for i in range(0, ids.shape[0], batch_size)]
    return torch.cat(out)
