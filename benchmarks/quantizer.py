"""Side-by-side speed and memory of VCQ's prefix search against uniform / naive quantizers.

Variants (K_max 16384, L 256, batch 32, dim 8 = LlamaGen and 12 = TiTok):

    (a) host    uniform quantizer over all K_max codes, computed like LlamaGen's / TiTok's
                VectorQuantizer: full distance matrix sum(z^2) + sum(e^2) - 2 einsum, argmin
    (b) naive   the same full matrix, columns k >= K(i) masked to +inf, argmin (per schedule)
    (c) const   ours (VariableCodebookQuantizer) with a constant schedule at the same K_max
    (d) ours    VariableCodebookQuantizer with the cosine / linear / power schedule

Modes: ``eval`` = eval-mode forward under no_grad (tokenising); ``train`` = train-mode forward
plus backward of ``loss + z_q.square().mean()``. Times are medians of interleaved repetitions
(every repetition runs all variants back to back, so machine load hits them alike); ``wall`` is
``time.perf_counter``, ``cpu`` is this process's CPU time (``time.process_time``), which is far
less sensitive to other jobs on a shared machine. (a)/(d) and (b)/(d) come from ``--reps``
repetitions of all variants; (c)/(d) from ``--fast-reps`` further repetitions of (c) and (d) alone
(each call ~0.1 s), interleaved among themselves so that the 1.5 GiB variants' page faults do not
fall between them; the quartiles of the per-repetition ratio c_i / d_i show the spread, and a 95 %
interval of the ratio of medians comes from a paired bootstrap over those repetitions (fixed seed).
The last lines give the cosine schedule's eval (c)/(d) per dim against the 2.5x target, computed here.

Peak memory (Linux): before each variant's first call the script frees what it can
(``gc.collect`` + ``malloc_trim``), resets the kernel's resident-set high-water mark
(``/proc/self/clear_refs``) and records VmRSS; after the call it reads VmHWM. The difference is
the peak resident memory the call added, whoever allocated it. glibc is told to serve every
allocation >= 64 KiB with mmap and to return freed memory (``mallopt``) during that call, so
memory freed by an earlier variant cannot hide a later variant's allocations; for the timed
calls it is set back to glibc's warmed-up steady state (heap reuse below 32 MiB), so no variant
pays page faults it would not pay in a long-running job. "n/a" where /proc is missing.

OpenMP: unless already set, ``OMP_WAIT_POLICY=PASSIVE`` is exported before torch is imported.
On a shared, oversubscribed machine OpenMP's default spin-waiting makes every parallel op wait
for a descheduled sibling thread (10x slower small ops, and CPU time counting the spinning);
passive waiting removes that for all variants alike. Set it yourself to override.

Usage-statistics memory (``--usage-memory``): at K_max 2**24, L 256, dim 8, batch 4, the resident
memory the first training forward adds over an eval forward (which has the same search temporaries),
i.e. what the usage record costs, for the constant and the cosine schedule; the target is < 1 GB.

    python benchmarks/quantizer.py            # full run, a few minutes on 2 cores
    python benchmarks/quantizer.py --quick    # one dim, fewer repetitions, no train mode
    python benchmarks/quantizer.py --usage-memory
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import inspect
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime's start

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from torch import nn

from vcq_plugin.prefix_search import DEFAULT_CHUNK_SIZE, plan_tiles
from vcq_plugin.quantizer import VariableCodebookQuantizer
from vcq_plugin.schedule import CodebookSchedule

SCHEDULES = ("cosine", "linear", "power")
TARGET = 2.5  # issue 14: cosine eval (c)/(d) wall at every dim


class HostVectorQuantizer(nn.Module):
    """(a) / (b): the hosts' VectorQuantizer on (B, L, D) tokens, optionally masking K(i)."""

    def __init__(self, k_max: int, dim: int, sizes: torch.Tensor | None = None, beta: float = 0.25) -> None:
        super().__init__()
        self.embedding = nn.Embedding(k_max, dim)
        self.embedding.weight.data.uniform_(-1.0 / k_max, 1.0 / k_max)
        self.beta = beta
        if sizes is not None:  # naive VCQ: a precomputed [L, K_max] mask of disallowed codes
            self.register_buffer("invalid", torch.arange(k_max).unsqueeze(0) >= sizes.unsqueeze(1))
        else:
            self.invalid = None

    def forward(self, z: torch.Tensor):
        b, l, dim = z.shape
        z_flat = z.reshape(-1, dim)
        e = self.embedding.weight
        d = torch.sum(z_flat**2, dim=1, keepdim=True) + torch.sum(e**2, dim=1) - 2 * torch.einsum("bd,dn->bn", z_flat, e.t())
        if self.invalid is not None:
            d = d.view(b, l, -1).masked_fill_(self.invalid, float("inf")).view(b * l, -1)
        idx = torch.argmin(d, dim=1)
        z_q = self.embedding(idx).view(z.shape)
        commitment = self.beta * torch.mean((z_q.detach() - z) ** 2)
        codebook = torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q, {"indices": idx.view(b, l), "loss": commitment + codebook}


def planned_distances(sizes: tuple[int, ...], batch: int) -> int:
    """Distances the CPU search computes for one call, masked ones included (its tile plan)."""
    return sum((t.c1 - t.c0) * (t.r1 - t.r0) for t in plan_tiles(sizes, batch, DEFAULT_CHUNK_SIZE))


def work_ratios(k_max: int, seq_len: int, batch: int) -> str:
    """The ceiling of (c)/(d) per schedule if a distance cost the same everywhere and a call had no
    fixed cost: L * K_max / sum_i K(i) (ideal) and the distances (c)'s plan computes over (d)'s."""
    constant = planned_distances(tuple(CodebookSchedule.from_spec("constant", k_max=k_max, seq_len=seq_len).sizes.tolist()), batch)
    parts = []
    for s in SCHEDULES:
        sizes = tuple(CodebookSchedule.from_spec(f"vcq_{s}", k_max=k_max, seq_len=seq_len).sizes.tolist())
        parts.append(f"{s} {seq_len * k_max / sum(sizes):.2f} ideal, {constant / planned_distances(sizes, batch):.2f} planned")
    return "(c)/(d) work ratio, the ceiling without per-call costs: " + "; ".join(parts)


def build(variant: str, dim: int, k_max: int, seq_len: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    kind, _, sched = variant.partition(":")
    if kind == "a":
        m = HostVectorQuantizer(k_max, dim)
    elif kind == "b":
        m = HostVectorQuantizer(k_max, dim, CodebookSchedule(sched, k_max=k_max, seq_len=seq_len).sizes)
    elif kind == "c":
        m = VariableCodebookQuantizer(CodebookSchedule.from_spec("constant", k_max=k_max, seq_len=seq_len), dim)
    else:
        m = VariableCodebookQuantizer(CodebookSchedule.from_spec(f"vcq_{sched}", k_max=k_max, seq_len=seq_len), dim)
    torch.manual_seed(seed + 1)
    m.embedding.weight.data.normal_()  # a trained-looking codebook, the same for every variant
    return m


def step(m: nn.Module, z: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "eval":
        m.eval()
        with torch.no_grad():
            return m(z)[1]["indices"]
    m.train()
    zz = z.detach().requires_grad_(True)
    z_q, info = m(zz)
    (info["loss"] + z_q.square().mean()).backward()
    m.zero_grad(set_to_none=True)
    return info["indices"]


def time_interleaved(
    models: dict[str, nn.Module], variants: list[str], z: torch.Tensor, mode: str, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call (wall, cpu) of each variant, ``reps`` rounds of all variants back to back."""
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(reps):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            step(models[v], z, mode)
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    return wall, cpu


def ratio_interval(num: list[float], den: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap percentile interval of ``median(num) / median(den)`` (scipy.stats.bootstrap):
    repetitions (round i gave ``num[i]`` and ``den[i]``) resampled together, ``resamples`` times, fixed seed."""
    seeded = {"rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state": np.random.default_rng(seed)}
    result = stats.bootstrap((num, den), lambda n, d: np.median(n) / np.median(d), paired=True, vectorized=False,
                             n_resamples=resamples, method="percentile", **seeded)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class PeakMemory:
    """Peak resident memory (MiB) one call adds, from VmHWM (see the module docstring)."""

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self) -> None:
        self.enabled = os.path.exists("/proc/self/clear_refs")
        self.libc = None
        if self.enabled:
            try:
                self.libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self.libc = None

    def _mallopt(self, mmap_threshold: int, trim_threshold: int) -> None:
        if self.libc is not None:
            self.libc.mallopt(self.M_MMAP_THRESHOLD, mmap_threshold)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, trim_threshold)

    def __call__(self, fn):
        if not self.enabled:
            return fn(), None
        self._mallopt(1 << 16, 1 << 16)  # every block >= 64 KiB mmapped, freed memory returned
        gc.collect()
        if self.libc is not None:
            self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _status_kb("VmRSS")
        out = fn()
        peak = (_status_kb("VmHWM") - base) / 1024
        self.timing_mode()
        return out, peak

    def timing_mode(self) -> None:
        """glibc's steady state for timing: blocks < 32 MiB reuse the heap (as after warm-up)."""
        self._mallopt(32 << 20, 64 << 20)


def usage_memory(k_max: int = 2**24, seq_len: int = 256, dim: int = 8, batch: int = 4) -> bool:
    """Print what the usage record adds to resident memory: an eval forward and a training forward
    (which creates and fills the record) from the same baseline; the record stays resident after."""
    if not os.path.exists("/proc/self/clear_refs"):
        print("usage memory: needs Linux /proc")
        return True
    ok = True
    print(f"\n## usage statistics memory: K_max={k_max}, L={seq_len}, dim={dim}, batch={batch} (MiB over the baseline)")
    print("| schedule | record (8 * sum ceil(K(i)/64) B) | dense bool [L, K_max] | eval fwd peak | training fwd peak | "
          "resident after training fwd | added by usage (max of peak diff, resident) < 1 GB |")
    print("|---|---:|---:|---:|---:|---:|---|")

    def peak_of(fn):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS")
        fn()
        return base, (_status_kb("VmHWM") - base) / 1024

    for name in ("constant", "vcq_cosine"):
        q = VariableCodebookQuantizer(CodebookSchedule.from_spec(name, k_max=k_max, seq_len=seq_len), dim)
        z = torch.randn(batch, seq_len, dim, generator=torch.Generator().manual_seed(0))
        q.eval()
        q(z)  # warm-up: plans and caches
        _, eval_peak = peak_of(lambda: q(z))
        q.train()
        base, train_peak = peak_of(lambda: q(z))
        after = (_status_kb("VmRSS") - base) / 1024
        record = q._usage.words.numel() * 8 / 2**20
        added = max(train_peak - eval_peak, after)
        ok &= added < 1024
        print(f"| {name} | {record:.1f} | {seq_len * k_max / 2**20:.0f} | {eval_peak:.1f} | {train_peak:.1f} | "
              f"{after:.1f} | {added:.1f}: {added < 1024} |")
        q = None  # the record freed before the next schedule
        gc.collect()
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="dim 8 only, eval only, 3 repetitions")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of all variants (default 3)")
    p.add_argument(
        "--fast-reps", type=int, default=15, help="further interleaved repetitions of (c) and (d) only, for (c)/(d) (default 15)"
    )
    p.add_argument("--dims", type=int, nargs="+", default=[8, 12])
    p.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k-max", type=int, default=16384)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--usage-memory", action="store_true", help="only the usage-statistics memory at K_max 2**24")
    args = p.parse_args(argv)
    if args.usage_memory:
        return 0 if usage_memory() else 1
    if args.quick:
        args.dims, args.modes, args.reps, args.fast_reps = [8], ["eval"], 3, 9
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = ["a"] + [f"b:{s}" for s in SCHEDULES] + ["c"] + [f"d:{s}" for s in SCHEDULES]
    names = {"a": "(a) host uniform", "c": "(c) ours constant"}
    names.update({f"b:{s}": f"(b) naive {s}" for s in SCHEDULES})
    names.update({f"d:{s}": f"(d) ours {s}" for s in SCHEDULES})
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, K_max={args.k_max}, L={args.seq_len}, "
        f"batch={args.batch}, reps={args.reps} (all variants) + {args.fast_reps} ((c) and (d)); medians; "
        "wall = perf_counter, cpu = process_time"
    )
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; peak MiB = VmHWM - VmRSS around one call")
    print(work_ratios(args.k_max, args.seq_len, args.batch))
    peak = PeakMemory()
    t_start = time.perf_counter()
    ok = True
    target: list[str] = []  # cosine (c)/(d) wall per dim in eval mode, against TARGET
    meets: list[bool] = []
    for dim in args.dims:
        models = {v: build(v, dim, args.k_max, args.seq_len) for v in variants}
        torch.manual_seed(123)
        z = torch.randn(args.batch, args.seq_len, dim)
        for mode in args.modes:
            indices, mem = {}, {}
            for v in variants:  # first call: warm-up, indices and peak memory
                indices[v], mem[v] = peak(lambda: step(models[v], z, mode))
            wall, cpu = time_interleaved(models, variants, z, mode, args.reps)
            # (c) against (d): many more cheap repetitions, interleaved among themselves only, so the
            # 1.5 GiB variants' page faults and cache flushes do not land between them
            fast = ["c"] + [f"d:{s}" for s in SCHEDULES]
            fast_wall, fast_cpu = time_interleaved(models, fast, z, mode, args.fast_reps)
            med_w = {v: statistics.median(wall[v]) * 1e3 for v in variants}
            med_c = {v: statistics.median(cpu[v]) * 1e3 for v in variants}
            print(f"\n## dim {dim}, {mode} ({'forward, no_grad' if mode == 'eval' else 'forward + backward'})")
            print("| variant | wall ms | cpu ms | peak MiB | (a)/this wall | (a)/this cpu |")
            print("|---|---:|---:|---:|---:|---:|")
            for v in variants:
                pm = "n/a" if mem[v] is None else f"{mem[v]:.1f}"
                print(f"| {names[v]} | {med_w[v]:.1f} | {med_c[v]:.1f} | {pm} | {med_w['a'] / med_w[v]:.2f} | {med_c['a'] / med_c[v]:.2f} |")
            fw = {v: statistics.median(fast_wall[v]) * 1e3 for v in fast}
            fc = {v: statistics.median(fast_cpu[v]) * 1e3 for v in fast}
            print(
                "\n| schedule | (a)/(d) wall | (a)/(d) cpu | (b)/(d) wall | (b)/(d) cpu | (c)/(d) wall | (c)/(d) cpu "
                "| (c)/(d) wall, 95 % interval | (c)/(d) per-rep wall, quartiles | (b) == (d) indices | peak (d) <= (a) |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---|---|---|---|")
            for s in SCHEDULES:
                d, b = f"d:{s}", f"b:{s}"
                same = torch.equal(indices[d], indices[b])
                ok &= same
                mem_ok = "n/a" if mem[d] is None or mem["a"] is None else str(mem[d] <= mem["a"])
                per_rep = [c / x for c, x in zip(fast_wall["c"], fast_wall[d])]
                q = statistics.quantiles(per_rep, n=4) if len(per_rep) > 1 else per_rep * 3
                lo, hi = ratio_interval(fast_wall["c"], fast_wall[d]) if len(per_rep) > 1 else (per_rep[0],) * 2
                print(
                    f"| {s} | {med_w['a'] / med_w[d]:.2f} | {med_c['a'] / med_c[d]:.2f} | {med_w[b] / med_w[d]:.2f} | "
                    f"{med_c[b] / med_c[d]:.2f} | {fw['c'] / fw[d]:.2f} | {fc['c'] / fc[d]:.2f} | {lo:.2f} - {hi:.2f} | "
                    f"{q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} | {same} | {mem_ok} |"
                )
                if s == "cosine" and mode == "eval":
                    target.append(f"dim {dim} {fw['c'] / fw[d]:.2f}x (95 % {lo:.2f}-{hi:.2f})")
                    meets.append(fw["c"] / fw[d] >= TARGET)
            print(
                f"\n(a)/(d), (b)/(d): medians of the {args.reps} repetitions of all variants; (c)/(d): medians of "
                f"{args.fast_reps} further repetitions of (c) and (d) alone: (c) {fw['c']:.1f} ms wall"
                + "".join(f", (d) {s} {fw[f'd:{s}']:.1f} ms" for s in SCHEDULES)
            )
            # the constant path against the host: same indices expected too
            same_c = torch.equal(indices["c"], indices["a"])
            ok &= same_c
            print(f"\n(c) == (a) indices: {same_c}")
        models = None  # the 1.5 GiB variants freed before the next dim
    if target:
        print(f"\ncosine (c)/(d) wall, eval: {'; '.join(target)}; >= {TARGET}x at every dim in this run: {all(meets)}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if not ok:
        print("INDEX MISMATCH: the prefix search disagrees with the brute-force reference", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
