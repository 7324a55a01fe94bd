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

from vcq_plugin.restarts import CodebookRestarts  # the one place the restart implementation is chosen
from vcq_plugin.schedule import CodebookSchedule
from .data import batch_indices
from .rundir import check_tokens
from .train import train_loop

log = logging.getLogger("vcq.recipe")


def build_titok(tok_cfg: Mapping[str, Any], variant: Mapping[str, Any], schedule: CodebookSchedule,
                image_size: int) -> torch.nn.Module:
    """``TiTokTokenizer`` with VCQ: ``variant`` names the quantizer (``quantizer``, ``k_min``, ``power``),
    ``schedule`` is the K(i) it must end up with (built once from the config, checked here)."""
    import vcq_plugin
    from titok_pytorch import TiTokTokenizer

    vcq_plugin.register(hosts=["titok-pytorch"])
    vq_kwargs = {"quantizer": str(variant["quantizer"]), "commitment_cost": float(tok_cfg["commitment_cost"]),
                 "use_l2_norm": bool(tok_cfg["use_l2_norm"]), "entropy_loss_ratio": float(tok_cfg["entropy_loss_ratio"])}
    for key in ("k_min", "power"):
        if variant.get(key) is not None:
            vq_kwargs[key] = variant[key]
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
    got = getattr(tok.vq, "schedule", None)
    if got is None:
        raise RuntimeError(
            f"TiTokTokenizer built {type(tok.vq).__name__}, not a VCQ quantizer: the titok-pytorch patch "
            "is not active (vcq_plugin.register(hosts=['titok-pytorch']) failed?)")
    if got != schedule:
        raise RuntimeError(f"the tokenizer's schedule {got!r} differs from the configured {schedule!r}")
    return tok


def codebook_of(tok: torch.nn.Module) -> np.ndarray:
    """The shared codebook (k_max, D) as float32 numpy."""
    return tok.vq.embedding.weight.detach().cpu().float().numpy()


def train_tokenizer(tok: torch.nn.Module, images: torch.Tensor, cfg: Mapping[str, Any], *, name: str,
                    ckpt_path, seed: int) -> dict:
    """Train on ``images`` (N, 3, H, W) in [0, 1] with the host's loss; resumable at ``ckpt_path``."""
    opt = torch.optim.AdamW(tok.parameters(), lr=float(cfg["lr"]), betas=(0.9, 0.99),
                            weight_decay=float(cfg["weight_decay"]))
    bs = int(cfg["batch_size"])
    every = int(cfg["restart_dead_codes_every"])
    restarts = CodebookRestarts(tok.vq, every, seed=seed) if every else None  # per-position home-group rule

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(images.shape[0], bs, seed, step))
        return tok(images[idx])  # MSE + VCQ loss (codebook + commitment), via the host patch

    return train_loop(name=name, model=tok, optimizer=opt, loss_fn=loss_fn, total_steps=int(cfg["steps"]),
                      ckpt_path=ckpt_path, ckpt_every=int(cfg["ckpt_every"]), lr=float(cfg["lr"]),
                      warmup_steps=int(cfg["warmup_steps"]), grad_clip=cfg["grad_clip"],
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


def write_tokens(ctx: Any, tok: torch.nn.Module, schedule: CodebookSchedule, data: Any) -> np.ndarray:
    """A tokens stage's outputs: encode ``data.images`` (the whole dataset; the AR split is by index),
    check every token is < K(i), and save ``tokens.npy`` (N, L), ``labels.npy`` (N,),
    ``codebook.npy`` (K_max, D), ``heldout_index.npy`` and ``schedule.json`` through ``ctx``
    (a :class:`~recipes.pipeline.rundir.StageContext`). Returns the tokens."""
    tokens = encode(tok, data.images)
    check_tokens(tokens, schedule.sizes.tolist(), ctx.dir / "tokens.npy", ctx.name)
    ctx.save_npy("tokens.npy", tokens)
    ctx.save_npy("labels.npy", data.labels.numpy().astype(np.int64))
    ctx.save_npy("codebook.npy", codebook_of(tok))
    ctx.save_npy("heldout_index.npy", data.held_idx.astype(np.int64))
    ctx.save_json("schedule.json", schedule.to_dict())
    return tokens
