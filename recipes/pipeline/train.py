"""A small resumable training loop shared by the tokenizer and AR stages.

Batch ``s`` is a pure function of (seed, s) and the torch RNG is re-seeded from (seed, s) before
every step, so a run that crashes and resumes from its last checkpoint takes exactly the same
steps as one that never stopped, and ends with the same step count.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .rundir import load_checkpoint, maybe_fail, save_checkpoint

log = logging.getLogger("vcq.recipe")


def cosine_lr(step: int, total: int, warmup: int, base_lr: float, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``min_ratio * base_lr``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_loop(
    *,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[int], torch.Tensor],
    total_steps: int,
    ckpt_path: str | os.PathLike,
    ckpt_every: int,
    lr: float,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    log_every: int = 50,
    after_step: Callable[[int], object] | None = None,
) -> dict:
    """Run ``loss_fn(step)`` + backward + step from the checkpoint's step (or 0) to ``total_steps``.

    ``after_step(step)`` runs after each optimizer step (e.g. codebook restarts).
    Writes ``ckpt_path`` atomically every ``ckpt_every`` steps and at the end. Returns
    ``{"step", "resumed_from", "final_loss", "losses"}`` (losses of the steps run in this call).
    """
    ckpt_path = Path(ckpt_path)
    start, history = 0, []
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, model=model, optimizer=optimizer)
        start = int(state["step"])
        history = list(state["extra"].get("loss_history", []))
        log.info("[%s] resuming from %s at step %d / %d", name, ckpt_path, start, total_steps)
    resumed_from = start
    model.train()
    losses: list[float] = []
    bar = tqdm(range(start, total_steps), desc=name, initial=start, total=total_steps, leave=False,
               disable=None, dynamic_ncols=True)
    step = start
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(step, total_steps, warmup_steps, lr)
        torch.manual_seed(seed * 1_000_003 + step)
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"[{name}] loss became {value} at step {step}")
        losses.append(value)
        if step % log_every == 0 or step == total_steps - 1:
            history.append((step, value))
            bar.set_postfix(loss=f"{value:.4f}")
        if (step + 1) % max(1, total_steps // 10) == 0:
            log.info("[%s] step %d / %d, loss %.4f", name, step + 1, total_steps, value)
        done = step + 1
        if done % ckpt_every == 0 or done == total_steps:
            save_checkpoint(ckpt_path, step=done, model=model, optimizer=optimizer,
                            extra={"loss_history": history})
        maybe_fail(name, done)
    bar.close()
    if start >= total_steps:
        log.info("[%s] checkpoint already at step %d (>= %d): nothing to train", name, start, total_steps)
    model.eval()
    return {"step": max(start, total_steps), "resumed_from": resumed_from,
            "final_loss": losses[-1] if losses else (history[-1][1] if history else None),
            "losses": losses}
