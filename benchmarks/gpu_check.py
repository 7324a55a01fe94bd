"""GPU readiness check: one command that checks and measures vcq-plugin's CUDA paths.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json       # one CUDA GPU, <= 8 min
    python benchmarks/gpu_check.py --device cpu --smoke --out /tmp/gpu_check.json  # CI: tiny shapes, < 1 min

Writes ``gpu_check.json`` (strict JSON) and prints a table. Every check is independent: an
exception, a missing host codebase or a missing package is recorded with its reason and the next
check runs. The library checks import nothing beyond torch and numpy (plus this repository on
``PYTHONPATH``); each host check runs in its own interpreter with that host's root first on
``sys.path`` (1d-tokenizer and LlamaGen both ship a top-level ``utils`` package).

Checks (full size on CUDA; ``--smoke`` runs the same code on tiny shapes):

    environment            torch / CUDA / device, packages and host checkouts found
    quantizer_correctness  VariableCodebookQuantizer (K_max 16384, L 256, batch 64, dim 8 and 12 with
                           l2-norm) in fp32 and under bf16 autocast: indices vs the brute-force masked
                           argmin (identical, or each mismatch an fp32 near-tie re-checked in float64),
                           loss and gradients finite; CUDA only: the forward (eval and train) runs
                           under torch.cuda.set_sync_debug_mode("error") after one warm-up call
    quantizer_speed        K_max 16384, L 256, dim 8/12, batch 64/256, eval and train: VCQ cosine (d)
                           vs the hosts' uniform quantizer formula (a) and our constant path (c),
                           interleaved medians, peak memory per call.
                           Targets: (a)/(d) >= 4x, (c)/(d) >= 2.5x, peak (d) <= peak (a)
    sampler_overhead       a 256-token cached decode of a 12-layer / 768 Llama (benchmarks/sampler.py's
                           TinyLlama: LlamaGen GPT-B's shape; random weights, batch 32 (64 rows with
                           CFG), vocab 16384): AwareCFGSampler (paper's vcq_bb) vs LlamaGen's scalar
                           CFG + softmax + multinomial. Target: extra time per step <= 2 %
    compile                torch.compile of the quantizer (own interpreter, inductor; aot_eager with
                           --smoke): indices equal eager, compile time, speed vs eager, graph breaks
                           (torch._dynamo.explain)
    llamagen_generate      LlamaGen's generate(..., sampler=...) on a random GPT-B (bf16 on CUDA, batch
                           32, vocab 16384, KV cache) with the paper's vcq_bb sampler: every token
                           < K(i); time vs plain generate(cfg_scale=10). Target: <= 2 % per step
    titok_train            a few 1d-tokenizer TiTok-B stage-1 training steps (256 tokens, K_max 16384,
                           random images and proxy tokenizer) through accelerate (bf16 on CUDA) with
                           quantizer: vcq_cosine and with upstream's VectorQuantizer: losses finite,
                           usage statistics sane, step time side by side

Targets are judged only on a full CUDA run (``met`` is null otherwise). The exit status is 1 when
a check failed or raised (a missed target is reported, not an exit status), 0 otherwise.

Host checkouts: ``third_party/<host>``, or ``$VCQ_LLAMAGEN_ROOT`` / ``$VCQ_1D_TOKENIZER_ROOT``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)  # benchmarks/quantizer.py and sampler.py must not shadow other top-level modules
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

SCHEMA = 1
STATUSES = ("pass", "fail", "error", "skip")
LIBRARY_CHECKS = ("environment", "quantizer_correctness", "quantizer_speed", "sampler_overhead")
CHILD_CHECKS = ("compile", "llamagen_generate", "titok_train")  # each in its own interpreter
ALL_CHECKS = LIBRARY_CHECKS + CHILD_CHECKS
HOSTS = {  # name -> (third_party folder, env override, marker file)
    "LlamaGen": ("LlamaGen", "VCQ_LLAMAGEN_ROOT", "autoregressive/models/generate.py"),
    "1d-tokenizer": ("1d-tokenizer", "VCQ_1D_TOKENIZER_ROOT", "modeling/titok.py"),
}
CHILD_HOST = {"compile": None, "llamagen_generate": "LlamaGen", "titok_train": "1d-tokenizer"}
# seconds a child check may take at most on the full run (each also bounded by what is left of --budget)
CHILD_CAP_S = {"compile": 150, "llamagen_generate": 120, "titok_train": 180}


# ---------------------------------------------------------------------- sizes
@dataclasses.dataclass(frozen=True)
class Sizes:
    k_max: int
    seq_len: int
    dims: tuple  # quantizer code dimensions (dim 12 uses l2-norm, as TiTok)
    check_batch: int  # quantizer_correctness
    speed_batches: tuple
    speed_reps: int
    compile_batch: int
    compile_reps: int
    decode_batch: int  # sampler_overhead / llamagen_generate (CFG doubles the rows)
    decode_rounds: int
    llama: dict  # TinyLlama / LlamaGen GPT kwargs
    titok: dict  # titok_train


FULL = Sizes(
    k_max=16384, seq_len=256, dims=(8, 12), check_batch=64, speed_batches=(64, 256), speed_reps=10,
    compile_batch=64, compile_reps=10, decode_batch=32, decode_rounds=3,
    llama=dict(dim=768, layers=12, heads=12),
    titok=dict(enc="base", dec="base", image=256, batch=32, warmup=3, steps=10),
)
SMOKE = Sizes(
    k_max=256, seq_len=16, dims=(8, 12), check_batch=4, speed_batches=(4,), speed_reps=2,
    compile_batch=4, compile_reps=2, decode_batch=2, decode_rounds=1,
    llama=dict(dim=32, layers=2, heads=2),
    titok=dict(enc="small", dec="small", image=32, batch=2, warmup=1, steps=2),
)
TARGETS = {"host_over_vcq": 4.0, "constant_over_vcq": 2.5, "sampler_extra_share": 0.02}
PAPER_SAMPLER = "vcq_bb"  # Table 7, VCQ B-B: aware cosine CFG, w = 10, p = 1.5


@dataclasses.dataclass(frozen=True)
class Config:
    device: torch.device
    smoke: bool
    sizes: Sizes
    seed: int = 0

    @property
    def judged(self) -> bool:
        """Targets are judged on a full-size CUDA run only."""
        return self.device.type == "cuda" and not self.smoke

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


# ---------------------------------------------------------------------- records
class SkipCheck(Exception):
    """Raised by a check that cannot run here (missing host, package or device); carries the reason."""


def _finite(x: Any) -> Optional[float]:
    """A float for JSON, or None when missing / not finite (strict JSON has no NaN or Infinity)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Check:
    """What one check found: status, reason, measurements (``data``), targets, failed expectations."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = "pass"
        self.reason = ""
        self.seconds = 0.0
        self.data: Dict[str, Any] = {}
        self.targets: List[Dict[str, Any]] = []
        self.failures: List[str] = []
        self.skipped_parts: Dict[str, str] = {}

    def expect(self, ok: bool, what: str) -> bool:
        """Record a failed expectation (the check goes on, its status becomes ``fail``)."""
        if not ok:
            self.failures.append(what)
        return bool(ok)

    def target(self, name: str, measured: Optional[float], op: str, bound: float, judged: bool, unit: str = "") -> None:
        measured = _finite(measured)
        met = None
        if judged and measured is not None:
            met = measured >= bound if op == ">=" else measured <= bound
        self.targets.append(dict(name=name, measured=measured, op=op, target=bound, unit=unit, met=met))

    def skip_part(self, part: str, reason: str) -> None:
        self.skipped_parts[part] = reason

    @contextlib.contextmanager
    def part(self, key: str):
        """One case of a check: an exception in it is recorded as a failure and the next case runs."""
        try:
            yield
        except Exception as e:
            self.failures.append(f"{key}: raised {type(e).__name__}: {str(e)[:300]}")
            self.data.setdefault("errors", {})[key] = traceback.format_exc()[-3000:]

    def finish(self) -> None:
        if self.status == "pass" and self.failures:
            self.status = "fail"
            self.reason = "; ".join(self.failures)

    def to_json(self) -> Dict[str, Any]:
        return dict(name=self.name, status=self.status, reason=self.reason, seconds=round(self.seconds, 2),
                    data=self.data, targets=self.targets, failures=self.failures, skipped_parts=self.skipped_parts)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Check":
        rec = cls(d["name"])
        for key in ("status", "reason", "seconds", "data", "targets", "failures", "skipped_parts"):
            setattr(rec, key, d[key])
        return rec


def run_check(name: str, fn: Callable[[Check, Config], None], cfg: Config) -> Check:
    """Run one check function; an exception becomes status ``error`` with its traceback's tail."""
    rec = Check(name)
    t0 = time.perf_counter()
    try:
        fn(rec, cfg)
    except SkipCheck as e:
        rec.status, rec.reason = "skip", str(e)
    except Exception as e:  # recorded, never raised: the next check runs
        rec.status = "error"
        rec.reason = f"{type(e).__name__}: {e}"
        rec.data["traceback"] = traceback.format_exc()[-4000:]
    finally:
        if cfg.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
    rec.seconds = time.perf_counter() - t0
    rec.finish()
    return rec


# ---------------------------------------------------------------------- shared helpers
def host_root(host: str) -> Path:
    folder, env, _ = HOSTS[host]
    return Path(os.environ.get(env) or REPO / "third_party" / folder)


def host_missing(host: str) -> Optional[str]:
    """None when the host checkout is there, else how to get it."""
    folder, env, marker = HOSTS[host]
    root = host_root(host)
    if (root / marker).is_file():
        return None
    return (f"host {host} not found at {root} (no {marker}): run `git submodule update --init "
            f"third_party/{folder}` or set {env}, and send third_party/{folder} along")


def require_packages(names: List[str], hint: str = "") -> None:
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise SkipCheck(f"missing Python package(s): {', '.join(missing)}" + (f" ({hint})" if hint else ""))


def ensure_patches_package() -> None:
    """Make ``vcq_plugin.patches`` importable from a bare checkout on ``PYTHONPATH``.

    pyproject installs the repository's ``patches/`` as ``vcq_plugin.patches``; without an install
    (the GPU machine runs the working tree as is) that subpackage does not exist, so load it from
    its folder under the same name.
    """
    try:
        importlib.import_module("vcq_plugin.patches")
        return
    except ModuleNotFoundError as e:
        if e.name != "vcq_plugin.patches":
            raise
    spec = importlib.util.spec_from_file_location(
        "vcq_plugin.patches", REPO / "patches" / "__init__.py", submodule_search_locations=[str(REPO / "patches")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["vcq_plugin.patches"] = module
    spec.loader.exec_module(module)


class Timer:
    """Seconds per call of ``fn`` (wall clock, device synchronised before and after)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any], reps: int = 1) -> float:
        self.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / reps


def peak_mib(fn: Callable[[], Any], device: torch.device) -> Optional[float]:
    """Peak memory one call of ``fn`` adds: CUDA allocator peak, or (CPU, Linux) resident peak."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from benchmarks.quantizer import PeakMemory

    return PeakMemory()(fn)[1]


def _median(xs: List[float]) -> float:
    return statistics.median(xs)


def _schedule(cfg: Config):
    from vcq_plugin.schedule import CodebookSchedule

    return CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=cfg.sizes.k_max, seq_len=cfg.sizes.seq_len)


def _sampler(cfg: Config):
    from vcq_plugin.registry import create_sampler

    return create_sampler(PAPER_SAMPLER, schedule=_schedule(cfg))


# ---------------------------------------------------------------------- environment
def check_environment(rec: Check, cfg: Config) -> None:
    d = rec.data
    d["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    d["python"] = platform.python_version()
    d["torch"] = torch.__version__
    d["torch_cuda"] = torch.version.cuda
    d["cuda_available"] = torch.cuda.is_available()
    d["cpu_count"] = os.cpu_count()
    d["torch_threads"] = torch.get_num_threads()
    if cfg.cuda:
        props = torch.cuda.get_device_properties(cfg.device)
        d["gpu"] = torch.cuda.get_device_name(cfg.device)
        d["gpu_capability"] = f"{props.major}.{props.minor}"
        d["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        d["gpu_multiprocessors"] = props.multi_processor_count
        d["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    packages = ("numpy", "accelerate", "timm", "einops", "sklearn", "omegaconf", "huggingface_hub", "torchvision",
                "requests", "open_clip", "webdataset", "torch_fidelity")
    d["packages"] = {p: importlib.util.find_spec(p) is not None for p in packages}
    d["hosts"] = {h: (host_missing(h) is None) for h in HOSTS}
    rec.expect(importlib.util.find_spec("numpy") is not None, "numpy is required by vcq_plugin.schedule")


# ---------------------------------------------------------------------- quantizer correctness
def _mismatch_report(z: torch.Tensor, codebook: torch.Tensor, ours: torch.Tensor, ref: torch.Tensor) -> Dict[str, Any]:
    """Where ``ours`` and ``ref`` differ: are they fp32 near-ties? Distances re-computed in float64."""
    diff = (ours != ref).nonzero()
    if len(diff) == 0:
        return dict(mismatches=0, near_ties=0, max_rel_gap=0.0)
    b, i = diff.unbind(1)
    zq = z[b, i].double()
    d_ours = (zq - codebook[ours[b, i]].double()).square().sum(-1)
    d_ref = (zq - codebook[ref[b, i]].double()).square().sum(-1)
    gap = (d_ours - d_ref).abs() / d_ref.abs().clamp_min(1.0)
    tol = 64 * torch.finfo(torch.float32).eps  # a few fp32 roundings of sums of squares
    return dict(mismatches=len(diff), near_ties=int((gap <= tol).sum()), max_rel_gap=_finite(gap.max()))


def _sync_debug_forward(q: nn.Module, z: torch.Tensor, autocast: bool, train: bool) -> Optional[str]:
    """One forward (eval under no_grad, or train) under set_sync_debug_mode("error"): None, or the
    error and the vcq_plugin line that synchronised with the host."""
    q.train(train)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(train):
            q(z)
        return None
    except RuntimeError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "vcq_plugin" in f.filename]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""
        return f"{str(e).splitlines()[0]}{where}"
    finally:
        torch.cuda.set_sync_debug_mode(0)


def check_quantizer_correctness(rec: Check, cfg: Config) -> None:
    if not cfg.cuda:
        rec.skip_part("sync_debug_mode", "torch.cuda.set_sync_debug_mode needs a CUDA device")
    for dim in cfg.sizes.dims:
        for precision in ("fp32", "bf16_autocast"):
            key = f"dim{dim}_{precision}"
            with rec.part(key):
                _correctness_case(rec, cfg, key, dim, precision)


def _correctness_case(rec: Check, cfg: Config, key: str, dim: int, precision: str) -> None:
    from vcq_plugin.prefix_search import brute_force_prefix_argmin
    from vcq_plugin.quantizer import VariableCodebookQuantizer

    s, dev = cfg.sizes, cfg.device
    sched = _schedule(cfg)
    sizes = sched.sizes.to(dev)
    l2 = dim == 12  # TiTok: token_size 12 with use_l2_norm
    torch.manual_seed(cfg.seed)
    q = VariableCodebookQuantizer(sched, dim, use_l2_norm=l2).to(dev).train()
    with torch.no_grad():
        q.embedding.weight.normal_()  # a trained-looking codebook
    encoder = nn.Linear(16, dim).to(dev)
    x = torch.randn(s.check_batch, s.seq_len, 16, device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
        z = encoder(x)
        z_q, info = q(z)
        loss = info["loss"] + z_q.square().mean()
    loss.backward()
    zf, w = z.detach().float(), q.embedding.weight.detach().float()
    if l2:
        zf, w = F.normalize(zf, dim=-1), F.normalize(w, dim=-1)
    ours = info["indices"]
    ref = brute_force_prefix_argmin(zf, w, sched.sizes)
    report = _mismatch_report(zf, w, ours, ref)
    grads = {"encoder": encoder.weight.grad, "codebook": q.embedding.weight.grad}
    report.update(
        z_dtype=str(z.dtype).replace("torch.", ""),
        identical=report["mismatches"] == 0,
        loss=_finite(loss.detach()),
        grads_finite=all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values()),
        grads_nonzero=all(g is not None and bool(g.abs().sum() > 0) for g in grads.values()),
    )
    rec.expect(bool((ours < sizes).all()) and bool((ours >= 0).all()), f"{key}: an index outside [0, K(i))")
    rec.expect(report["mismatches"] == report["near_ties"],
               f"{key}: {report['mismatches'] - report['near_ties']} indices differ from the brute-force "
               "argmin by more than an fp32 near-tie")
    rec.expect(report["loss"] is not None, f"{key}: loss not finite")
    rec.expect(report["grads_finite"], f"{key}: gradients not finite")
    rec.expect(report["grads_nonzero"], f"{key}: a gradient is all zeros")
    rec.data[key] = report
    if cfg.cuda:  # after the forward above: the search's cached masks exist, as in a training loop
        for mode in ("eval", "train"):
            synced = _sync_debug_forward(q, z.detach(), precision == "bf16_autocast", mode == "train")
            report[f"host_sync_in_{mode}_forward"] = synced
            rec.expect(synced is None, f"{key}: host synchronisation in the {mode} forward: {synced}")


# ---------------------------------------------------------------------- quantizer speed / memory
def check_quantizer_speed(rec: Check, cfg: Config) -> None:
    from benchmarks.quantizer import build

    s, dev = cfg.sizes, cfg.device
    timer = Timer(dev)
    variants = {"a": "host uniform formula", "c": "ours constant", "d:cosine": "VCQ cosine"}
    rec.data["variants"] = variants
    rec.data["timing"] = f"medians of {s.speed_reps} interleaved rounds, wall clock with device synchronisation"
    rec.data["rows"] = []
    for dim in s.dims:
        models = {v: build(v, dim, s.k_max, s.seq_len, seed=cfg.seed).to(dev) for v in variants}
        for batch in s.speed_batches:
            torch.manual_seed(cfg.seed + 1)
            z = torch.randn(batch, s.seq_len, dim, device=dev)
            for mode in ("eval", "train"):
                with rec.part(f"dim{dim}_B{batch}_{mode}"):
                    _speed_case(rec, cfg, models, z, mode, timer)
        del models


def _speed_case(rec: Check, cfg: Config, models: Dict[str, nn.Module], z: torch.Tensor, mode: str,
                timer: Timer) -> None:
    from benchmarks.quantizer import step

    peak = {}
    for v, m in models.items():
        step(m, z, mode)  # warm-up (cached masks, allocator, kernels)
        peak[v] = peak_mib(lambda: step(m, z, mode), cfg.device)
    times: Dict[str, List[float]] = {v: [] for v in models}
    for _ in range(cfg.sizes.speed_reps):  # interleaved: every round runs all variants
        for v, m in models.items():
            times[v].append(timer(lambda: step(m, z, mode)))
    med = {v: _median(t) * 1e3 for v, t in times.items()}
    batch, dim = z.shape[0], z.shape[2]
    row = dict(dim=dim, batch=batch, mode=mode, ms={v: _finite(x) for v, x in med.items()},
               peak_mib={v: _finite(p) for v, p in peak.items()},
               host_over_vcq=_finite(med["a"] / med["d:cosine"]),
               constant_over_vcq=_finite(med["c"] / med["d:cosine"]))
    rec.data["rows"].append(row)
    tag = f"dim {dim}, B {batch}, {mode}"
    rec.target(f"speed (a)/(d) host formula / VCQ, {tag}", row["host_over_vcq"], ">=",
               TARGETS["host_over_vcq"], cfg.judged, "x")
    rec.target(f"speed (c)/(d) our constant / VCQ, {tag}", row["constant_over_vcq"], ">=",
               TARGETS["constant_over_vcq"], cfg.judged, "x")
    if peak["a"] is not None and peak["d:cosine"] is not None:
        rec.target(f"peak memory (d) - (a), {tag}", peak["d:cosine"] - peak["a"], "<=", 0.0, cfg.judged, "MiB")


# ---------------------------------------------------------------------- sampler overhead
def _decode(model: nn.Module, batch: int, seq_len: int, vocab: int, classes: torch.Tensor,
            pick: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Cached decode of ``seq_len`` tokens, cond + uncond rows in one forward (LlamaGen's layout)."""
    dev = classes.device
    with torch.device(dev):
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # TinyLlama's KV caches take the default dtype
        try:
            model.setup_cache(2 * batch)
        finally:
            torch.set_default_dtype(default)
    null = torch.full_like(classes, vocab + 999)  # the unconditional class token
    logits = model(torch.cat([classes, null])[:, None], 0)
    out = torch.empty(batch, seq_len, dtype=torch.long, device=dev)
    for i in range(seq_len):
        nxt = pick(i, logits[:batch], logits[batch:]).view(batch)
        out[:, i] = nxt
        if i + 1 < seq_len:
            logits = model(torch.cat([nxt, nxt])[:, None], i + 1)
    return out


def check_sampler_overhead(rec: Check, cfg: Config) -> None:
    from benchmarks.sampler import TinyLlama, plain_cfg_sample

    s, dev = cfg.sizes, cfg.device
    timer = Timer(dev)
    sampler = _sampler(cfg)
    dtype = torch.bfloat16 if cfg.cuda else torch.float32
    torch.manual_seed(cfg.seed)
    model = TinyLlama(vocab=s.k_max, dim=s.llama["dim"], layers=s.llama["layers"], heads=s.llama["heads"],
                      max_len=s.seq_len + 1).to(dev, dtype).eval()
    classes = torch.arange(s.decode_batch, device=dev) % 1000 + s.k_max
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    scale, temperature = sampler.guidance_scale, sampler.temperature

    def ours(i, cond, uncond):  # as the LlamaGen hook: fp32 logits into the sampler
        return sampler.sample_logits(sampler.process(i, cond.float(), uncond.float()), gen)

    def plain(i, cond, uncond):  # LlamaGen's decode_one_token + sample at the base scale, in the model's dtype
        return plain_cfg_sample(cond, uncond, scale, temperature, gen)

    sizes = sampler.schedule.sizes.to(dev)
    tokens = _decode(model, s.decode_batch, s.seq_len, s.k_max, classes, ours, dtype)
    rec.expect(bool((tokens < sizes).all()), "sampler_overhead: a sampled token >= K(i)")
    _decode(model, s.decode_batch, s.seq_len, s.k_max, classes, plain, dtype)  # warm-up
    t_ours, t_plain = [], []
    for _ in range(s.decode_rounds):
        t_ours.append(timer(lambda: _decode(model, s.decode_batch, s.seq_len, s.k_max, classes, ours, dtype)))
        t_plain.append(timer(lambda: _decode(model, s.decode_batch, s.seq_len, s.k_max, classes, plain, dtype)))
    per_step_ours, per_step_plain = _median(t_ours) / s.seq_len, _median(t_plain) / s.seq_len
    extra = per_step_ours / per_step_plain - 1
    # the sampler's own ops at the last position (all codes allowed, full guidance), for reference
    cond, uncond = torch.randn(2, s.decode_batch, s.k_max, device=dev, dtype=dtype).unbind(0)
    reps = 50 if cfg.judged else 3
    proc = timer(lambda: sampler.process(s.seq_len - 1, cond.float(), uncond.float()), reps)
    op_ours = timer(lambda: ours(s.seq_len - 1, cond, uncond), reps)
    op_plain = timer(lambda: plain(s.seq_len - 1, cond, uncond), reps)
    rec.data.update(
        model=f"TinyLlama {s.llama['layers']} layers / width {s.llama['dim']} / {s.llama['heads']} heads, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, {str(dtype).replace('torch.', '')}",
        batch=s.decode_batch, rows=2 * s.decode_batch, vocab=s.k_max, sampler=repr(sampler),
        step_ms_sampler=_finite(per_step_ours * 1e3), step_ms_plain=_finite(per_step_plain * 1e3),
        extra_share_per_step=_finite(extra), process_ms=_finite(proc * 1e3),
        process_and_sample_ms=_finite(op_ours * 1e3), plain_op_ms=_finite(op_plain * 1e3),
        timing=f"median of {s.decode_rounds} interleaved {s.seq_len}-token decodes per variant",
    )
    rec.target("sampler extra time per decode step (TinyLlama GPT-B shape)", extra, "<=",
               TARGETS["sampler_extra_share"], cfg.judged, "share")


# ---------------------------------------------------------------------- torch.compile (child)
def check_compile(rec: Check, cfg: Config) -> None:
    from vcq_plugin.quantizer import VariableCodebookQuantizer

    s, dev = cfg.sizes, cfg.device
    timer = Timer(dev)
    torch.manual_seed(cfg.seed)
    q = VariableCodebookQuantizer(_schedule(cfg), 8).to(dev).eval()
    with torch.no_grad():
        q.embedding.weight.normal_()
    z = torch.randn(s.compile_batch, s.seq_len, 8, device=dev)
    z2 = torch.randn(s.compile_batch, s.seq_len, 8, device=dev)
    if cfg.smoke:
        rec.skip_part("graph_breaks", "torch._dynamo.explain runs on the full run only (keeps the smoke short)")
    else:
        explain = torch._dynamo.explain(q)(z)
        breaks = {}
        for b in explain.break_reasons:
            frame = b.user_stack[-1] if b.user_stack else None
            where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
            breaks.setdefault(f"{where} {b.reason.splitlines()[0][:120]}", 0)
            breaks[f"{where} {b.reason.splitlines()[0][:120]}"] += 1
        rec.data.update(graph_count=explain.graph_count, graph_break_count=explain.graph_break_count,
                        graph_breaks=breaks)
        torch._dynamo.reset()
    # smoke: dynamo + AOTAutograd without inductor's C++ build (a cold CPU build alone takes 20-80 s on a
    # shared 2-core machine); tests/test_compile.py covers inductor on CPU
    backend = "aot_eager" if cfg.smoke else "inductor"
    compiled = torch.compile(q, dynamic=False, backend=backend)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = compiled(z)[1]["indices"]
        timer.sync()
        compile_s = time.perf_counter() - t0
        same = torch.equal(out, q(z)[1]["indices"]) and torch.equal(compiled(z2)[1]["indices"], q(z2)[1]["indices"])
        t_eager = [timer(lambda: q(z)) for _ in range(s.compile_reps)]
        t_comp = [timer(lambda: compiled(z)) for _ in range(s.compile_reps)]
    rec.expect(same, "compiled quantizer's indices differ from eager")
    rec.data.update(indices_equal_eager=same, compile_and_first_call_s=_finite(compile_s),
                    eager_ms=_finite(_median(t_eager) * 1e3), compiled_ms=_finite(_median(t_comp) * 1e3),
                    eager_over_compiled=_finite(_median(t_eager) / _median(t_comp)),
                    shape=[s.compile_batch, s.seq_len, 8], backend=backend,
                    mode="eval forward, no_grad, dynamic=False")


# ---------------------------------------------------------------------- LlamaGen generate (child)
def check_llamagen_generate(rec: Check, cfg: Config) -> None:
    reason = host_missing("LlamaGen")
    if reason:
        raise SkipCheck(reason)
    ensure_patches_package()
    import vcq_plugin

    vcq_plugin.register(hosts=["llamagen"])
    from autoregressive.models import generate as gen
    from autoregressive.models.gpt import ModelArgs, Transformer

    s, dev = cfg.sizes, cfg.device
    timer = Timer(dev)
    dtype = torch.bfloat16 if cfg.cuda else torch.float32  # LlamaGen's sample_c2i.py: --precision bf16
    torch.manual_seed(cfg.seed)
    model = Transformer(ModelArgs(dim=s.llama["dim"], n_layer=s.llama["layers"], n_head=s.llama["heads"],
                                  vocab_size=s.k_max, block_size=s.seq_len, num_classes=1000, cls_token_num=1,
                                  model_type="c2i"))
    nn.init.normal_(model.output.weight, std=0.02)  # upstream zero-inits the head: make the logits matter
    model.to(dev, dtype).eval()
    sampler = _sampler(cfg)
    sizes = sampler.schedule.sizes.to(dev)
    classes = torch.arange(s.decode_batch, device=dev) % 1000
    gen_ = torch.Generator(device=dev).manual_seed(cfg.seed)

    def with_sampler():
        return gen.generate(model, classes, s.seq_len, sampler=sampler, generator=gen_)

    def plain():  # upstream: scalar CFG at the sampler's base scale, softmax + multinomial
        return gen.generate(model, classes, s.seq_len, cfg_scale=sampler.guidance_scale)

    tokens = with_sampler()
    rec.expect(tuple(tokens.shape) == (s.decode_batch, s.seq_len), f"generate returned shape {tuple(tokens.shape)}")
    rec.expect(bool((tokens < sizes).all()) and bool((tokens >= 0).all()), "generate(sampler=...) gave a token >= K(i)")
    upstream = plain()
    rec.data["plain_tokens_outside_schedule"] = int((upstream >= sizes).sum())  # upstream ignores K(i)
    t_ours, t_plain = [], []
    for _ in range(s.decode_rounds):
        t_ours.append(timer(with_sampler))
        t_plain.append(timer(plain))
    ratio = _median(t_ours) / _median(t_plain)
    rec.data.update(
        model=f"LlamaGen Transformer {s.llama['layers']} layers / {s.llama['dim']} / {s.llama['heads']} heads "
              f"(GPT-B when full), {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
              f"{str(dtype).replace('torch.', '')}",
        batch=s.decode_batch, vocab=s.k_max, sampler=repr(sampler), generate_s_sampler=_finite(_median(t_ours)),
        generate_s_plain=_finite(_median(t_plain)), sampler_over_plain=_finite(ratio),
        timing=f"median of {s.decode_rounds} interleaved generate() calls per variant",
    )
    rec.target("LlamaGen generate(sampler) / plain generate - 1 (per-step overhead)", ratio - 1, "<=",
               TARGETS["sampler_extra_share"], cfg.judged, "share")


# ---------------------------------------------------------------------- 1d-tokenizer training (child)
TITOK_PACKAGES = ["omegaconf", "huggingface_hub", "einops", "accelerate", "torchvision", "requests", "tqdm", "timm"]
TITOK_CONFIG = "configs/training/TiTok/stage1/titok_b64.yaml"


@contextlib.contextmanager
def _no_weight_loading():
    """Build a module whose constructor loads weights (1d-tokenizer's PretrainedTokenizer) with its
    random initialisation instead: nothing is read or downloaded."""
    load, load_state_dict = torch.load, nn.Module.load_state_dict
    torch.load = lambda *a, **k: {}
    nn.Module.load_state_dict = lambda self, *a, **k: None
    try:
        yield
    finally:
        torch.load, nn.Module.load_state_dict = load, load_state_dict


def titok_config(root: Path, quantizer: Optional[str], sizes: Sizes, k_max: int, seq_len: int):
    """The host's TiTok-B stage-1 config with the VCQ keys (``quantizer=None``: upstream's VectorQuantizer)."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(root / TITOK_CONFIG)
    vq = config.model.vq_model
    vq.codebook_size, vq.num_latent_tokens = k_max, seq_len
    vq.vit_enc_model_size, vq.vit_dec_model_size = sizes.titok["enc"], sizes.titok["dec"]
    config.dataset.preprocessing.crop_size = sizes.titok["image"]
    if quantizer is not None:
        vq.quantizer = quantizer
        vq.vcq = {"k_min": 2}
    return config


def check_titok_train(rec: Check, cfg: Config) -> None:
    reason = host_missing("1d-tokenizer")
    if reason:
        raise SkipCheck(reason)
    require_packages(TITOK_PACKAGES, "1d-tokenizer's modeling package needs them; install them or bring wheels")
    ensure_patches_package()
    import vcq_plugin

    vcq_plugin.register(hosts=["1d-tokenizer"])
    from accelerate import Accelerator
    from modeling.modules.losses import ReconstructionLoss_Stage1
    from modeling.titok import PretrainedTokenizer, TiTok

    s = cfg.sizes
    root = host_root("1d-tokenizer")
    t = s.titok
    accelerator = Accelerator(mixed_precision="bf16" if cfg.cuda else "no", cpu=not cfg.cuda)
    with _no_weight_loading():
        torch.manual_seed(cfg.seed)
        proxy = PretrainedTokenizer("random-init").to(accelerator.device)  # MaskGIT-VQGAN proxy codes
    gen = torch.Generator(device=accelerator.device).manual_seed(cfg.seed)
    images = [torch.rand(t["batch"], 3, t["image"], t["image"], generator=gen, device=accelerator.device)
              for _ in range(t["warmup"] + t["steps"])]
    for arm, quantizer in {"vcq_cosine": "vcq_cosine", "upstream": None}.items():
        with rec.part(arm):
            config = titok_config(root, quantizer, s, s.k_max, s.seq_len)
            rec.data[arm] = _titok_arm(rec, arm, config, accelerator, proxy, images, t["warmup"],
                                       (TiTok, ReconstructionLoss_Stage1), cfg.seed)
        accelerator.free_memory()
    vcq_ms = rec.data.get("vcq_cosine", {}).get("step_ms")
    up_ms = rec.data.get("upstream", {}).get("step_ms")
    rec.data.update(
        step_vcq_over_upstream=_finite(vcq_ms / up_ms) if vcq_ms and up_ms else None,
        setup=f"TiTok enc {t['enc']} / dec {t['dec']}, {t['image']}px, {s.seq_len} tokens, K_max {s.k_max}, "
              f"batch {t['batch']}, mixed precision {accelerator.mixed_precision}; median of {t['steps']} steps "
              f"after {t['warmup']} warm-up (proxy-code encoding included, as the host's loop does)",
    )


def _titok_arm(rec: Check, arm: str, config: Any, accelerator: Any, proxy: nn.Module, images: List[torch.Tensor],
               warmup: int, host_classes: tuple, seed: int) -> Dict[str, Any]:
    """Steps of 1d-tokenizer's TiTok stage-1 training loop (train_one_epoch's body) for one quantizer."""
    titok_cls, loss_cls = host_classes
    timer = Timer(accelerator.device)
    torch.manual_seed(seed)  # the same initial weights for every arm
    model = titok_cls(config)
    quantize = model.quantize
    vcq = config.model.vq_model.get("quantizer") is not None
    rec.expect((type(quantize).__name__ == "TiTokVCQ") == vcq, f"{arm}: TiTok built quantizer {type(quantize).__name__}")
    loss_module = loss_cls(config)
    opt = config.optimizer.params
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, betas=(opt.beta1, opt.beta2),
                                  weight_decay=opt.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def train_step(x):
        codes = proxy.encode(x)
        recon, extra = model(x)
        loss, _ = loss_module(codes, recon, extra)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    times, losses = [], []
    for k, x in enumerate(images):
        timer.sync()
        t0 = time.perf_counter()
        loss = train_step(x)
        timer.sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(_finite(loss))
    data: Dict[str, Any] = dict(losses=losses, step_ms=_finite(_median(times) * 1e3), quantizer=type(quantize).__name__)
    rec.expect(all(v is not None for v in losses), f"{arm}: a loss is not finite: {losses}")
    if vcq:
        used = quantize.codes_used().cpu()
        k_of = quantize.schedule.sizes.cpu()
        share = quantize.position_usage().cpu()
        n_tokens = len(images) * images[0].shape[0]
        data.update(codes_used_first=used[:4].tolist(), codes_used_last=used[-4:].tolist(),
                    k_first=k_of[:4].tolist(), k_last=k_of[-4:].tolist(), mean_position_usage=_finite(share.mean()))
        rec.expect(bool((used >= 1).all()), f"{arm}: a position used no code after training steps")
        rec.expect(bool((used <= torch.clamp(k_of, max=n_tokens)).all()),
                   f"{arm}: more codes used at a position than K(i) or than tokens seen")
        rec.expect(bool(((share > 0) & (share <= 1)).all()), f"{arm}: position_usage outside (0, 1]")
    return data


CHECKS: Dict[str, Callable[[Check, Config], None]] = {
    "environment": check_environment,
    "quantizer_correctness": check_quantizer_correctness,
    "quantizer_speed": check_quantizer_speed,
    "sampler_overhead": check_sampler_overhead,
    "compile": check_compile,
    "llamagen_generate": check_llamagen_generate,
    "titok_train": check_titok_train,
}


# ---------------------------------------------------------------------- child processes
class Child:
    """One child check in its own interpreter (host root first on sys.path, cwd there)."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path) -> None:
        self.name = name
        self.out = workdir / f"{name}.json"
        self.log = workdir / f"{name}.log"
        self.started = time.perf_counter()
        host = CHILD_HOST[name]
        self.skip = host_missing(host) if host else None
        self.proc: Optional[subprocess.Popen] = None
        if self.skip:
            return
        root = host_root(host) if host else REPO
        env = dict(os.environ)
        paths = [str(root), str(REPO)] if host else [str(REPO)]
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("PYTHONWARNINGS", "ignore")
        env.setdefault("HF_HUB_OFFLINE", "1")
        if args.smoke:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", str(self.out),
               "--device", args.device, "--seed", str(args.seed)] + (["--smoke"] if args.smoke else [])
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)

    def result(self, timeout: float) -> Check:
        if self.skip:
            rec = Check(self.name)
            rec.status, rec.reason = "skip", self.skip
            return rec
        try:
            self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by handle
            self.proc.wait()
            return self._error(f"did not finish within {timeout:.0f} s (its share of --budget); killed")
        if self.out.is_file():
            return Check.from_json(json.loads(self.out.read_text()))
        return self._error(f"child interpreter exited with status {self.proc.returncode} and wrote no result")

    def _error(self, reason: str) -> "Check":
        """An error record for this child: the reason, the tail of its log, the seconds it ran."""
        rec = Check(self.name)
        rec.status, rec.reason = "error", reason
        rec.data["log_tail"] = self.log.read_text(errors="replace")[-3000:]
        rec.seconds = time.perf_counter() - self.started
        return rec


def child_main(args: argparse.Namespace) -> int:
    """``--child NAME``: run one check here and write its record to ``--child-out``."""
    from vcq_plugin._io import atomic_write_text

    if args.smoke:
        torch.set_num_threads(1)
    cfg = Config(device=torch.device(args.device), smoke=args.smoke, sizes=SMOKE if args.smoke else FULL, seed=args.seed)
    rec = run_check(args.child, CHECKS[args.child], cfg)
    atomic_write_text(args.child_out, json.dumps(rec.to_json(), indent=1, allow_nan=False))
    return 0


# ---------------------------------------------------------------------- report
def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def print_report(report: Dict[str, Any]) -> None:
    dev = report["device"]
    print(f"\n# vcq-plugin GPU check ({report['mode']}) on {dev.get('name') or dev['type']}, "
          f"torch {report['torch']}, {report['date_utc']} UTC, {report['elapsed_s']:.0f} s")
    print("\n| check | status | s | reason / notes |\n|---|---|---:|---|")
    for c in report["checks"]:
        notes = c["reason"] or "; ".join(f"{k} skipped: {v}" for k, v in c["skipped_parts"].items())
        print(f"| {c['name']} | {c['status'].upper()} | {c['seconds']:.1f} | {notes} |")
    targets = [(c["name"], t) for c in report["checks"] for t in c["targets"]]
    if targets:
        judged = "judged" if report["targets_judged"] else "NOT judged (smoke / non-CUDA run: shapes and device differ)"
        print(f"\nTargets ({judged}):\n\n| check | measure | measured | target | met |\n|---|---|---:|---|---|")
        for name, t in targets:
            met = {True: "PASS", False: "FAIL", None: "-"}[t["met"]]
            print(f"| {name} | {t['name']} | {_fmt(t['measured'])} {t['unit']} | {t['op']} {_fmt(t['target'])} | {met} |")
    print(f"\nchecks passed: {report['summary']['pass']}, failed: {report['summary']['fail']}, errors: "
          f"{report['summary']['error']}, skipped: {report['summary']['skip']}; targets met: "
          f"{report['summary']['targets_met']}/{report['summary']['targets_judged']} judged")


def build_report(cfg: Config, records: List[Check], elapsed: float, budget: float) -> Dict[str, Any]:
    env = next((r.data for r in records if r.name == "environment"), {})
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    judged = [t for r in records for t in r.targets if t["met"] is not None]
    return dict(
        schema=SCHEMA, mode="smoke" if cfg.smoke else "full",
        date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        torch=torch.__version__,
        device=dict(type=cfg.device.type, name=env.get("gpu"), capability=env.get("gpu_capability")),
        budget_s=budget, elapsed_s=round(elapsed, 1), targets_judged=cfg.judged,
        sizes=dataclasses.asdict(cfg.sizes),
        summary=dict(**counts, targets_judged=len(judged), targets_met=sum(bool(t["met"]) for t in judged)),
        passed=counts["fail"] == 0 and counts["error"] == 0,
        checks=[r.to_json() for r in records],
    )


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CI runs this on CPU, < 1 min)")
    p.add_argument("--out", default="gpu_check.json", help="where to write the JSON report")
    p.add_argument("--only", nargs="+", choices=ALL_CHECKS, help="run these checks only (others: skip)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480 = 8 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=CHILD_CHECKS, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is visible to torch {torch.__version__}; "
                "use --device cpu --smoke for the CPU run")
    if args.smoke:
        torch.set_num_threads(1)  # the children run beside this process
    cfg = Config(device=device, smoke=args.smoke, sizes=SMOKE if args.smoke else FULL, seed=args.seed)
    selected = set(args.only or ALL_CHECKS)
    t_start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - t_start)  # noqa: E731
    records: Dict[str, Check] = {}
    with tempfile.TemporaryDirectory(prefix="vcq_gpu_check_") as work:
        children: Dict[str, Child] = {}
        parallel = not cfg.cuda  # on CPU the children overlap the in-process checks; on a GPU they queue
        if parallel:
            children = {n: Child(n, args, Path(work)) for n in CHILD_CHECKS if n in selected}
        for name in LIBRARY_CHECKS:
            if name not in selected:
                continue
            if left() <= 0:
                rec = Check(name)
                rec.status, rec.reason = "skip", f"--budget {args.budget:.0f} s used up before it started"
                records[name] = rec
                continue
            print(f"[gpu_check] {name} ...", flush=True)
            records[name] = run_check(name, CHECKS[name], cfg)
        for name in CHILD_CHECKS:
            if name not in selected:
                continue
            if not parallel:
                if left() < 20:
                    rec = Check(name)
                    rec.status, rec.reason = "skip", f"--budget {args.budget:.0f} s used up before it started"
                    records[name] = rec
                    continue
                print(f"[gpu_check] {name} ...", flush=True)
                children[name] = Child(name, args, Path(work))
                records[name] = children[name].result(min(CHILD_CAP_S[name], left()))
            else:
                records[name] = children[name].result(max(left(), 1.0))
    for name in ALL_CHECKS:
        if name not in selected:
            rec = Check(name)
            rec.status, rec.reason = "skip", "not selected (--only)"
            records[name] = rec
    ordered = [records[n] for n in ALL_CHECKS]
    report = build_report(cfg, ordered, time.perf_counter() - t_start, args.budget)
    from vcq_plugin._io import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=1, allow_nan=False) + "\n")
    print_report(report)
    print(f"\nwrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
