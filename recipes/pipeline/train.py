"""A small resumable training loop shared by the tokenizer and AR stages.

Batch ``s`` is a pure function of (seed, s) and the torch RNG is re-seeded from (seed, s) before
every step, so a run that crashes and resumes from its last checkpoint takes exactly the same
steps as one that never stopped, and ends with the same step count. State that lives outside the
model and optimizer (e.g. the codebook-restart statistics) travels in the checkpoint too: an
``after_step`` callable with ``state_dict`` / ``load_state_dict`` is saved and restored, so
checkpoints may fall at any step.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .rundir import Checkpoints, maybe_fail

log = logging.getLogger("vcq.recipe")

_PROGRESS_BARS = True


def set_progress_bars(on: bool) -> None:
    """Worker processes turn tqdm bars off (their progress goes to log lines)."""
    global _PROGRESS_BARS
    _PROGRESS_BARS = bool(on)


def cosine_lr(step: int, total: int, warmup: int, base_lr: float, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``min_ratio * base_lr``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


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

    ``after_step(step)`` runs after each optimizer step (e.g. codebook restarts). Checkpoints go to
    ``ckpt_path`` (newest) and ``<stem>.prev<suffix>`` (the one before) every ``ckpt_every`` steps and
    at the end. Returns ``{"step", "resumed_from", "final_loss", "losses", "history"}``: ``losses`` of
    the steps run in this call, ``history`` the (step, loss) pairs logged since step 0.
    """
    if total_steps < 1 or ckpt_every < 1:
        raise ValueError(f"[{name}] total_steps and ckpt_every must be >= 1, got {total_steps}, {ckpt_every}")
    ckpts = Checkpoints(ckpt_path, stage=name)
    start, history = 0, []
    loaded = ckpts.load()
    if loaded is not None:
        state, path = loaded
        model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state.get("rng") is not None:
            set_rng_state(state["rng"])
        if after_step is not None and hasattr(after_step, "load_state_dict"):
            after_step.load_state_dict(state["extra"].get("after_step") or {})
        start = int(state["step"])
        history = [tuple(h) for h in state["extra"].get("loss_history", [])]
        log.info("[%s] resuming from %s at step %d / %d", name, path, start, total_steps)
    resumed_from = start
    model.train()
    losses: list[float] = []
    bar = tqdm(range(start, total_steps), desc=name, initial=start, total=total_steps, leave=False,
               disable=None if _PROGRESS_BARS else True, dynamic_ncols=True)
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
            extra = {"loss_history": history}
            if after_step is not None and hasattr(after_step, "state_dict"):
                extra["after_step"] = after_step.state_dict()
            ckpts.save({"step": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": rng_state(), "extra": extra})
        maybe_fail(name, done)
    bar.close()
    if start >= total_steps:
        log.info("[%s] checkpoint already at step %d (>= %d): nothing to train", name, start, total_steps)
    model.eval()
    return {"step": max(start, total_steps), "resumed_from": resumed_from,
            "final_loss": losses[-1] if losses else (history[-1][1] if history else None),
            "losses": losses, "history": history}


def loss_trend(history: list) -> dict:
    """Mean logged loss over the first and the last tenth of training (at least one point each)."""
    values = [float(v) for _, v in history]
    if not values:
        return {"loss_first": None, "loss_last": None}
    k = max(1, len(values) // 10)
    return {"loss_first": float(np.mean(values[:k])), "loss_last": float(np.mean(values[-k:]))}


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load a checkpoint's model weights (``path`` already checked by the stage machinery)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
