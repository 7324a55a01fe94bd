"""The ``titok-pytorch`` host recipe (the CPU demo): every stage of the main job is defined here.

:func:`build_stages` is the stage table. Each stage is a folder of the run directory::

    stage            config values it depends on                 reads                        writes
    tokenizer_<v>    seed, data.*, tokenizer.*, variants.<v>     -                            checkpoint.pt (+ .prev),
                                                                                              recon.png, recon.npy
    tokens/<v>       seed, data.*, tokenizer.*, variants.<v>     tokenizer_<v>/checkpoint.pt  tokens.npy (N, L) int32,
                                                                                              labels.npy, codebook.npy,
                                                                                              heldout_index.npy,
                                                                                              schedule.json
    cliff            seed, analysis.*, the variant names         tokens/<v>/*                 report.json, fig2a_*, fig2b_*
    ar_<v>           seed, data.num_classes, ar.*                tokens/<v>/*                 checkpoint.pt (+ .prev)
    samples_<v>      ar_<v>'s + tokenizer_<v>'s + sampling.*     ar_<v>, tokenizer_<v>        tokens.npy, labels.npy,
                                                                 checkpoints                  grid.png, samples.npz
    metrics          metrics.* (only with metrics.inception_weights)                          stage.json

for every tokenizer variant ``<v>`` (``ar_*`` / ``samples_*`` for those in ``ar.train_on``). The
chain tokenizer -> tokens -> ar -> samples of each variant is one ``group``: with ``parallel: true``
the chains run side by side, one process each. After the stages, ``summary.md`` and ``recon.png``
(original / each tokenizer) are written from the stage records.

The config schema (every key, default and range) is ``recipes/pipeline/config.py`` (DemoConfig); the
provenance and integrity checks of every stage output are in ``recipes/pipeline/rundir.py``.
"""
from __future__ import annotations

import enum
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from vcq_plugin.schedule import CodebookSchedule
from .ar import build_ar, tokens_tensor
from .config import SCHEMAS, ConfigError, LoadedConfig, check_split, dotted_items, schema_defaults, variant_schedule
from .data import batch_indices, class_names, holdout_split, load_dataset
from .diagnostics import diagnose
from .rundir import RunDir, Stage, StageContext, check_tokens, load_npy, run_recipe_table
from .summary import ar_table, describe_schedule, labelled_grid, png_writer, samples_table, save_png, \
    tokenizer_table, write_summary
from .tokenizer import build_titok, decode, encode, train_tokenizer, write_tokens
from .train import load_weights, loss_trend, train_loop

log = logging.getLogger("vcq.recipe")

SCHEMA = SCHEMAS["titok-pytorch"]
RECIPE = __name__  # worker processes rebuild the stage table from this module
RECON_IMAGES = 12


# ====================================================================== the stage table
def _section(cfg: DictConfig, key: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"key.sub": value}`` of one config section (or one key)."""
    node = OmegaConf.select(cfg, key)
    if isinstance(node, DictConfig):
        return {f"{key}.{k}": v for k, v in dotted_items(node).items() if f"{key}.{k}" not in drop}
    if isinstance(node, ListConfig):
        node = OmegaConf.to_container(node, enum_to_str=True)
    return {key: node.name if isinstance(node, enum.Enum) else node}


def build_stages(cfg: DictConfig) -> list[Stage]:
    """The demo's stages, in order (see the module docstring)."""
    from functools import partial

    stages: list[Stage] = []
    data = {**_section(cfg, "seed"), **_section(cfg, "data")}
    for v in cfg.variants:
        tok = {**data, **_section(cfg, "tokenizer"), **_section(cfg, f"variants.{v}")}
        stages.append(Stage(f"tokenizer_{v}", tok, partial(tokenizer_stage, variant=v), group=v))
        stages.append(Stage(f"tokens/{v}", tok, partial(tokens_stage, variant=v),
                            inputs={f"tokenizer_{v}": ("checkpoint.pt",)}, group=v))
    token_files = ("tokens.npy", "labels.npy", "codebook.npy", "heldout_index.npy", "schedule.json")
    stages.append(Stage("cliff", {**_section(cfg, "seed"), **_section(cfg, "analysis"), "variants": list(cfg.variants)},
                        cliff_stage, inputs={f"tokens/{v}": token_files for v in cfg.variants}))
    ar = {**_section(cfg, "seed"), **_section(cfg, "data.num_classes"), **_section(cfg, "ar", drop=("ar.train_on",))}
    for v in cfg.ar.train_on:
        tok = {**data, **_section(cfg, "tokenizer"), **_section(cfg, f"variants.{v}")}
        stages.append(Stage(f"ar_{v}", ar, partial(ar_stage, variant=v), inputs={f"tokens/{v}": token_files},
                            group=v))
        stages.append(Stage(f"samples_{v}", {**tok, **ar, **_section(cfg, "sampling")},
                            partial(samples_stage, variant=v),
                            inputs={f"tokenizer_{v}": ("checkpoint.pt",), f"tokens/{v}": ("schedule.json",),
                                    f"ar_{v}": ("checkpoint.pt",)}, group=v))
    if cfg.metrics.inception_weights:
        stages.append(Stage("metrics", {**data, **_section(cfg, "metrics")}, metrics_stage,
                            inputs={**{f"samples_{v}": ("samples.npz",) for v in cfg.ar.train_on},
                                    **{f"tokenizer_{v}": ("checkpoint.pt",) for v in cfg.variants}}))
    return stages


# ====================================================================== data (made once per process)
@dataclass(frozen=True)
class Dataset:
    images: torch.Tensor      # (N, 3, H, W) in [0, 1]
    labels: torch.Tensor      # (N,) int64
    train_idx: np.ndarray
    held_idx: np.ndarray
    class_names: list[str]


def dataset(cfg: DictConfig) -> Dataset:
    key = json.dumps({**_section(cfg, "data"), "seed": int(cfg.seed)}, sort_keys=True)
    return _dataset(key)


@functools.lru_cache(maxsize=2)
def _dataset(key: str) -> Dataset:
    k = json.loads(key)
    name, n_classes = k["data.name"], int(k["data.num_classes"])
    images, labels = load_dataset(name, num_images=k["data.num_images"], image_size=int(k["data.image_size"]),
                                  num_classes=n_classes, path=k["data.path"], seed=int(k["seed"]))
    if int(labels.max()) >= n_classes:
        raise ConfigError(f"data.num_classes={n_classes} but the dataset has labels up to {int(labels.max())}")
    check_split(int(images.shape[0]), float(k["data.holdout_fraction"]), n_classes)
    train_idx, held_idx = holdout_split(images.shape[0], float(k["data.holdout_fraction"]), int(k["seed"]))
    log.info("data: %s, %d images (%d train / %d held-out), %d classes", name, images.shape[0], len(train_idx),
             len(held_idx), n_classes)
    return Dataset(images, labels, train_idx, held_idx, class_names(name, n_classes, k["data.path"]))


# ====================================================================== stages
def _tokenizer(cfg: DictConfig, variant: str) -> tuple[torch.nn.Module, CodebookSchedule]:
    sched = variant_schedule(cfg, variant)
    torch.manual_seed(int(cfg.seed))
    return build_titok(cfg.tokenizer, cfg.variants[variant], sched, int(cfg.data.image_size)), sched


def _psnr(tok: torch.nn.Module, images: torch.Tensor) -> tuple[float, torch.Tensor]:
    from vcq_plugin.metrics import psnr

    recon = decode(tok, encode(tok, images))
    return float(psnr(recon, images, data_range=1.0)), recon


def tokenizer_stage(ctx: StageContext, variant: str) -> dict:
    cfg, data = ctx.cfg, dataset(ctx.cfg)
    tok, sched = _tokenizer(cfg, variant)
    n_params = sum(p.numel() for p in tok.parameters())
    log.info("[%s] titok-pytorch TiTokTokenizer with %s (%s params), schedule %s", ctx.name, type(tok.vq).__name__,
             f"{n_params:,}", describe_schedule(sched))
    held = data.images[torch.from_numpy(data.held_idx)]
    psnr_untrained, _ = _psnr(tok, held)
    res = train_tokenizer(tok, data.images[torch.from_numpy(data.train_idx)], cfg.tokenizer, name=ctx.name,
                          ckpt_path=ctx.checkpoints.path, seed=int(cfg.seed))
    ctx.add_output("checkpoint.pt")
    value, recon = _psnr(tok, held)
    k = min(RECON_IMAGES, held.shape[0])
    ctx.save_npy("recon.npy", torch.stack([held[:k], recon[:k]]).numpy().astype(np.float32))
    grid = labelled_grid(torch.cat([held[:k], recon[:k]]), k, ["original", f"{variant} ({describe_schedule(sched)})"],
                         title="held-out images: original / reconstruction")
    ctx.save_with("recon.png", png_writer(grid))
    log.info("[%s] %d steps, held-out PSNR %.2f dB (untrained %.2f dB)", ctx.name, res["step"], value, psnr_untrained)
    return {"variant": variant, "quantizer": str(cfg.variants[variant].quantizer), "steps": res["step"],
            "resumed_from": res["resumed_from"], "final_loss": res["final_loss"], **loss_trend(res["history"]),
            "psnr_heldout": value, "psnr_untrained": psnr_untrained, "params": n_params, "schedule": sched.to_dict()}


def tokens_stage(ctx: StageContext, variant: str) -> dict:
    cfg, data = ctx.cfg, dataset(ctx.cfg)
    tok, sched = _tokenizer(cfg, variant)
    load_weights(ctx.input(f"tokenizer_{variant}", "checkpoint.pt"), tok)
    tokens = write_tokens(ctx, tok, sched, data)
    distinct = [int(np.unique(tokens[:, i]).size) for i in range(tokens.shape[1])]
    used = int(np.unique(tokens).size)
    log.info("[%s] tokens %s -> %s; %d of %d codes used", ctx.name, tokens.shape, ctx.dir / "tokens.npy", used,
             sched.k_max)
    return {"shape": list(tokens.shape), "dtype": str(tokens.dtype), "codes_used": used, "k_max": sched.k_max,
            "sizes": sched.sizes.tolist(), "distinct_per_position": distinct}


def _schedule(ctx: StageContext, variant: str) -> CodebookSchedule:
    path = ctx.input(f"tokens/{variant}", "schedule.json")
    return CodebookSchedule.from_spec(json.loads(path.read_text(encoding="utf-8")))


def _tokens(ctx: StageContext, variant: str, sched: CodebookSchedule) -> np.ndarray:
    """tokens.npy of a variant, checked: sha256 against its record, then every token < K(i)."""
    stage = f"tokens/{variant}"
    path = ctx.input(stage, "tokens.npy")
    tokens = load_npy(path, stage)
    check_tokens(tokens, sched.sizes.tolist(), path, stage)
    return tokens


def cliff_stage(ctx: StageContext) -> dict:
    from vcq_plugin.analysis import cliff_report

    cfg = ctx.cfg
    sets, codebooks, labels = {}, {}, None
    for v in cfg.variants:
        sched = _schedule(ctx, v)
        sets[v] = (_tokens(ctx, v, sched), sched)
        codebooks[v] = load_npy(ctx.input(f"tokens/{v}", "codebook.npy"), f"tokens/{v}")
        labels = load_npy(ctx.input(f"tokens/{v}", "labels.npy"), f"tokens/{v}")
    report = cliff_report(sets, str(ctx.dir), labels=labels, codebooks=codebooks,
                          tolerance=float(cfg.analysis.tolerance), probe_k=int(cfg.analysis.probe_k),
                          seed=int(cfg.seed), progress=False)
    ctx.add_output("report.json")
    for f in report.get("files", {}).get("plots", []):
        ctx.add_output(f)
    for name, s in report["sets"].items():
        log.info("[cliff] %s: i* computed %s, measured %s (first prefix length whose prefix entropy is within "
                 "%g bit of log2 N)", name, s["computed_istar"], s["measured_istar"], report["tolerance_bits"])
    return {"report": "report.json"}


def ar_stage(ctx: StageContext, variant: str) -> dict:
    cfg = ctx.cfg
    src = f"tokens/{variant}"
    sched = _schedule(ctx, variant)
    tokens = tokens_tensor(_tokens(ctx, variant, sched))
    labels = torch.from_numpy(load_npy(ctx.input(src, "labels.npy"), src))
    held_idx = load_npy(ctx.input(src, "heldout_index.npy"), src)
    train_idx = np.setdiff1d(np.arange(tokens.shape[0]), held_idx)
    tr_t, tr_y = tokens[torch.from_numpy(train_idx)], labels[torch.from_numpy(train_idx)]
    he_t, he_y = tokens[torch.from_numpy(held_idx)], labels[torch.from_numpy(held_idx)]
    seed, num_classes = int(cfg.seed), int(cfg.data.num_classes)
    torch.manual_seed(seed)
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=num_classes, seq_len=sched.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("[%s] x-transformers Decoder, %s params, vocab %d (K_max %d + %d classes + null), tokens of %s", ctx.name,
             f"{n_params:,}", model.vocab_size, sched.k_max, num_classes, describe_schedule(sched))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.ar.lr), betas=(0.9, 0.95),
                            weight_decay=float(cfg.ar.weight_decay))
    bs = int(cfg.ar.batch_size)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(tr_t.shape[0], bs, seed + 1, step))
        return model.loss(tr_t[idx], tr_y[idx])

    res = train_loop(name=ctx.name, model=model, optimizer=opt, loss_fn=loss_fn, total_steps=int(cfg.ar.steps),
                     ckpt_path=ctx.checkpoints.path, ckpt_every=int(cfg.ar.ckpt_every), lr=float(cfg.ar.lr),
                     warmup_steps=int(cfg.ar.warmup_steps), grad_clip=cfg.ar.grad_clip, seed=seed + 1)
    ctx.add_output("checkpoint.pt")
    held = model.nll(he_t, he_y)
    train = model.nll(tr_t[: len(he_t) * 4], tr_y[: len(he_t) * 4])
    chance = float(np.mean(np.log2(sched.sizes.numpy().astype(np.float64))))
    log.info("[%s] %d steps; NLL held-out %.3f / train %.3f bits/token (uniform over K(i): %.3f)", ctx.name,
             res["step"], held["bits_per_token"], train["bits_per_token"], chance)
    return {"tokens": variant, "steps": res["step"], "resumed_from": res["resumed_from"], "params": n_params,
            "vocab_size": model.vocab_size, "heldout": held, "train": train, "chance_bits_per_token": chance,
            **loss_trend(res["history"])}


def samples_stage(ctx: StageContext, variant: str) -> dict:
    from vcq_plugin.metrics.samples import write_adm_npz
    from vcq_plugin.registry import create_sampler

    cfg, s = ctx.cfg, ctx.cfg.sampling
    sched = _schedule(ctx, variant)
    num_classes = int(cfg.data.num_classes)
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=num_classes, seq_len=sched.seq_len)
    load_weights(ctx.input(f"ar_{variant}", "checkpoint.pt"), model)
    model.eval()
    sampler = create_sampler(s.sampler, schedule=sched, guidance_scale=float(s.guidance_scale),
                             guidance_power=float(s.guidance_power), temperature=float(s.temperature),
                             top_k=int(s.top_k), top_p=float(s.top_p))
    per_class = int(s.per_class)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    t0 = time.time()
    toks = model.generate(y, sampler, generator=torch.Generator().manual_seed(int(s.seed)))
    valid = bool((toks < sched.sizes[None]).all() and (toks >= 0).all())
    if not valid:
        raise RuntimeError(f"[{ctx.name}] a sampled token is >= K(i): the sampler's mask failed")
    tok, _ = _tokenizer(cfg, variant)
    load_weights(ctx.input(f"tokenizer_{variant}", "checkpoint.pt"), tok)
    imgs = decode(tok, toks)
    data = dataset(cfg)
    grid = labelled_grid(imgs, per_class, data.class_names,
                         title=f"samples of the AR model on {variant} ({describe_schedule(sched)}), one row per class")
    ctx.save_with("grid.png", png_writer(grid))
    ctx.save_npy("tokens.npy", toks.numpy().astype(np.int32))
    ctx.save_npy("labels.npy", y.numpy())
    write_adm_npz(imgs, ctx.dir / "samples.npz", labels=y)
    ctx.add_output("samples.npz")
    train = torch.from_numpy(data.train_idx)
    agreement = _nearest_label_agreement(imgs, y, data.images[train], data.labels[train])
    log.info("[%s] %d samples (every token < K(i): %s, class agreement %.2f, chance %.2f) -> %s", ctx.name,
             toks.shape[0], valid, agreement, 1 / num_classes, ctx.dir / "grid.png")
    return {"tokens": variant, "num": int(toks.shape[0]), "grid": f"{ctx.name}/grid.png", "sampler": str(s.sampler),
            "sampler_repr": repr(sampler), "sampler_config": sampler.to_dict(), "tokens_valid": valid,
            "label_agreement": agreement, "seconds": time.time() - t0}


def _nearest_label_agreement(samples: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, ref_y: torch.Tensor) -> float:
    """Fraction of samples whose nearest training image (pixel L2) has the requested class: a cheap,
    weight-free check that the samples show their class."""
    d = torch.cdist(samples.flatten(1).float(), ref.flatten(1).float())
    return float((ref_y[d.argmin(1)] == y).float().mean())


def metrics_stage(ctx: StageContext) -> dict:
    """gFID of the samples against the held-out images and rFID of the held-out reconstructions, from a
    local Inception file (``metrics.inception_weights``; nothing is downloaded)."""
    from vcq_plugin.metrics import compute_generation_metrics, compute_reconstruction_metrics

    cfg, data = ctx.cfg, dataset(ctx.cfg)
    weights = str(cfg.metrics.inception_weights)
    held = data.images[torch.from_numpy(data.held_idx)]
    out: dict[str, Any] = {"computed": True, "inception_weights": weights, "gfid": {}, "rfid": {}}
    for v in cfg.ar.train_on:
        npz = ctx.input(f"samples_{v}", "samples.npz")
        r = compute_generation_metrics(str(npz), held, metrics=("fid",), weights_path=weights, cache_dir=False,
                                       expected_samples=len(held))
        out["gfid"][v] = r.get("fid")
    for v in cfg.variants:
        tok, _ = _tokenizer(cfg, v)
        load_weights(ctx.input(f"tokenizer_{v}", "checkpoint.pt"), tok)
        r = compute_reconstruction_metrics(decode(tok, encode(tok, held)), held, metrics=("rfid",),
                                           inception_weights=weights, cache_dir=False, expected_samples=len(held))
        out["rfid"][v] = r.get("rfid")
    log.info("[metrics] gFID %s, rFID %s (few images: not comparable with the paper)", out["gfid"], out["rfid"])
    return out


# ====================================================================== the recipe
def run_titok_pytorch(loaded: LoadedConfig) -> dict:
    """Run (or resume) every stage of the demo, then write summary.md; returns the stage results."""
    cfg = loaded.cfg
    t0 = time.time()
    _set_threads(cfg.threads)
    stages = build_stages(cfg)
    n_groups = len({s.group for s in stages if s.group is not None})
    run, results = run_recipe_table(loaded, stages, recipe=RECIPE, workers=_parallel_workers(cfg.parallel, n_groups))
    variants, trained = list(cfg.variants), list(cfg.ar.train_on)
    tokenizers = {v: results[f"tokenizer_{v}"] for v in variants}
    tokens = {v: results[f"tokens/{v}"] for v in variants}
    ar = {v: results[f"ar_{v}"] for v in trained}
    samples = {v: results[f"samples_{v}"] for v in trained}
    metrics = results.get("metrics")
    report = run.read_json("cliff", "report.json")
    warnings = diagnose(cfg, schema_defaults(SCHEMA), tokenizers, tokens, ar)
    _recon_figure(run, variants, tokenizers)
    records = [run.record(s.name) for s in stages]
    made_with: dict[str, Any] = {}
    for rec in records:
        made_with.update(rec["config"])
    wall = time.time() - t0
    summary = write_summary(run.path("summary.md"), data=_plain_section(cfg, "data"),
                            tokenizer=_plain_section(cfg, "tokenizer"), tokenizers=tokenizers, tokens=tokens,
                            report=report, ar=ar, samples=samples, warnings=warnings, stages=records,
                            config=made_with, metrics=metrics, wall_s=wall)
    c = int(cfg.data.num_classes)
    log.info("results (every column explained below its table):\n%s", "\n".join(
        tokenizer_table(tokenizers, tokens, report, c) + ([""] + ar_table(ar) if ar else [])
        + ([""] + samples_table(samples, c) if samples else [])))
    for w in warnings:
        log.warning("%s: %s", w.code, w.message)
    log.info("summary: %s (%.0f s)", summary, wall)
    return {"run_dir": str(run.root), "tokenizers": tokenizers, "tokens": tokens, "report": report, "ar": ar,
            "samples": samples, "metrics": metrics, "warnings": warnings, "wall_s": wall}


def _plain_section(cfg: DictConfig, key: str) -> dict:
    return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True, enum_to_str=True)


def _recon_figure(run: RunDir, variants: list[str], tokenizers: dict) -> None:
    """recon.png: held-out originals, then each tokenizer's reconstructions, one labelled row each."""
    rows, labels = [], []
    for v in variants:
        pair = np.load(run.verified(f"tokenizer_{v}", "recon.npy")[0])
        if not rows:
            rows.append(torch.from_numpy(pair[0]))
            labels.append("original")
        rows.append(torch.from_numpy(pair[1]))
        labels.append(f"{v} ({describe_schedule(tokenizers[v]['schedule'])})")
    k = rows[0].shape[0]
    save_png(run.path("recon.png"), labelled_grid(torch.cat(rows), k, labels,
                                                  title="held-out images: original / each tokenizer's reconstruction"))


def _set_threads(threads: Any) -> None:
    """``threads``: an int, null (torch's default) or ``auto`` (the cores not already busy, >= 1:
    small models on a shared CPU run far slower with oversubscribed threads)."""
    if threads is None:
        return
    if threads == "auto":
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - int(round(busy))))
    else:
        n = int(threads)
    torch.set_num_threads(n)
    log.info("torch threads: %d (threads=%s)", n, threads)


def _parallel_workers(parallel: Any, n_jobs: int) -> int:
    """Processes for the per-tokenizer stage chains: ``parallel`` true / false / ``auto`` (one per idle core)."""
    if n_jobs < 2 or parallel in (False, None, 0):
        return 1
    if parallel == "auto":
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        idle = (os.cpu_count() or 1) - busy
        return max(1, min(n_jobs, int(idle + 0.5)))
    return n_jobs
