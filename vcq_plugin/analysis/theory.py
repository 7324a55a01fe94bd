"""Entropy-cliff theory: Eq. 1, the Proposition 1 bound, paper Tables 1 and 2, a schedule advisor.

All K(i), capacity C(i), R(i) and i* maths come from :class:`~vcq_plugin.schedule.CodebookSchedule`
and :func:`~vcq_plugin.schedule.uniform_transition_position`; this module only arranges them.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from .._errors import check_int
from ..schedule import CodebookSchedule, uniform_transition_position

__all__ = [
    "uniform_transition_position",
    "prop1_bound",
    "TABLE1_DATASETS",
    "IMAGENET_NUM_SAMPLES",
    "table1",
    "table1_thresholds",
    "table2",
    "advise",
    "DEFAULT_POWER_GRID",
]

IMAGENET_NUM_SAMPLES = 1_281_167

# Paper Table 1, empirical rows: (dataset, type, N, log2 N as printed, i* as printed) for K = 16384.
TABLE1_DATASETS: tuple[tuple[str, str, float, float, int], ...] = (
    ("CIFAR-10/100", "Classification", 50_000, 15.6, 2),
    ("COCO", "Detection/Segm.", 118_287, 16.9, 2),
    ("ImageNet-1K", "Classification (1K)", IMAGENET_NUM_SAMPLES, 20.3, 2),
    ("CC12M", "Image-text", 12_000_000, 23.5, 2),
    ("LAION-400M", "Image-text", 400_000_000, 28.6, 3),
    ("LAION-5B", "Image-text", 5_000_000_000, 32.2, 3),
)


def _log2n(num_samples: float) -> float:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, float, np.integer, np.floating)):
        raise TypeError(f"num_samples must be a number, got {type(num_samples).__name__}")
    if not math.isfinite(float(num_samples)) or num_samples < 1:
        raise ValueError(f"num_samples must be a finite number >= 1, got {num_samples}")
    return math.log2(float(num_samples))


def prop1_bound(num_samples: float, schedule: CodebookSchedule | str | dict, **schedule_kwargs: Any) -> np.ndarray:
    """Proposition 1 upper bound on H(x_i | x_<i) per position, bits, float64 [L].

    For the i-th position (1-based) ``bound_i = max(0, min(log2 K(i), log2 N - C(i-1)))`` with
    C the cumulative capacity (Eq. 2); for a constant K this is the paper's
    ``max(0, min(log2 K, log2 N - (i-1) log2 K))``, zero from position i* + 1 on (Eq. 1).
    It bounds the empirical conditional entropy whenever the earlier positions carry their full
    log2 K(j) bits (100 % utilisation, uniform use); with under-used early positions the entropy
    can spill later (the paper's remark that the real cliff may come "slightly later").
    """
    sched = CodebookSchedule.from_spec(schedule, **schedule_kwargs)
    remaining = sched.remaining_budget(num_samples).numpy()
    return np.maximum(0.0, np.minimum(sched.log2_sizes().numpy(), remaining))


def table1(k: int = 16384) -> list[dict[str, Any]]:
    """Paper Table 1 (top): dataset sizes -> log2 N and i* = ceil(log2 N / log2 K) (Eq. 1)."""
    k = check_int("k", k, minimum=2)
    return [
        {
            "dataset": name,
            "type": kind,
            "num_samples": n,
            "log2_num_samples": math.log2(n),
            "istar": uniform_transition_position(n, k),
            "paper_log2_num_samples": paper_bits,
            "paper_istar": paper_istar,
        }
        for name, kind, n, paper_bits, paper_istar in TABLE1_DATASETS
    ]


def table1_thresholds(k: int = 16384, steps: int = 4, reference: int = IMAGENET_NUM_SAMPLES) -> list[dict[str, Any]]:
    """Paper Table 1 (bottom): the data size beyond which Eq. 1's i* moves from m to m + 1.

    i* = ceil(log2 N / log2 K) exceeds m exactly when log2 N > m log2 K, so the m-th threshold is
    ``m * log2 K`` bits (14, 28, 42, 56 for K = 16384), i.e. N = K**m, also given as a multiple of
    ``reference`` (ImageNet-1K by default: 209.5x and 3.43Mx for 28 and 42 bits).
    """
    k = check_int("k", k, minimum=2)
    steps = check_int("steps", steps, minimum=1)
    rows = []
    for m in range(1, steps + 1):
        bits = m * math.log2(k)
        rows.append(
            {
                "istar_from": m,
                "istar_to": m + 1,
                "log2_num_samples": bits,
                "num_samples": float(k) ** m,
                "reference_multiple": float(k) ** m / reference,
            }
        )
    return rows


def _schedule_name(s: CodebookSchedule) -> str:
    if s.kind == "constant":
        return f"constant-{s.k_max}"
    if s.kind == "power":
        return f"power{s.power:g}-{s.k_max}"
    return f"{s.kind}-{s.k_max}"


def table2(
    schedules: Iterable[CodebookSchedule | str | dict] | dict[str, CodebookSchedule | str | dict],
    num_samples: float = IMAGENET_NUM_SAMPLES,
    image_size: int = 256,
) -> list[dict[str, Any]]:
    """Paper Table 2 for any schedules: mean K, BPP and the computed i* (Eq. 2) for N samples.

    ``schedules`` is a list (names generated) or a dict name -> schedule (CodebookSchedule,
    registry name or dict). ``istar`` is ``None`` when the whole sequence never reaches log2 N.
    """
    items = schedules.items() if isinstance(schedules, dict) else [(None, s) for s in schedules]
    rows = []
    for name, s in items:
        sched = CodebookSchedule.from_spec(s)
        rows.append(
            {
                "name": name or _schedule_name(sched),
                "schedule": sched.to_dict(),
                "k_max": sched.k_max,
                "mean_size": sched.mean_size,
                "bpp": sched.bits_per_pixel(image_size),
                "istar": sched.transition_position(num_samples),
            }
        )
    return rows


DEFAULT_POWER_GRID: tuple[float, ...] = tuple(round(0.25 * j, 2) for j in range(2, 41))  # 0.5 .. 10


def advise(
    num_samples: float,
    k_max: int,
    k_min: int = 2,
    seq_len: int = 256,
    target_istar: int = 5,
    powers: Sequence[float] = DEFAULT_POWER_GRID,
    image_size: int = 256,
) -> list[dict[str, Any]]:
    """Schedules that push the computed i* (Eq. 2) to at least ``target_istar`` for N samples.

    Candidates: constant, linear, cosine and power p for each p in ``powers`` (all with the given
    k_min, k_max, seq_len). A smaller codebook at early positions is what delays i*, and its
    cost is reconstruction capacity, measured as the mean codebook size (paper Table 2). So the
    result keeps the candidates with ``istar >= target_istar`` and sorts them by mean K
    DESCENDING: the first entry reaches the target while giving up the least capacity. Within the
    power family mean K falls as p grows, so only the smallest sufficient p is worth listing; all
    reaching powers are returned anyway, flagged ``"best_in_family"``. An empty list means no
    candidate reaches the target (a candidate whose capacity never reaches log2 N has
    ``istar = None`` and counts as reaching every target: it never exhausts the data).
    """
    _log2n(num_samples)
    target_istar = check_int("target_istar", target_istar, minimum=1)
    if target_istar > check_int("seq_len", seq_len, minimum=1):
        raise ValueError(f"target_istar must be <= seq_len={seq_len}, got {target_istar}")
    for p in powers:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
            raise ValueError(f"powers must be numbers > 0, got {p!r}")
    candidates: list[tuple[str, float | None]] = [("constant", None), ("linear", None), ("cosine", None)]
    candidates += [("power", float(p)) for p in sorted(set(powers))]
    out = []
    for kind, p in candidates:
        name = "constant" if kind == "constant" else f"vcq_{kind}"
        kw = {} if kind == "constant" else {"k_min": k_min, **({"power": p} if p is not None else {})}
        sched = CodebookSchedule.from_spec(name, k_max=k_max, seq_len=seq_len, **kw)
        istar = sched.transition_position(num_samples)
        if istar is not None and istar < target_istar:
            continue
        out.append(
            {
                "kind": kind,
                "power": p,
                "name": f"vcq_power{p:g}" if p is not None else name,
                "istar": istar,
                "mean_size": sched.mean_size,
                "bpp": sched.bits_per_pixel(image_size),
                "schedule": sched.to_dict(),
            }
        )
    best_power = min((r["power"] for r in out if r["kind"] == "power"), default=None)
    for r in out:
        r["best_in_family"] = r["kind"] != "power" or r["power"] == best_power
    out.sort(key=lambda r: (-r["mean_size"], r["kind"], r["power"] or 0.0))
    return out
