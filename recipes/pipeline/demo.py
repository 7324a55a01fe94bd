"""The ``titok-pytorch`` host recipe (the CPU demo): every stage of the main job, resumable.

Stages, each in its own folder of the run directory, each skipped when its ``stage.json``
marker exists (so rerunning the same command resumes)::

    tokenizer_<variant>/   checkpoint.pt (resumable mid-training), recon.png, stage.json (PSNR)
    tokens/<variant>/      tokens.npy (N, L) int32, labels.npy (N,), codebook.npy, schedule.json
    cliff/                 report.json, fig2a_entropy_cliff.{png,svg}, fig2b_schedules.{png,svg}
    ar_<variant>/          checkpoint.pt (resumable), stage.json (held-out / train NLL)
    samples_<variant>/     tokens.npy, labels.npy, grid.png, samples.npz (ADM layout), stage.json
    summary.md
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .ar import build_ar, tokens_tensor
from .config import validate
from .data import batch_indices, holdout_split, load_dataset
from .rundir import RunDir, load_checkpoint, load_json, save_json, save_npy, save_text
from .summary import save_grid, write_summary
from .tokenizer import build_titok, codebook_of, decode, encode, schedule_for, train_tokenizer
from .train import train_loop

log = logging.getLogger("vcq.recipe")


def _variant_schedule(cfg: DictConfig, variant: Any):
    tok = cfg.tokenizer
    return schedule_for(variant.quantizer, k_max=int(tok.codebook_size), seq_len=int(tok.num_latent_tokens),
                        k_min=int(variant.get("k_min", 2)), power=float(variant.get("power", 2.5)))


def _check_same_config(run: RunDir, cfg: DictConfig) -> None:
    path = run.path("config.yaml")
    current = OmegaConf.to_yaml(cfg)
    if path.is_file():
        previous = path.read_text()
        if previous != current:
            log.warning("config differs from the one this run folder was started with (%s); finished stages "
                        "are kept as they are. Use a new run_dir to start over.", path)
    save_text(path, current)


def run_titok_pytorch(cfg: DictConfig) -> dict:
    """Run (or resume) every stage of the demo recipe; returns a dict of the stage results."""
    validate(cfg)
    t0 = time.time()
    _set_threads(cfg.get("threads"))
    run = RunDir(cfg.run_dir)
    _check_same_config(run, cfg)
    seed = int(cfg.seed)
    log.info("run folder: %s", run.root.resolve())

    # ---------------------------------------------------------------- data
    d = cfg.data
    images, labels = load_dataset(d.name, num_images=d.get("num_images"), image_size=int(d.image_size),
                                  num_classes=d.get("num_classes"), path=d.get("path"), seed=seed)
    num_classes = int(d.num_classes)
    if int(labels.max()) >= num_classes:
        raise ValueError(f"data.num_classes={num_classes} but the dataset has labels up to {int(labels.max())}")
    train_idx, held_idx = holdout_split(images.shape[0], float(d.holdout_fraction), seed)
    log.info("data: %s, %d images (%d train / %d held-out), %d classes", d.name, images.shape[0],
             len(train_idx), len(held_idx), num_classes)

    # ---------------------------------------------------------------- tokenizers + tokens
    schedules = {vname: _variant_schedule(cfg, variant) for vname, variant in cfg.variants.items()}
    todo = [v for v in cfg.variants if not (run.is_done(f"tokenizer_{v}") and run.is_done(f"tokens/{v}"))]
    workers = _parallel_workers(cfg.get("parallel", False), len(todo))
    if workers > 1:  # independent stages: one process per tokenizer, one thread each
        log.info("training %d tokenizers in %d processes", len(todo), workers)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            futures = [ex.submit(_tokenizer_worker, OmegaConf.to_yaml(cfg), v) for v in todo]
            for f in futures:
                f.result()
    tok_results = {vname: _tokenizer_stage(run, cfg, vname, variant, images, labels, train_idx, held_idx, seed)
                   for vname, variant in cfg.variants.items()}

    # ---------------------------------------------------------------- entropy cliff
    report = _cliff_stage(run, cfg, schedules)

    # ---------------------------------------------------------------- AR + samples
    ar_results, sample_results = {}, {}
    for vname in cfg.ar.train_on:
        ar_results[vname] = _ar_stage(run, cfg, vname, schedules[vname], train_idx, held_idx, num_classes, seed)
        sample_results[vname] = _sample_stage(run, cfg, vname, schedules[vname], num_classes, images, labels,
                                              train_idx)

    metrics = _metrics_stage(run, cfg, images, held_idx, sample_results)

    wall = time.time() - t0
    summary = write_summary(run.path("summary.md"), cfg=OmegaConf.to_container(cfg, resolve=True),
                            tokenizers=tok_results, report=report, ar=ar_results, samples=sample_results,
                            wall_s=wall, run_dir=run.root, metrics=metrics)
    log.info("summary: %s (%.0f s)", summary, wall)
    return {"run_dir": str(run.root), "tokenizers": tok_results, "report": report, "ar": ar_results,
            "samples": sample_results, "wall_s": wall}


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
    """Processes for the tokenizer stages: ``parallel`` true / false / ``auto`` (one per idle core)."""
    if n_jobs < 2 or parallel in (False, None, 0):
        return 1
    if parallel == "auto":
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        idle = (os.cpu_count() or 1) - busy
        return max(1, min(n_jobs, int(idle + 0.5)))
    return n_jobs


def _tokenizer_worker(cfg_yaml: str, vname: str) -> None:
    """Entry point of a tokenizer-stage process (spawned): same data, same seed, one thread."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    cfg = OmegaConf.create(cfg_yaml)
    d = cfg.data
    images, labels = load_dataset(d.name, num_images=d.get("num_images"), image_size=int(d.image_size),
                                  num_classes=d.get("num_classes"), path=d.get("path"), seed=int(cfg.seed))
    train_idx, held_idx = holdout_split(images.shape[0], float(d.holdout_fraction), int(cfg.seed))
    _tokenizer_stage(RunDir(cfg.run_dir), cfg, vname, cfg.variants[vname], images, labels, train_idx, held_idx,
                     int(cfg.seed))


# -------------------------------------------------------------------- stages
def _load_tokenizer(run: RunDir, cfg: DictConfig, vname: str, variant: Any) -> torch.nn.Module:
    tok = build_titok(cfg.tokenizer, variant, int(cfg.data.image_size))
    load_checkpoint(run.path(f"tokenizer_{vname}", "checkpoint.pt"), model=tok, restore_rng=False)
    return tok.eval()


def _tokenizer_stage(run: RunDir, cfg: DictConfig, vname: str, variant: Any, images: torch.Tensor,
                     labels: torch.Tensor, train_idx: np.ndarray, held_idx: np.ndarray, seed: int) -> dict:
    from vcq_plugin.metrics import psnr

    stage = f"tokenizer_{vname}"
    tok_dir = run.stage_dir(stage)
    tokens_dir = run.stage_dir(f"tokens/{vname}")
    if run.is_done(stage) and run.is_done(f"tokens/{vname}"):
        info = run.done_info(stage)
        log.info("[%s] done (%d steps, held-out PSNR %.2f dB): %s", stage, info["steps"], info["psnr_heldout"], tok_dir)
        return info
    torch.manual_seed(seed)
    tok = build_titok(cfg.tokenizer, variant, int(cfg.data.image_size))
    n_params = sum(p.numel() for p in tok.parameters())
    log.info("[%s] titok-pytorch TiTokTokenizer with %s (%s params), schedule %r", stage, type(tok.vq).__name__,
             f"{n_params:,}", tok.vq.schedule)
    train_images = images[torch.from_numpy(train_idx)]
    res = train_tokenizer(tok, train_images, cfg.tokenizer, name=stage, ckpt_path=tok_dir / "checkpoint.pt",
                          seed=seed)
    held = images[torch.from_numpy(held_idx)]
    held_tokens = encode(tok, held)
    recon = decode(tok, held_tokens)
    value = float(psnr(recon, held, data_range=1.0))
    k = min(16, held.shape[0])
    save_grid(torch.cat([held[:k], recon[:k]]), tok_dir / "recon.png", nrow=k, upscale=2)
    info = {"variant": vname, "quantizer": variant.quantizer, "steps": res["step"], "resumed_from": res["resumed_from"],
            "final_loss": res["final_loss"], "psnr_heldout": value, "params": n_params,
            "schedule": tok.vq.schedule.to_dict(), "checkpoint": str(tok_dir / "checkpoint.pt")}
    # tokens for the whole dataset (train + held-out; the AR split is by index)
    all_tokens = encode(tok, images)
    sched = tok.vq.schedule
    if (all_tokens >= sched.sizes.numpy()[None]).any():
        raise RuntimeError(f"[{stage}] the tokenizer produced a token >= K(i)")
    save_npy(tokens_dir / "tokens.npy", all_tokens)
    save_npy(tokens_dir / "labels.npy", labels.numpy().astype(np.int64))
    save_npy(tokens_dir / "codebook.npy", codebook_of(tok))
    save_npy(tokens_dir / "heldout_index.npy", held_idx.astype(np.int64))
    save_json(tokens_dir / "schedule.json", sched.to_dict())
    run.mark_done(f"tokens/{vname}", {"shape": list(all_tokens.shape), "dtype": str(all_tokens.dtype)})
    run.mark_done(stage, info)
    log.info("[%s] %d steps, held-out PSNR %.2f dB -> %s ; tokens %s -> %s", stage, res["step"], value,
             tok_dir, all_tokens.shape, tokens_dir / "tokens.npy")
    return info


def _cliff_stage(run: RunDir, cfg: DictConfig, schedules: dict) -> dict:
    from vcq_plugin.analysis import cliff_report, format_table

    out = run.stage_dir("cliff")
    if run.is_done("cliff"):
        log.info("[cliff] done: %s", out / "report.json")
        return load_json(out / "report.json")
    sets, codebooks = {}, {}
    for vname, sched in schedules.items():
        tdir = run.path("tokens", vname)
        sets[vname] = (np.load(tdir / "tokens.npy"), sched)
        codebooks[vname] = np.load(tdir / "codebook.npy")
    labels = np.load(run.path("tokens", next(iter(schedules)), "labels.npy"))
    report = cliff_report(sets, str(out), labels=labels, codebooks=codebooks,
                          tolerance=float(cfg.analysis.threshold), probe_k=int(cfg.analysis.probe_k),
                          seed=int(cfg.seed))
    run.mark_done("cliff", {"files": report.get("files")})
    log.info("[cliff] entropy-cliff report -> %s\n%s", out / "report.json", format_table(report))
    return report


def _ar_stage(run: RunDir, cfg: DictConfig, vname: str, sched, train_idx: np.ndarray, held_idx: np.ndarray,
              num_classes: int, seed: int) -> dict:
    stage = f"ar_{vname}"
    out = run.stage_dir(stage)
    if run.is_done(stage):
        info = run.done_info(stage)
        log.info("[%s] done (%d steps, held-out NLL %.3f bits/token): %s", stage, info["steps"],
                 info["heldout"]["bits_per_token"], out)
        return info
    tokens = tokens_tensor(np.load(run.path("tokens", vname, "tokens.npy")))
    labels = torch.from_numpy(np.load(run.path("tokens", vname, "labels.npy")))
    tr_t, tr_y = tokens[torch.from_numpy(train_idx)], labels[torch.from_numpy(train_idx)]
    he_t, he_y = tokens[torch.from_numpy(held_idx)], labels[torch.from_numpy(held_idx)]
    torch.manual_seed(seed)
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=num_classes, seq_len=sched.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("[%s] x-transformers Decoder, %s params, vocab %d (K_max %d + %d classes + null)", stage,
             f"{n_params:,}", model.vocab_size, sched.k_max, num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.ar.lr), betas=(0.9, 0.95),
                            weight_decay=float(cfg.ar.weight_decay))
    bs = int(cfg.ar.batch_size)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(tr_t.shape[0], bs, seed + 1, step))
        return model.loss(tr_t[idx], tr_y[idx])

    res = train_loop(name=stage, model=model, optimizer=opt, loss_fn=loss_fn, total_steps=int(cfg.ar.steps),
                     ckpt_path=out / "checkpoint.pt", ckpt_every=int(cfg.ar.ckpt_every), lr=float(cfg.ar.lr),
                     warmup_steps=int(cfg.ar.warmup_steps), grad_clip=cfg.ar.get("grad_clip", 1.0), seed=seed + 1)
    held = model.nll(he_t, he_y)
    train = model.nll(tr_t[: len(he_t) * 4], tr_y[: len(he_t) * 4])
    info = {"tokens": vname, "steps": res["step"], "resumed_from": res["resumed_from"], "params": n_params,
            "vocab_size": model.vocab_size, "heldout": held, "train": train,
            "checkpoint": str(out / "checkpoint.pt")}
    run.mark_done(stage, info)
    log.info("[%s] %d steps; NLL held-out %.3f / train %.3f bits/token -> %s", stage, res["step"],
             held["bits_per_token"], train["bits_per_token"], out)
    return info


def _sample_stage(run: RunDir, cfg: DictConfig, vname: str, sched, num_classes: int, images: torch.Tensor,
                  labels: torch.Tensor, train_idx: np.ndarray) -> dict:
    from vcq_plugin.metrics.samples import write_adm_npz
    from vcq_plugin.registry import create_sampler

    stage = f"samples_{vname}"
    out = run.stage_dir(stage)
    if run.is_done(stage):
        info = run.done_info(stage)
        log.info("[%s] done: %s", stage, out / "grid.png")
        return info
    s = cfg.sampling
    model = build_ar(cfg.ar, k_max=sched.k_max, num_classes=num_classes, seq_len=sched.seq_len)
    load_checkpoint(run.path(f"ar_{vname}", "checkpoint.pt"), model=model, restore_rng=False)
    model.eval()
    sampler = create_sampler(s.sampler, schedule=sched, guidance_scale=float(s.guidance_scale),
                             guidance_power=float(s.guidance_power), temperature=float(s.temperature),
                             top_k=int(s.top_k), top_p=float(s.top_p))
    per_class = int(s.per_class)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(int(s.seed))
    t0 = time.time()
    toks = model.generate(y, sampler, generator=gen)
    valid = bool((toks < sched.sizes[None]).all() and (toks >= 0).all())
    if not valid:
        raise RuntimeError(f"[{stage}] a sampled token is >= K(i): the sampler's mask failed")
    variant = cfg.variants[vname]
    tok = _load_tokenizer(run, cfg, vname, variant)
    imgs = decode(tok, toks)
    # grid: one row per class
    save_grid(imgs, out / "grid.png", nrow=per_class, upscale=2)
    save_npy(out / "tokens.npy", toks.numpy().astype(np.int32))
    save_npy(out / "labels.npy", y.numpy())
    write_adm_npz(imgs, out / "samples.npz", labels=y)
    agreement = _nearest_label_agreement(imgs, y, images[torch.from_numpy(train_idx)],
                                         labels[torch.from_numpy(train_idx)])
    info = {"tokens": vname, "num": int(toks.shape[0]), "grid": f"{stage}/grid.png", "sampler": s.sampler,
            "sampler_repr": repr(sampler), "sampler_config": sampler.to_dict(), "tokens_valid": valid,
            "label_agreement": agreement, "seconds": time.time() - t0}
    run.mark_done(stage, info)
    log.info("[%s] %d samples (tokens valid: %s, class agreement %.2f) -> %s", stage, toks.shape[0], valid,
             agreement, out / "grid.png")
    return info


def _nearest_label_agreement(samples: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, ref_y: torch.Tensor) -> float:
    """Fraction of samples whose nearest training image (pixel L2) has the requested class: a cheap,
    weight-free check that the samples show their class."""
    a = samples.flatten(1).float()
    b = ref.flatten(1).float()
    d = torch.cdist(a, b)
    return float((ref_y[d.argmin(1)] == y).float().mean())


def _metrics_stage(run: RunDir, cfg: DictConfig, images: torch.Tensor, held_idx: np.ndarray, samples: dict) -> dict:
    """gFID of the samples against the held-out images and rFID of the held-out reconstructions,
    only when ``metrics.inception_weights`` names a local Inception file (nothing is downloaded)."""
    weights = cfg.get("metrics", {}).get("inception_weights")
    if not weights:
        return {"computed": False, "reason": "metrics.inception_weights is not set (gFID/rFID need local "
                                             "Inception weights; this run downloads nothing)"}
    if run.is_done("metrics"):
        return run.done_info("metrics")
    from vcq_plugin.metrics import compute_generation_metrics, compute_reconstruction_metrics

    held = images[torch.from_numpy(held_idx)]
    out: dict[str, Any] = {"computed": True, "inception_weights": str(weights), "gfid": {}, "rfid": {}}
    for vname in samples:
        npz = run.path(f"samples_{vname}", "samples.npz")
        r = compute_generation_metrics(str(npz), held, metrics=("fid",), weights_path=weights, cache_dir=False,
                                       expected_samples=len(held))
        out["gfid"][vname] = r.get("fid")
    for vname, variant in cfg.variants.items():
        tok = _load_tokenizer(run, cfg, vname, variant)
        recon = decode(tok, encode(tok, held))
        r = compute_reconstruction_metrics(recon, held, metrics=("rfid",), inception_weights=weights,
                                           cache_dir=False, expected_samples=len(held))
        out["rfid"][vname] = r.get("rfid")
    run.mark_done("metrics", out)
    log.info("[metrics] gFID %s, rFID %s (few images: not comparable with the paper) -> %s", out["gfid"],
             out["rfid"], run.path("metrics", "stage.json"))
    return out
