"""The reproduction study's stage table (``python recipes/run_study.py``), on the recipe machinery of
``recipes/pipeline/rundir.py`` (provenance, sha256-checked inputs, resumable checkpoints, workers).

A *unit* is one (dataset, arm, seed). Its stages run in order in one worker process (``group`` = the
unit), units side by side (``workers``, one torch thread each); the stages that read the frozen
classifier run in the main process while the workers train::

    stage                          runs in   reads                                 writes
    <d>/classifier                 main      -                                     classifier.pt (frozen instrument)
    <d>/<arm>/seed<s>/tokenizer    worker    -                                     checkpoint.pt (+ .prev)
    <d>/<arm>/seed<s>/tokens       worker    tokenizer checkpoint                  tokens.npy, labels.npy, codebook.npy,
                                                                                   heldout_index.npy, schedule.json,
                                                                                   recon_heldout.npy, metrics.json
    <d>/<arm>/seed<s>/cliff        worker    tokens                                metrics.json (i*, entropies, probes)
    <d>/<arm>/seed<s>/ar           worker    tokens                                checkpoint.pt, metrics.json (NLL)
    <d>/<arm>/seed<s>/samples      worker    tokenizer + ar checkpoints, tokens    samples_<mode>.npz (tokens, images)
    <d>/<arm>/seed<s>/eval         main      samples, tokens, classifier           metrics.json (FD, P/R, class acc,
                                                                                   memorisation, PSNR, rFD)
    collect                        main      every unit's metrics.json             results.json
    report                         main      results.json                          report.md, report.json, figures

Data are the same for every seed (``data_seed``); the seed sets the tokenizer init, the AR init and the
sampling. The measured cliff is ``vcq_plugin.analysis.measured_transition_position`` (prefix entropy within
``analysis.cliff_tolerance`` bits of log2 N). Every stage's config values are the keys of its ``Stage.config``:
a rerun with a changed value refuses (new ``run_dir`` or ``restart_from=``).
"""
from __future__ import annotations

import datetime as _dt
import functools
import glob
import io
import itertools
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from recipes.pipeline.rundir import RunDir, Stage, StageContext, check_tokens, load_npy
from vcq_plugin.schedule import CodebookSchedule

from .config import STUDY_SCHEMA, arm_schedule, dataset_name, dataset_seeds

log = logging.getLogger("vcq.recipe")

SCHEMA = STUDY_SCHEMA
RECIPE = __name__  # worker processes rebuild the stage table from this module
UNIT_STAGES = ("tokenizer", "tokens", "cliff", "ar", "samples", "eval")
TOKEN_FILES = ("tokens.npy", "labels.npy", "codebook.npy", "heldout_index.npy", "schedule.json")


# ====================================================================== the table
def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return node.name if hasattr(node, "name") and hasattr(node, "value") else node


def _flat(prefix: str, node: Any) -> dict[str, Any]:
    value = _plain(node)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v) if isinstance(v, dict) and v else {f"{prefix}.{k}": v})
        return out
    return {prefix: value}


def units(cfg: DictConfig) -> list[tuple[str, str, int]]:
    """Every (dataset key, arm, seed) of the study, in table order."""
    return [(d, arm, s) for d in cfg.datasets for arm in cfg.datasets[d].arms for s in dataset_seeds(cfg, d)]


def unit_name(d: str, arm: str, seed: int) -> str:
    return f"{d}/{arm}/seed{seed}"


def _data_keys(cfg: DictConfig, d: str) -> dict[str, Any]:
    keys = _flat(f"datasets.{d}", cfg.datasets[d])
    for k in (f"datasets.{d}.arms", f"datasets.{d}.seeds"):
        keys.pop(k, None)  # which arms / seeds run does not change what one unit computes
    return keys


def _arm_keys(cfg: DictConfig, arm: str) -> dict[str, Any]:
    keys = _flat(f"arms.{arm}", cfg.arms[arm])
    k = cfg.arms[arm].k_max
    if isinstance(k, str):  # mean_of_<other>: its K comes from the other arm's schedule
        keys.update(_flat(f"arms.{k[len('mean_of_'):]}", cfg.arms[k[len('mean_of_'):]]))
    return keys


def build_stages(cfg: DictConfig) -> list[Stage]:
    """The study's stages, in order (module docstring)."""
    stages: list[Stage] = []
    for d in cfg.datasets:
        data = _data_keys(cfg, d)
        stages.append(Stage(f"{d}/classifier", {**data, **_flat("classifier", cfg.classifier)},
                            partial(classifier_stage, d=d)))
    clf_keys = {d: {**_data_keys(cfg, d), **_flat("classifier", cfg.classifier)} for d in cfg.datasets}
    collect_inputs: dict[str, tuple[str, ...]] = {}
    for d, arm, seed in units(cfg):
        u = unit_name(d, arm, seed)
        base = {"seed": seed, **_data_keys(cfg, d), **_arm_keys(cfg, arm)}
        tok = {**base, **_flat("tokenizer", cfg.tokenizer)}
        ana = {**tok, **_flat("analysis", cfg.analysis), "probe_reference": _arm_keys(cfg, cfg.analysis.probe_capacity_of)}
        ar = {**tok, **_flat("ar", cfg.ar)}
        smp = {**ar, **_flat("sampling", cfg.sampling)}
        ev = {**smp, **_flat("metrics", cfg.metrics), **clf_keys[d]}
        kw = dict(d=d, arm=arm, seed=seed)
        stages += [
            Stage(f"{u}/tokenizer", tok, partial(tokenizer_stage, **kw), group=u),
            Stage(f"{u}/tokens", tok, partial(tokens_stage, **kw), inputs={f"{u}/tokenizer": ("checkpoint.pt",)},
                  group=u),
            Stage(f"{u}/cliff", ana, partial(cliff_stage, **kw), inputs={f"{u}/tokens": TOKEN_FILES}, group=u),
            Stage(f"{u}/ar", ar, partial(ar_stage, **kw), inputs={f"{u}/tokens": TOKEN_FILES}, group=u),
            Stage(f"{u}/samples", smp, partial(samples_stage, **kw),
                  inputs={f"{u}/tokenizer": ("checkpoint.pt",), f"{u}/tokens": ("schedule.json",),
                          f"{u}/ar": ("checkpoint.pt",)}, group=u),
            Stage(f"{u}/eval", ev, partial(eval_stage, **kw),
                  inputs={f"{d}/classifier": ("classifier.pt",), f"{u}/tokens": TOKEN_FILES + ("recon_heldout.npy",),
                          f"{u}/samples": tuple(f"samples_{m}.npz" for m in cfg.sampling.modes)}),
        ]
        for s in ("tokens", "cliff", "ar", "eval"):
            collect_inputs[f"{u}/{s}"] = ("metrics.json",)
    for d in cfg.datasets:
        collect_inputs[f"{d}/classifier"] = ("classifier.json",)
    everything = _flat("study", {k: _plain(v) for k, v in cfg.items() if k not in ("run_dir", "workers", "restart_from")})
    stages.append(Stage("collect", everything, collect_stage, inputs=collect_inputs))
    stages.append(Stage("report", everything, report_stage, inputs={"collect": ("results.json",)}))
    return stages


# ====================================================================== progress
def progress(ctx: StageContext, what: str) -> None:
    """One log line: which unit and stage, how many stages are done, the projected remaining time
    (mean measured seconds of each stage kind x the stages of that kind left, over the workers)."""
    cfg = ctx.cfg
    names = [s.name for s in build_stages(cfg)]
    done_s: dict[str, list[float]] = {}
    left: dict[str, int] = {}
    for n in names:
        kind = n.rsplit("/", 1)[-1]
        rec = ctx.run.record(n) if (ctx.run.root / n / "stage.json").is_file() else None
        if rec is not None and rec["status"] == "done":
            if rec.get("seconds_last_command") is not None and rec.get("invocation") == ctx.invocation:
                done_s.setdefault(kind, []).append(float(rec["seconds_last_command"]))
        else:
            left[kind] = left.get(kind, 0) + 1
    n_done = len(names) - sum(left.values())
    unknown = [k for k in left if k not in done_s and k in UNIT_STAGES]
    if unknown:
        eta = f"projection after the first unit (no {', '.join(unknown)} stage timed yet in this command)"
    else:
        secs = sum(np.mean(done_s.get(k, [0.0])) * c for k, c in left.items()) / max(1, int(cfg.workers))
        eta = f"projected remaining ~{secs / 60:.0f} min on {cfg.workers} workers (finish ~" \
              f"{(_dt.datetime.now() + _dt.timedelta(seconds=secs)).strftime('%H:%M')})"
    log.info("[%s] %s | %d / %d stages done | %s", ctx.name, what, n_done, len(names), eta)


# ====================================================================== data (made once per process)
@dataclass(frozen=True)
class Data:
    images: torch.Tensor      # (N, 3, S, S) float in [0, 1]
    labels: torch.Tensor      # (N,) int64
    train_idx: np.ndarray
    held_idx: np.ndarray
    description: str


def dataset(cfg: DictConfig, d: str) -> Data:
    return _dataset(json.dumps({"name": dataset_name(cfg, d), **_data_keys(cfg, d)}, sort_keys=True), d)


@functools.lru_cache(maxsize=2)
def _dataset(key: str, d: str) -> Data:
    from recipes.pipeline.data import holdout_split

    from .data import dataset_description, load_study_dataset

    k = json.loads(key)
    p = f"datasets.{d}."
    name, colours = k["name"], k[p + "colours"] or "dark"
    kwargs = {} if name == "digits" else {"colours": colours}
    images, labels = load_study_dataset(name, num_images=k[p + "num_images"], image_size=int(k[p + "image_size"]),
                                        num_classes=int(k[p + "num_classes"]), seed=int(k[p + "data_seed"]), **kwargs)
    train_idx, held_idx = holdout_split(images.shape[0], float(k[p + "holdout_fraction"]), int(k[p + "data_seed"]))
    desc = dataset_description(name, int(k[p + "num_classes"]), **kwargs)
    return Data(images, labels, train_idx, held_idx, desc)


def _tok_cfg(cfg: DictConfig, sched: CodebookSchedule) -> dict:
    tok = OmegaConf.to_container(cfg.tokenizer, resolve=True, enum_to_str=True)
    tok["codebook_size"] = sched.k_max  # constant_mean: its own K (every other value shared)
    return tok


def _tokenizer(cfg: DictConfig, arm: str, d: str, seed: int) -> tuple[torch.nn.Module, CodebookSchedule]:
    from recipes.pipeline.tokenizer import build_titok

    sched = arm_schedule(cfg, arm)
    a = cfg.arms[arm]
    variant = {"quantizer": str(a.quantizer), "k_min": a.k_min, "power": a.power}
    torch.manual_seed(int(seed))
    return build_titok(_tok_cfg(cfg, sched), variant, sched, int(cfg.datasets[d].image_size)), sched


# ====================================================================== stages
def classifier_stage(ctx: StageContext, d: str) -> dict:
    from .features import save_classifier, train_classifier

    progress(ctx, "training the measuring classifier")
    c, data = ctx.cfg.classifier, dataset(ctx.cfg, d)
    tr, he = torch.from_numpy(data.train_idx), torch.from_numpy(data.held_idx)
    model, info = train_classifier(data.images[tr], data.labels[tr], data.images[he], data.labels[he],
                                   num_classes=int(ctx.cfg.datasets[d].num_classes), steps=int(c.steps),
                                   batch_size=int(c.batch_size), lr=float(c.lr), width=int(c.width),
                                   hflip=bool(c.hflip), seed=int(c.seed))
    save_classifier(ctx.dir / "classifier.pt", model, info)
    ctx.add_output("classifier.pt")
    ctx.save_json("classifier.json", info)
    log.info("[%s] held-out top-1 %.3f (chance %.3f), frozen", ctx.name, info["heldout_top1"], info["chance"])
    return info


def tokenizer_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from recipes.pipeline.tokenizer import train_tokenizer
    from recipes.pipeline.train import loss_trend

    progress(ctx, "training the tokenizer")
    cfg, data = ctx.cfg, dataset(ctx.cfg, d)
    tok, sched = _tokenizer(cfg, arm, d, seed)
    res = train_tokenizer(tok, data.images[torch.from_numpy(data.train_idx)], _tok_cfg(cfg, sched), name=ctx.name,
                          ckpt_path=ctx.checkpoints.path, seed=int(seed))
    ctx.add_output("checkpoint.pt")
    return {"steps": res["step"], "resumed_from": res["resumed_from"], "final_loss": res["final_loss"],
            **loss_trend(res["history"]), "params": sum(p.numel() for p in tok.parameters())}


def tokens_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from recipes.pipeline.tokenizer import decode, write_tokens
    from recipes.pipeline.train import load_weights
    from vcq_plugin.metrics import psnr

    progress(ctx, "encoding the dataset")
    cfg, data = ctx.cfg, dataset(ctx.cfg, d)
    tok, sched = _tokenizer(cfg, arm, d, seed)
    load_weights(ctx.input(ctx.name.rsplit("/", 1)[0] + "/tokenizer", "checkpoint.pt"), tok)
    tokens = write_tokens(ctx, tok, sched, data)
    held = data.images[torch.from_numpy(data.held_idx)]
    recon = decode(tok, tokens[data.held_idx])
    ctx.save_npy("recon_heldout.npy", recon.numpy().astype(np.float32))
    m = {"psnr": float(psnr(recon, held, data_range=1.0)), "codes_used": int(np.unique(tokens).size)}
    ctx.save_json("metrics.json", m)
    return m


def _unit_tokens(ctx: StageContext, src: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, CodebookSchedule]:
    sched = CodebookSchedule.from_spec(json.loads(ctx.input(src, "schedule.json").read_text(encoding="utf-8")))
    path = ctx.input(src, "tokens.npy")
    tokens = load_npy(path, src)
    check_tokens(tokens, sched.sizes.tolist(), path, src)
    labels = load_npy(ctx.input(src, "labels.npy"), src)
    held = load_npy(ctx.input(src, "heldout_index.npy"), src)
    return tokens, labels, held, sched


def cliff_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from vcq_plugin.analysis import (codebook_utilisation, equal_capacity_k, first_k_linear_probe,
                                     measured_transition_position, prefix_entropy_profile)
    from vcq_plugin.schedule import uniform_transition_position

    progress(ctx, "entropy cliff, subsets, probes")
    cfg, a = ctx.cfg, ctx.cfg.analysis
    src = ctx.name.rsplit("/", 1)[0] + "/tokens"
    tokens, labels, held, sched = _unit_tokens(ctx, src)
    train = np.setdiff1d(np.arange(tokens.shape[0]), held)
    tr = tokens[train]
    n, tol = int(tr.shape[0]), float(a.cliff_tolerance)
    prof = prefix_entropy_profile(tr)
    i0 = uniform_transition_position(n, int(cfg.tokenizer.codebook_size))  # constant K_max's computed i*
    util = codebook_utilisation(tr, sched)
    data_seed = int(cfg.datasets[d].data_seed)
    order = np.random.default_rng(data_seed + 104729).permutation(n)  # the same subsets for every arm and seed
    subsets = []
    for f in a.subset_fractions:
        m = max(2, int(round(float(f) * n)))
        subsets.append({"n": m, "fraction": float(f), "istar_computed": sched.transition_position(m),
                        "istar_measured": measured_transition_position(tr[np.sort(order[:m])], tol)})
    codebook = load_npy(ctx.input(src, "codebook.npy"), src)
    ref_bits = float(arm_schedule(cfg, a.probe_capacity_of).capacity_bits()[int(a.probe_k) - 1])
    k_cap = equal_capacity_k({arm: sched}, ref_bits)[arm]

    def probe(k: int) -> dict:
        return first_k_linear_probe(tokens, labels, codebook, k=int(k), test_fraction=float(a.probe_test_fraction),
                                    seed=data_seed)

    p_k, p_cap, p_all = probe(int(a.probe_k)), probe(k_cap), probe(sched.seq_len)
    m = {"istar_measured": prof.transition_position(tol), "istar_computed": sched.transition_position(n),
         "prefix_bits_at_i0": float(prof.joint[i0 - 1]), "i0": int(i0), "util_min": float(util.min()),
         "probe_top1_equal_k": p_k["top1"], "probe_top1_equal_capacity": p_cap["top1"],
         "probe_k_equal_capacity": int(k_cap), "probe_top1_all": p_all["top1"], "probe_chance": p_k["chance"],
         "probe_converged": bool(p_k["converged"] and p_cap["converged"] and p_all["converged"]),
         "num_train": n, "log2_n": math.log2(n), "subsets": subsets,
         "curves": {"conditional_bits": prof.conditional.tolist(), "joint_bits": prof.joint.tolist(),
                    "utilisation": util.tolist()}}
    ctx.save_json("metrics.json", m)
    log.info("[%s] i* computed %s, measured %s (prefix entropy within %g bit of log2 N = %.2f); probe top-1 "
             "k=%d: %.3f, equal capacity k=%d: %.3f, all: %.3f", ctx.name, m["istar_computed"], m["istar_measured"],
             tol, math.log2(n), int(a.probe_k), p_k["top1"], k_cap, p_cap["top1"], p_all["top1"])
    return {k: v for k, v in m.items() if k != "curves"}


def ar_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from recipes.pipeline.ar import build_ar, tokens_tensor
    from recipes.pipeline.data import batch_indices
    from recipes.pipeline.train import loss_trend, train_loop

    progress(ctx, "training the AR model")
    cfg = ctx.cfg
    src = ctx.name.rsplit("/", 1)[0] + "/tokens"
    tokens_np, labels_np, held, sched = _unit_tokens(ctx, src)
    tokens, labels = tokens_tensor(tokens_np), torch.from_numpy(labels_np)
    train = torch.from_numpy(np.setdiff1d(np.arange(tokens.shape[0]), held))
    tr_t, tr_y, he_t, he_y = tokens[train], labels[train], tokens[torch.from_numpy(held)], labels[torch.from_numpy(held)]
    torch.manual_seed(int(seed))
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=int(cfg.datasets[d].num_classes), seq_len=sched.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.ar.lr), betas=(0.9, 0.95),
                            weight_decay=float(cfg.ar.weight_decay))
    bs = int(cfg.ar.batch_size)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(tr_t.shape[0], bs, int(seed) + 1, step))
        return model.loss(tr_t[idx], tr_y[idx])

    res = train_loop(name=ctx.name, model=model, optimizer=opt, loss_fn=loss_fn, total_steps=int(cfg.ar.steps),
                     ckpt_path=ctx.checkpoints.path, ckpt_every=int(cfg.ar.ckpt_every), lr=float(cfg.ar.lr),
                     warmup_steps=int(cfg.ar.warmup_steps), grad_clip=cfg.ar.grad_clip, seed=int(seed) + 1)
    ctx.add_output("checkpoint.pt")
    h, t = model.nll(he_t, he_y), model.nll(tr_t, tr_y)
    m = {"nll_heldout": h["bits_per_token"], "nll_train": t["bits_per_token"],
         "nll_gap": h["bits_per_token"] - t["bits_per_token"], "steps": res["step"], **loss_trend(res["history"]),
         "curves": {"nll_heldout_bits": h["bits_per_position"], "nll_train_bits": t["bits_per_position"]}}
    ctx.save_json("metrics.json", m)
    log.info("[%s] NLL held-out %.3f / train %.3f bits/token (gap %.3f)", ctx.name, m["nll_heldout"], m["nll_train"],
             m["nll_gap"])
    return {k: v for k, v in m.items() if k != "curves"}


def samples_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from recipes.pipeline.ar import build_ar
    from recipes.pipeline.tokenizer import decode
    from recipes.pipeline.train import load_weights
    from vcq_plugin.registry import create_sampler

    progress(ctx, "sampling (" + ", ".join(ctx.cfg.sampling.modes) + ")")
    cfg, s = ctx.cfg, ctx.cfg.sampling
    unit = ctx.name.rsplit("/", 1)[0]
    sched = CodebookSchedule.from_spec(json.loads(ctx.input(f"{unit}/tokens", "schedule.json").read_text("utf-8")))
    num_classes = int(cfg.datasets[d].num_classes)
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=num_classes, seq_len=sched.seq_len)
    load_weights(ctx.input(f"{unit}/ar", "checkpoint.pt"), model)
    model.eval()
    tok, _ = _tokenizer(cfg, arm, d, seed)
    load_weights(ctx.input(f"{unit}/tokenizer", "checkpoint.pt"), tok)
    y = torch.arange(num_classes).repeat_interleave(int(s.per_class))
    out = {}
    for j, (mode, mc) in enumerate(s.modes.items()):
        sampler = create_sampler(str(mc.sampler), schedule=sched, guidance_scale=float(mc.guidance_scale),
                                 guidance_power=float(mc.guidance_power), temperature=float(mc.temperature),
                                 top_k=int(s.top_k), top_p=float(s.top_p))
        t0 = time.time()
        toks = model.generate(y, sampler, generator=torch.Generator().manual_seed(int(seed) * 1000 + j))
        if not bool(((toks >= 0) & (toks < sched.sizes[None])).all()):
            raise RuntimeError(f"[{ctx.name}] a sampled token is outside [0, K(i)): the sampler's mask failed")
        imgs = decode(tok, toks)
        buf = io.BytesIO()  # np.savez seeks; the recorded writer hashes a plain stream
        np.savez(buf, tokens=toks.numpy().astype(np.int32), labels=y.numpy(), images=imgs.numpy().astype(np.float32))
        ctx.save_with(f"samples_{mode}.npz", lambda f, b=buf: f.write(b.getvalue()))
        out[mode] = {"num": int(toks.shape[0]), "sampler": repr(sampler), "seconds": round(time.time() - t0, 2)}
    return out


def _npz(path) -> dict:
    from recipes.pipeline.rundir import IntegrityError

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise IntegrityError(f"{path} is not a readable .npz file ({e})") from None


def eval_stage(ctx: StageContext, d: str, arm: str, seed: int) -> dict:
    from .generation_metrics import class_accuracy, fidelity_metrics, memorisation

    progress(ctx, "metrics with the frozen classifier")
    cfg, data = ctx.cfg, dataset(ctx.cfg, d)
    unit = ctx.name.rsplit("/", 1)[0]
    clf = ctx.input(f"{d}/classifier", "classifier.pt")
    tokens, _, held_idx, _ = _unit_tokens(ctx, f"{unit}/tokens")
    train_idx = np.setdiff1d(np.arange(tokens.shape[0]), held_idx)
    held = data.images[torch.from_numpy(held_idx)]
    train_imgs = data.images[torch.from_numpy(train_idx)]
    recon = torch.from_numpy(load_npy(ctx.input(f"{unit}/tokens", "recon_heldout.npy"), f"{unit}/tokens"))
    k = int(cfg.metrics.prc_neighborhood)
    m: dict[str, Any] = {
        "rfd": fidelity_metrics(recon, held, classifier_path=clf, prc=False)["fd"],
        "recon_class_acc": class_accuracy(recon, data.labels[torch.from_numpy(held_idx)], clf)}
    reference = train_imgs if cfg.metrics.reference.name == "train" else held
    for mode in cfg.sampling.modes:
        z = _npz(ctx.input(f"{unit}/samples", f"samples_{mode}.npz"))
        imgs, y = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
        f = fidelity_metrics(imgs, reference, classifier_path=clf, prc=True, prc_neighborhood=k)
        mem = memorisation(z["tokens"], tokens[train_idx], imgs, train_imgs, held)
        m.update({f"fd_{mode}": f["fd"], f"precision_{mode}": f["precision"], f"recall_{mode}": f["recall"],
                  f"class_acc_{mode}": class_accuracy(imgs, y, clf), f"token_copy_{mode}": mem["token_copy_rate"],
                  f"nn_ratio_{mode}": mem["nn_ratio"]})
    ctx.save_json("metrics.json", m)
    log.info("[%s] rFD %.3f, reconstructions recognised %.3f; FD %s", ctx.name, m["rfd"], m["recon_class_acc"],
             ", ".join(f"{mode} {m[f'fd_{mode}']:.3f}" for mode in cfg.sampling.modes))
    return m


# ====================================================================== collect + report
def gather(run: RunDir, cfg: DictConfig, *, read=None, partial_ok: bool = False) -> dict:
    """The results dict :func:`recipes.study.report.write_report` takes, from the units' metrics.json
    (``read(stage, name)`` returns the parsed JSON; by default the checked read of a finished stage).
    ``partial_ok``: units not finished are left out (and listed) instead of failing."""
    read = read or run.read_json
    missing: list[str] = []
    datasets: dict[str, Any] = {}
    for d in cfg.datasets:
        dcfg = cfg.datasets[d]
        try:
            clf = read(f"{d}/classifier", "classifier.json")
        except Exception:  # noqa: BLE001 - partial rebuild: the classifier may not be done yet
            if not partial_ok:
                raise
            clf, _ = None, missing.append(f"{d}/classifier")
        data = dataset(cfg, d)
        modes = {m: _plain(mc) for m, mc in cfg.sampling.modes.items()}
        aware = modes.get("aware", {})
        ds: dict[str, Any] = {
            "description": data.description, "num_train": int(len(data.train_idx)), "num_heldout": int(len(data.held_idx)),
            "num_classes": int(dcfg.num_classes), "image_size": int(dcfg.image_size), "probe_k": int(cfg.analysis.probe_k),
            "classifier": clf, "sampling": {"guidance_scale": aware.get("guidance_scale"),
                                            "guidance_power": aware.get("guidance_power"),
                                            "samples_per_mode": int(cfg.sampling.per_class) * int(dcfg.num_classes),
                                            "modes": modes},
            "arms": {}}
        for arm in dcfg.arms:
            sched = arm_schedule(cfg, arm)
            n = len(data.train_idx)
            a = {"schedule": sched.to_dict(), "mean_k": float(sched.mean_size),
                 "bpp": float(sched.bits_per_pixel(int(dcfg.image_size))), "istar_computed": sched.transition_position(n),
                 "capacity_bits": [float(c) for c in sched.capacity_bits().tolist()], "seeds": {}}
            for seed in dataset_seeds(cfg, d):
                u = unit_name(d, arm, seed)
                got: dict[str, Any] = {}
                try:
                    for s in ("tokens", "cliff", "ar", "eval"):
                        got[s] = read(f"{u}/{s}", "metrics.json")
                except Exception:  # noqa: BLE001
                    if not partial_ok:
                        raise
                    missing.append(u)
                    continue
                values: dict[str, Any] = {}
                curves: dict[str, Any] = {}
                for part in got.values():
                    for k, v in part.items():
                        if k == "curves":
                            curves.update(v)
                        elif k == "subsets" or isinstance(v, (int, float)) and not isinstance(v, bool) or v is None:
                            values[k] = v
                notes = {}
                if values.get("istar_measured") is None:
                    notes["istar_measured"] = "the prefix entropy never came within the tolerance of log2 N"
                a["seeds"][str(seed)] = {**values, "curves": curves, "notes": notes}
            ds["arms"][arm] = a
        datasets[d] = ds
    return {"datasets": datasets, "missing_units": missing}


def _records_wall(run: RunDir) -> tuple[float | None, str | None]:
    """Wall time from the first stage start to the last stage finish (from the stage records)."""
    starts, ends = [], []
    for p in glob.glob(str(run.root / "**" / "stage.json"), recursive=True):
        try:
            rec = json.loads(open(p, encoding="utf-8").read())
        except ValueError:
            continue
        if rec.get("stage") in ("collect", "report"):
            continue
        if rec.get("started"):
            starts.append(_dt.datetime.fromisoformat(rec["started"]))
        if rec.get("finished"):
            ends.append(_dt.datetime.fromisoformat(rec["finished"]))
    if not starts or not ends:
        return None, None
    return (max(ends) - min(starts)).total_seconds(), min(starts).isoformat(timespec="minutes")


def warnings_for(cfg: DictConfig, results: dict) -> list[str]:
    """Plain warnings: models trained far shorter than the study's defaults (the numbers then mean
    nothing), a weak measuring classifier, tokenizers that lose the class."""
    from .config import STUDY_SCHEMA

    defaults = OmegaConf.structured(STUDY_SCHEMA.cls)
    out = []
    for key in ("tokenizer.steps", "ar.steps", "classifier.steps"):
        got, full = int(OmegaConf.select(cfg, key)), int(OmegaConf.select(defaults, key))
        if got * 4 < full:
            out.append(f"{key}={got} is far below the study's default {full}: the models are undertrained and the "
                       "numbers below mean nothing (a smoke-size run checks the machinery, not the paper)")
    for d, ds in results.get("datasets", {}).items():
        clf = ds.get("classifier") or {}
        if clf.get("heldout_top1") is not None and clf["heldout_top1"] < 0.9:
            out.append(f"{d}: the measuring classifier reaches only {clf['heldout_top1']:.2f} held-out top-1 (chance "
                       f"{clf.get('chance', 0):.2f}): FD, precision / recall and class accuracy measure little")
    return out


def study_header(run: RunDir, cfg: DictConfig) -> dict:
    wall, started = _records_wall(run)
    cpu = platform.processor() or platform.machine()
    return {"date": started or _dt.datetime.now().isoformat(timespec="minutes"),
            "machine": f"{os.cpu_count()} CPU cores ({cpu}, {platform.system()}), shared; {cfg.workers} worker "
                       "processes x 1 torch thread",
            "wall_s": wall, "seeds": [int(s) for s in cfg.seeds],
            "seeds_per_dataset": {d: dataset_seeds(cfg, d) for d in cfg.datasets},
            "config": _plain(cfg)}


def collect_stage(ctx: StageContext) -> dict:
    progress(ctx, "collecting every unit")
    results = gather(ctx.run, ctx.cfg, read=lambda s, n: json.loads(ctx.input(s, n).read_text(encoding="utf-8")))
    results["study"] = study_header(ctx.run, ctx.cfg)
    results["study"]["warnings"] = warnings_for(ctx.cfg, results)
    ctx.save_json("results.json", results)
    return {"units": sum(len(a["seeds"]) for ds in results["datasets"].values() for a in ds["arms"].values())}


def figures(results: dict, out_dir) -> dict[str, str]:
    """Fig. 2(a) in kind per dataset: every arm's mean measured H(x_i | x_<i) over seeds, the remaining
    budget R(i) of Eq. 2, computed and (mean) measured i*; plus the prefix-entropy panel."""
    from vcq_plugin.analysis import plot_entropy_cliff

    out = {}
    for d, ds in results["datasets"].items():
        curves = []
        for arm, a in ds["arms"].items():
            seeds = list(a["seeds"].values())
            if not seeds:
                continue
            cond = np.mean([s["curves"]["conditional_bits"] for s in seeds], axis=0)
            joint = np.mean([s["curves"]["joint_bits"] for s in seeds], axis=0)
            log2n = math.log2(ds["num_train"])
            cap = np.asarray(a["capacity_bits"])
            measured = [s.get("istar_measured") for s in seeds if s.get("istar_measured") is not None]
            curves.append({"name": arm, "conditional": cond.tolist(), "prefix_entropy": joint.tolist(),
                           "remaining_budget": (log2n - np.concatenate([[0.0], cap[:-1]])).tolist(),
                           "istar": a["istar_computed"], "capacity": cap.tolist(), "log2_num_samples": log2n,
                           "measured_istar": int(round(float(np.mean(measured)))) if measured else None})
        if curves:
            paths = plot_entropy_cliff(curves, str(out_dir / f"fig2a_{d}"), formats=("png",),
                                       title=f"{d}: measured H(x_i | x_<i), mean over seeds, and R(i) of Eq. 2",
                                       tolerance=None)
            out[f"fig2a_{d}"] = os.path.relpath(paths[0], out_dir)
        gap = nll_gap_figure(d, ds, out_dir)
        if gap:
            out[f"nll_gap_{d}"] = os.path.relpath(gap, out_dir)
    return out


def nll_gap_figure(name: str, ds: dict, out_dir) -> str | None:
    """Held-out minus train next-token NLL (bits) per position, mean over seeds, one line per arm,
    with each arm's mean measured i* marked: memorisation shows as a gap that opens after the cliff."""
    from vcq_plugin._io import atomic_path
    from vcq_plugin.analysis.plots import _colors, _figure

    fig = _figure((7.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for (arm, a), colour in zip(ds["arms"].items(), itertools.cycle(_colors())):
        seeds = [s["curves"] for s in a["seeds"].values()
                 if s.get("curves", {}).get("nll_heldout_bits") and s["curves"].get("nll_train_bits")]
        if not seeds:
            continue
        gap = np.mean([np.subtract(c["nll_heldout_bits"], c["nll_train_bits"]) for c in seeds], axis=0)
        ax.plot(np.arange(1, gap.size + 1), gap, marker=".", color=colour, label=arm)
        measured = [s.get("istar_measured") for s in a["seeds"].values() if s.get("istar_measured") is not None]
        if measured:
            ax.axvline(float(np.mean(measured)), color=colour, linestyle=":", linewidth=1)
        drawn = True
    if not drawn:
        return None
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("position i (1-based); dotted: the arm's mean measured i*")
    ax.set_ylabel("held-out - train NLL (bits)")
    ax.set_title(f"{name}: AR memorisation per position, mean over seeds")
    ax.legend(fontsize=7, ncol=2)
    path = os.path.join(str(out_dir), f"nll_gap_{name}.png")
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def report_stage(ctx: StageContext) -> dict:
    from .report import write_report

    progress(ctx, "writing the report")
    results = json.loads(ctx.input("collect", "results.json").read_text(encoding="utf-8"))
    results["figures"] = figures(results, ctx.dir)
    for f in results["figures"].values():
        ctx.add_output(f)
    paths = write_report(results, ctx.dir)
    for path in paths.values():
        ctx.add_output(path.name)
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    return {"verdict_counts": report["verdict_counts"],
            "verdicts": [{"dataset": v["dataset"], "claim": v["claim"], "verdict": v["verdict"]} for v in report["verdicts"]]}
