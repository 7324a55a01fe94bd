"""Run folders: stages with provenance, output checksums, resumable checkpoints. Every check of a
stage's outputs is in this file.

A recipe is a table of :class:`Stage` s (``recipes/pipeline/demo.py`` is the demo's). Each stage has a
folder in the run directory (its ``name``, e.g. ``tokenizer_vcq`` or ``arms/vcq/seed1/tokenizer``), the
config values it depends on, and the files of earlier stages it reads. Its ``stage.json`` records:

- ``status``: ``running`` (started, maybe resumable from its checkpoint) or ``done``;
- ``invocation``: which command made it (``config_history/<n>.yaml`` holds that command's config and
  overrides; ``config.yaml`` is the config the folder was started with and is never replaced);
- ``config``: the config values the stage depends on, as ``{"dotted.key": value}``;
- ``inputs``: the sha256 of every file it read, ``outputs``: sha256 + size of every file it wrote;
- ``result``: its numbers, for the summary.

:func:`run_stages` checks the whole table before any work: a finished (or started) stage whose config
values changed, or whose inputs were remade, stops the run with :class:`ProvenanceError` naming the
stage, the changed keys (old -> new) and the two ways on: a new ``run_dir``, or ``restart_from=<stage>``,
which redoes that stage and everything downstream of it. A later stage reads a file only through
:meth:`StageContext.input`, which checks its size and sha256 against what the producing stage recorded
(:class:`IntegrityError` names the file and the stage to redo). Checkpoints keep the newest good file
and the one before it (:class:`Checkpoints`).
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import yaml

from vcq_plugin._io import (Written, atomic_write, atomic_write_json, atomic_write_npy, atomic_write_text,
                            atomic_write_torch, sha256_file)

log = logging.getLogger("vcq.recipe")

FAIL_ENV = "VCQ_FAIL_AFTER_STEP"  # "<stage>:<step>": raise after that optimizer step (tests only)
RECORD = "stage.json"
HISTORY = "config_history"


class InjectedFailure(RuntimeError):
    """Raised by :func:`maybe_fail` to simulate a run killed in the middle of a stage."""


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as it is; the message says what to do."""


class ProvenanceError(RunFolderError):
    """A finished or started stage was made with other config values or other inputs."""


class IntegrityError(RunFolderError):
    """A stage output differs from what its stage recorded when writing it (truncated, edited, missing)."""


class CheckpointError(RunFolderError):
    """No readable checkpoint where one was expected."""


def maybe_fail(stage: str, step: int) -> None:
    """Raise :class:`InjectedFailure` when ``$VCQ_FAIL_AFTER_STEP`` is ``"<stage>:<step>"``."""
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return
    name, _, at = spec.rpartition(":")
    if name == stage and at.isdigit() and int(at) == step:
        raise InjectedFailure(f"{FAIL_ENV}={spec}: simulated crash after step {step} of stage {stage!r}")


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """The JSON form of a config value (what stage.json stores), for exact comparisons."""
    return json.loads(json.dumps(value, default=str))


# ====================================================================== stages
@dataclass(frozen=True)
class Stage:
    """One step of a recipe.

    Args:
        name: its folder in the run directory (may contain ``/``; never a prefix of another stage's).
        config: the config values it depends on, ``{"dotted.key": value}``; a change stops a rerun.
        inputs: producing stage name -> the file names of that stage it reads.
        run: ``run(ctx: StageContext) -> dict`` does the work and returns its result (JSON numbers).
        group: stages with the same group may run together in one worker process, in table order,
            side by side with other groups (``parallel: true``); ``None`` = always in the main process.
    """

    name: str
    config: Mapping[str, Any]
    run: Callable[["StageContext"], dict]
    inputs: Mapping[str, Sequence[str]] = field(default_factory=dict)
    group: str | None = None


class Checkpoints:
    """``checkpoint.pt`` (newest) and ``checkpoint.prev.pt`` (the one before) of a resumable stage.

    :meth:`save` moves the newest to ``prev`` and writes the new one atomically. :meth:`load` returns
    the newest readable one: an unreadable or truncated file gives a warning naming it, is renamed to
    ``<name>.corrupt`` (kept for inspection, never rotated over the good one) and the previous one is
    used; when none is readable, :class:`CheckpointError` names the files.
    """

    def __init__(self, path: str | os.PathLike, stage: str | None = None) -> None:
        self.path = Path(path)
        self.prev = self.path.with_name(self.path.stem + ".prev" + self.path.suffix)
        self.stage = stage

    def save(self, state: Mapping[str, Any]) -> Written:
        if self.path.exists():
            os.replace(self.path, self.prev)
        return atomic_write_torch(self.path, dict(state))

    def load(self) -> tuple[dict, Path] | None:
        files = [p for p in (self.path, self.prev) if p.exists()]
        if not files:
            return None
        errors = []
        for p in files:
            try:
                state = torch.load(p, map_location="cpu", weights_only=False)
                if not isinstance(state, dict) or "step" not in state:
                    raise ValueError("not a checkpoint of this recipe (no 'step')")
                return state, p
            except Exception as e:  # noqa: BLE001 - torch raises several kinds for a damaged file
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                errors.append(f"{p} ({reason})")
                bad = p.with_name(p.name + ".corrupt")
                os.replace(p, bad)
                others = [q for q in files if q != p]
                log.warning("checkpoint %s is unreadable or truncated (%s); moved to %s%s", p, reason, bad.name,
                            f"; resuming from the previous one, {others[0]}" if others else "")
        raise CheckpointError(
            "no readable checkpoint: " + "; ".join(errors) + ". To train the stage from scratch: "
            f"restart_from={self.stage or '<stage>'} (or delete its folder, or start a new run_dir)")


class StageContext:
    """What a stage's ``run`` gets: its folder, the config, checked reads of earlier outputs and
    writers that record what they write."""

    def __init__(self, run: "RunDir", stage: Stage, cfg: Any, invocation: int) -> None:
        self.run, self.stage, self.cfg, self.invocation = run, stage, cfg, invocation
        self.dir = run.stage_dir(stage.name)
        self.inputs: dict[str, str] = {}
        self.outputs: dict[str, dict] = {}
        self.checkpoints = Checkpoints(self.dir / "checkpoint.pt", stage.name)

    @property
    def name(self) -> str:
        return self.stage.name

    # ------------------------------------------------------------------ reading
    def input(self, stage: str, name: str) -> Path:
        """The path of file ``name`` of stage ``stage`` after checking it against that stage's record;
        recorded as this stage's input. Only files declared in ``Stage.inputs`` may be read."""
        if name not in self.stage.inputs.get(stage, ()):
            raise RuntimeError(f"stage {self.name!r} reads {stage}/{name} without declaring it in Stage.inputs")
        path, sha = self.run.verified(stage, name)
        self.inputs[f"{stage}/{name}"] = sha
        return path

    # ------------------------------------------------------------------ writing (recorded outputs)
    def _record(self, name: str, w: Written) -> Path:
        self.outputs[name] = {"sha256": w.sha256, "bytes": w.size}
        return w.path

    def save_npy(self, name: str, array: Any) -> Path:
        return self._record(name, atomic_write_npy(self.dir / name, array))

    def save_json(self, name: str, obj: Any) -> Path:
        return self._record(name, atomic_write_json(self.dir / name, obj))

    def save_text(self, name: str, text: str) -> Path:
        return self._record(name, atomic_write_text(self.dir / name, text))

    def save_with(self, name: str, write: Callable[[Any], Any]) -> Path:
        """``write(f)`` on a binary file object (e.g. ``lambda f: image.save(f, format="PNG")``)."""
        return self._record(name, atomic_write(self.dir / name, write))

    def add_output(self, name: str) -> Path:
        """Record a file the stage wrote by other means (a checkpoint, a library's report)."""
        path = self.dir / name
        self.outputs[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        return path


# ====================================================================== the run folder
class RunDir:
    """One run folder: stage folders with their ``stage.json`` records, the config history."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------------ records
    def record(self, name: str) -> dict | None:
        """The stage's ``stage.json`` (None when the stage never started)."""
        p = self.root / name / RECORD
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(f"{p} is not readable JSON ({e}); redo that stage: restart_from={name} "
                                 "(or start a new run_dir)") from None
        if not isinstance(rec, dict) or "status" not in rec or "config" not in rec:
            raise IntegrityError(f"{p} is not a stage record of this version of the recipes; start a new run_dir "
                                 f"(or redo the stage: restart_from={name})")
        return rec

    def is_done(self, name: str) -> bool:
        rec = self.record(name)
        return rec is not None and rec["status"] == "done"

    def result(self, name: str) -> dict:
        rec = self.record(name)
        if rec is None or rec["status"] != "done":
            raise RunFolderError(f"stage {name!r} has not finished in {self.root}")
        return rec["result"]

    def _write_record(self, name: str, rec: dict) -> None:
        atomic_write_json(self.stage_dir(name) / RECORD, rec)

    # ------------------------------------------------------------------ checked reads
    def verified(self, stage: str, name: str) -> tuple[Path, str]:
        """``(path, sha256)`` of output ``name`` of finished stage ``stage``, after checking its size
        and sha256 against the record; :class:`IntegrityError` names the file and the stage to redo."""
        path = self.root / stage / name
        redo = f"redo that stage: restart_from={stage} (or start a new run_dir)"
        rec = self.record(stage)
        if rec is None or rec["status"] != "done":
            raise IntegrityError(f"{path} is needed but stage {stage!r} has not finished")
        want = rec.get("outputs", {}).get(name)
        if want is None:
            raise IntegrityError(f"{path}: stage {stage!r} recorded no output named {name!r}; {redo}")
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (written by stage {stage!r}); {redo}")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise IntegrityError(f"{path} is {size} bytes but stage {stage!r} wrote {want['bytes']} bytes "
                                 f"({'truncated' if size < want['bytes'] else 'changed'} since); {redo}")
        sha = sha256_file(path)
        if sha != want["sha256"]:
            raise IntegrityError(f"{path} changed since stage {stage!r} wrote it (sha256 {sha[:12]}..., recorded "
                                 f"{want['sha256'][:12]}...); {redo}")
        return path, sha

    def read_json(self, stage: str, name: str) -> Any:
        path, _ = self.verified(stage, name)
        return json.loads(path.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ config history
    def _history(self) -> list[Path]:
        return sorted((self.root / HISTORY).glob("[0-9][0-9][0-9]*.yaml"))

    def last_invocation(self) -> tuple[int, dict | None]:
        files = self._history()
        if not files:
            return 0, None
        return int(files[-1].stem), yaml.safe_load(files[-1].read_text(encoding="utf-8"))

    def invocation_for(self, identity: Mapping[str, Any]) -> int:
        """The number of this command: the last one's when its config is the same (a resume), else the next."""
        n, last = self.last_invocation()
        if last is not None and _plain(last.get("identity")) == _plain(dict(identity)):
            return n
        return n + 1

    def record_invocation(self, n: int, *, config: Mapping[str, Any], identity: Mapping[str, Any],
                          source: str, overrides: Sequence[str]) -> None:
        """``config.yaml`` (first command only, never replaced) and ``config_history/<n>.yaml``."""
        first = self.root / "config.yaml"
        if not first.exists():
            atomic_write_text(first, yaml.safe_dump(_plain(dict(config)), sort_keys=False))
        else:
            from .config import dotted_items

            started = yaml.safe_load(first.read_text(encoding="utf-8")) or {}
            old, new = dotted_items(started), dotted_items(_plain(dict(config)))
            changed = [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
                       for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if changed:
                log.info("config differs from %s (the config this run folder was started with) in: %s; this "
                         "command's config is %s/%03d.yaml, and every stage records the values it was made with",
                         first, "; ".join(changed), HISTORY, n)
        path = self.root / HISTORY / f"{n:03d}.yaml"
        if not path.exists():
            atomic_write_text(path, yaml.safe_dump(_plain({
                "invocation": n, "time": _now(), "config_file": source, "overrides": list(overrides),
                "identity": dict(identity), "config": dict(config)}), sort_keys=False))


# ====================================================================== checks before any work
def _downstream(stages: Sequence[Stage], start: str) -> list[str]:
    """``start`` and every stage that reads (directly or not) from it, in table order."""
    hit = {start}
    for s in stages:
        if any(p in hit for p in s.inputs):
            hit.add(s.name)
    return [s.name for s in stages if s.name in hit]


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    old, new = _plain(dict(old)), _plain(dict(new))
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_table(stages: Sequence[Stage]) -> None:
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate stage names in {names}")
    for s in stages:
        for other in names:
            if other != s.name and other.startswith(s.name + "/"):
                raise ValueError(f"stage {other!r} lies inside the folder of stage {s.name!r}")
        seen = names[: names.index(s.name)]
        for p in s.inputs:
            if p not in seen:
                raise ValueError(f"stage {s.name!r} reads from {p!r}, which is not an earlier stage")


def plan(run: RunDir, stages: Sequence[Stage], *, invocation: int, restart_from: str | None,
         run_dir_hint: str) -> list[str]:
    """Every provenance check, before any work; returns the stages ``restart_from`` will redo.

    Raises :class:`ProvenanceError` listing each stage whose config values or inputs changed.
    """
    from .config import ConfigError, _did_you_mean

    check_table(stages)
    names = [s.name for s in stages]
    redo: list[str] = []
    if restart_from is not None:
        starts: list[str] = []
        for pattern in [p.strip() for p in str(restart_from).split(",") if p.strip()]:
            hits = fnmatch.filter(names, pattern)
            if not hits:
                raise ConfigError(f"restart_from={pattern!r} is not a stage of this run"
                                  f"{_did_you_mean(pattern, names)}; stages: {', '.join(names)}")
            starts += hits
        again = {n for start in starts for n in _downstream(stages, start)}
        redo = [n for n in names if n in again
                and (rec := run.record(n)) is not None and rec.get("invocation", 0) < invocation]
    problems: list[tuple[str, list[str]]] = []
    for s in stages:
        rec = run.record(s.name)
        if rec is None or s.name in redo:
            continue
        changes = _diff(rec["config"], s.config)
        if not changes and rec["status"] == "done":
            for key, sha in rec.get("inputs", {}).items():
                producer, _, fname = key.rpartition("/")
                prec = run.record(producer)
                now = (prec or {}).get("outputs", {}).get(fname, {}).get("sha256") if prec and prec["status"] == "done" else None
                if producer in redo or now != sha:
                    changes.append(f"input {key}: made from sha256 {sha[:12]}..., now "
                                   f"{(now[:12] + '...') if now else 'being remade' if producer in redo else 'missing'}")
        if changes:
            problems.append((s.name, changes))
    if problems:
        changed = [name for name, _ in problems]
        roots = [n for n in changed if not any(n in _downstream(stages, c)[1:] for c in changed if c != n)]
        first = ",".join(roots)
        body = "\n".join(f"  stage {name!r} ({(run.record(name) or {}).get('status')}, made by command "
                         f"#{(run.record(name) or {}).get('invocation')}):\n" + "\n".join(f"    {c}" for c in ch)
                         for name, ch in problems)
        raise ProvenanceError(
            f"run folder {run.root}: rerunning would mix results of two configs:\n{body}\n"
            f"Nothing was run. Either\n"
            f"  - start a new run folder: run_dir={run_dir_hint}, or\n"
            f"  - redo {' and '.join(repr(r) for r in roots)} and every stage after {'them' if len(roots) > 1 else 'it'}: "
            f"restart_from={first}")
    return redo


# ====================================================================== running
def run_stage(run: RunDir, stage: Stage, cfg: Any, invocation: int) -> dict:
    """Run one stage (resuming from its checkpoint when it started before) and record it."""
    t0 = time.time()
    prev = run.record(stage.name)
    rec = {"stage": stage.name, "status": "running", "invocation": invocation, "config": _plain(dict(stage.config)),
           "started": (prev or {}).get("started", _now())}
    run._write_record(stage.name, rec)
    ctx = StageContext(run, stage, cfg, invocation)
    result = stage.run(ctx)
    rec.update({"status": "done", "inputs": ctx.inputs, "outputs": ctx.outputs, "result": result,
                "finished": _now(), "seconds_last_command": round(time.time() - t0, 1)})
    run._write_record(stage.name, rec)
    return result


def run_stage_chain(recipe: str, container: dict, run_root: str, names: Sequence[str], invocation: int) -> None:
    """Worker-process entry: rebuild the recipe's table from ``container`` and run ``names`` in order."""
    import importlib

    from .config import config_from_container
    from .train import set_progress_bars

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    set_progress_bars(False)  # one process owns the terminal's bars; workers log lines only
    mod = importlib.import_module(recipe)
    cfg = config_from_container(container, mod.SCHEMA)
    table = {s.name: s for s in mod.build_stages(cfg)}
    run = RunDir(run_root)
    for name in names:
        run_stage(run, table[name], cfg, invocation)


def run_stages(run: RunDir, stages: Sequence[Stage], *, recipe: str, container: dict, cfg: Any,
               identity: Mapping[str, Any], source: str, overrides: Sequence[str], restart_from: str | None,
               workers: int, run_dir_hint: str) -> dict[str, dict]:
    """Check, then run every stage that is not done; returns ``{stage: result}`` for the whole table.

    ``recipe`` is the module defining ``SCHEMA`` and ``build_stages(cfg)`` (worker processes rebuild the
    table from it). With ``workers > 1`` the pending stages of each ``group`` whose other inputs are
    ready run side by side in worker processes; everything else runs here, in table order, as soon as
    its inputs are done (e.g. the cliff report while the AR models train).
    """
    from .workers import Job, WorkerPool

    table = {s.name: s for s in stages}
    invocation = run.invocation_for(identity)
    redo = plan(run, stages, invocation=invocation, restart_from=restart_from, run_dir_hint=run_dir_hint)
    run.root.mkdir(parents=True, exist_ok=True)
    run.record_invocation(invocation, config=container, identity=identity, source=source, overrides=overrides)
    for name in redo:
        log.info("[%s] restart_from=%s: removing the stage's folder to redo it", name, restart_from)
        shutil.rmtree(run.root / name)
    for s in stages:
        if run.is_done(s.name):
            log.info("[%s] done earlier (command #%s): %s", s.name, run.record(s.name)["invocation"], run.root / s.name)

    pending = [s for s in stages if not run.is_done(s.name)]
    chains: dict[str, list[str]] = {}  # group -> its pending stages, run in a worker process
    if workers > 1:
        for s in pending:
            if s.group is not None:
                chains.setdefault(s.group, []).append(s.name)
        for g in list(chains):
            inside = set(chains[g])
            if not all(p in inside or run.is_done(p) for n in chains[g] for p in table[n].inputs):
                del chains[g]  # needs a stage outside its chain that is not done yet: runs here, later
        if len(chains) < 2:
            chains = {}
    in_workers = {n for chain in chains.values() for n in chain}
    with WorkerPool(workers) as pool:
        if chains:
            log.info("running %d stage chains side by side (%s), one process each", len(chains), ", ".join(chains))
            for chain in chains.values():
                pool.submit(Job(name=" -> ".join(chain), target="recipes.pipeline.rundir:run_stage_chain",
                                args=(recipe, container, str(run.root), chain, invocation)))
        here = [s for s in pending if s.name not in in_workers]
        while here or pool.busy:
            ready = next((s for s in here if all(run.is_done(p) for p in s.inputs)), None)
            if ready is not None:  # the main process works while the workers do
                run_stage(run, ready, cfg, invocation)
                here.remove(ready)
                continue
            if not pool.busy:
                missing = {p for s in here for p in s.inputs if not run.is_done(p)}
                pool.raise_failures()
                raise RunFolderError(f"stages {[s.name for s in here]} need {sorted(missing)}, which did not finish")
            pool.poll(timeout=1.0)  # a failed chain: the others finish, then its error is raised
    pool.raise_failures()
    return {s.name: run.result(s.name) for s in stages}


def run_recipe_table(loaded: Any, stages: Sequence[Stage], *, recipe: str, workers: int) -> tuple[RunDir, dict]:
    """Run a recipe's stage table for a checked config (``recipes.pipeline.config.LoadedConfig``):
    ``run_dir`` and ``restart_from`` from the config, provenance from its values minus the operational
    keys. ``recipe`` names the module with ``SCHEMA`` and ``build_stages(cfg)``. Returns the run folder
    and ``{stage: result}``. (The demo's ``run_titok_pytorch`` is one caller; a study with many arms x
    seeds in one run folder is another: stage names like ``arms/<arm>/seed<k>/tokenizer``, one group per
    arm and seed.)"""
    from .config import OPERATIONAL_KEYS

    cfg = loaded.cfg
    container = loaded.to_container()
    identity = {k: v for k, v in container.items() if k not in OPERATIONAL_KEYS or k == "restart_from"}
    run = RunDir(cfg.run_dir)
    log.info("run folder: %s", run.root.resolve())
    results = run_stages(run, stages, recipe=recipe, container=container, cfg=cfg, identity=identity,
                         source=str(loaded.source), overrides=loaded.overrides, restart_from=cfg.get("restart_from"),
                         workers=workers, run_dir_hint=f"{cfg.run_dir}_2")
    return run, results


# ====================================================================== numpy helpers for checked inputs
def load_npy(path: str | os.PathLike, stage: str | None = None) -> np.ndarray:
    """``np.load`` (no pickles) that names the file (and the stage to redo) when it is unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        redo = f"; redo that stage: restart_from={stage}" if stage else ""
        raise IntegrityError(f"{path} is not a readable .npy file ({e}){redo}") from None


def check_tokens(tokens: np.ndarray, sizes: Iterable[int], path: str | os.PathLike, stage: str) -> None:
    """Every token of ``tokens`` (N, L) in [0, K(i)); otherwise name the file, row and position."""
    sizes = np.asarray(list(sizes), dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] != sizes.size:
        raise IntegrityError(f"{path}: tokens of shape {tokens.shape}, expected (N, {sizes.size}) for the schedule; "
                             f"redo that stage: restart_from={stage}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise IntegrityError(f"{path}: tokens of dtype {tokens.dtype}, expected integers; "
                             f"redo that stage: restart_from={stage}")
    bad = (tokens < 0) | (tokens >= sizes[None])
    if bad.any():
        rows, cols = np.nonzero(bad)
        r, c = int(rows[0]), int(cols[0])
        raise IntegrityError(
            f"{path}: token {int(tokens[r, c])} at row {r}, position {c} (0-based; position {c + 1} counted from 1) "
            f"is outside [0, K({c}) = {int(sizes[c])}); {int(bad.sum())} such token(s) in {len(set(rows.tolist()))} "
            f"row(s). Redo stage {stage!r}: restart_from={stage} (or start a new run_dir)")
