"""Run folders: atomic writes, stage markers, resumable checkpoints, fault injection for tests.

Every file a stage leaves is written to a temporary name in the same folder and moved into
place with ``os.replace``, so a run killed at any moment never leaves a half-written file.
A stage is done when its ``stage.json`` marker exists; rerunning the same command skips it.
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vcq_plugin._io import atomic_path

log = logging.getLogger("vcq.recipe")

FAIL_ENV = "VCQ_FAIL_AFTER_STEP"  # "<stage>:<step>": raise after that optimizer step (tests only)


class InjectedFailure(RuntimeError):
    """Raised by :func:`maybe_fail` to simulate a run killed in the middle of a stage."""


# ---------------------------------------------------------------------- atomic writes
def _atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def save_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def save_text(path: str | os.PathLike, text: str) -> Path:
    return save_bytes(path, text.encode("utf-8"))


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    return save_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    return _atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    return _atomic_write(path, lambda f: torch.save(obj, f))


def load_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------- stages
class RunDir:
    """One run folder; ``run.stage("name")`` is a sub-folder with a done-marker."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, name: str) -> bool:
        return (self.root / name / "stage.json").is_file()

    def done_info(self, name: str) -> dict:
        return load_json(self.root / name / "stage.json")

    def mark_done(self, name: str, info: dict) -> None:
        save_json(self.stage_dir(name) / "stage.json", info)


# ---------------------------------------------------------------------- checkpoints
def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def save_checkpoint(path: str | os.PathLike, *, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None) -> Path:
    """Atomically write {step, model, optimizer, rng, extra} to ``path``."""
    state = {
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    return save_torch(path, state)


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng and state.get("rng") is not None:
        set_rng_state(state["rng"])
    return state


def maybe_fail(stage: str, step: int) -> None:
    """Raise :class:`InjectedFailure` when ``$VCQ_FAIL_AFTER_STEP`` is ``"<stage>:<step>"``."""
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return
    name, _, at = spec.rpartition(":")
    if name == stage and at.isdigit() and int(at) == step:
        raise InjectedFailure(f"{FAIL_ENV}={spec}: simulated crash after step {step} of stage {stage!r}")
