"""The entropy-cliff report: measured vs. computed i*, utilisation, probe, report.json + plots."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from .._io import atomic_write_json
from ..schedule import CodebookSchedule
from .entropy import (
    DEFAULT_TOLERANCE_BITS,
    _check_tolerance,
    as_token_array,
    codebook_usage,
    prefix_entropy_profile,
)
from .plots import plot_entropy_cliff, plot_schedules
from .probe import PROBE_FEATURE, equal_capacity_k, first_k_linear_probe
from .theory import prop1_bound

__all__ = ["cliff_report", "format_table", "DEFINITIONS", "MEASURED_ISTAR", "write_json_atomic"]

MEASURED_ISTAR = (
    "measured i* = the first prefix length i (1-based) whose prefix entropy H(x_<=i) = sum_{j<=i} H(x_j | x_<j) "
    "is within tolerance_bits of log2 N (N = the number of token sequences measured): there the prefixes have "
    "become unique, the data's uncertainty is used up and every later H(x_j | x_<j) is about 0, so an AR model "
    "can only memorise. It is the measured counterpart of Eq. 2 (C(i) >= log2 N). The per-position rule "
    "'first H(x_i | x_<i) below a threshold' is not used: a position with a small codebook carries at most "
    "log2 K(i) bits (K(0) = 2: at most 1 bit), so it would read the start of every VCQ schedule as a cliff"
)

DEFINITIONS = {
    "positions": "per-position lists are indexed from 0 (list index i is the (i+1)-th position); every i*, "
    "position count, warning and figure axis is 1-based, as in the paper",
    "conditional_entropy": "H(x_i | x_<i) = H(x_<=i) - H(x_<i) in bits, exact plug-in entropies of the "
    "token prefixes over the N rows (Miller-Madow corrected if miller_madow is true); Fig. 2(a)'s curves",
    "prefix_entropy": "H(x_<=i) in bits, joint entropy of the first i+1 tokens = running sum of "
    "conditional_entropy; at most log2 N (plug-in), reached when every prefix is unique (Miller-Madow "
    "corrected if miller_madow is true; measured_istar always uses the plug-in value)",
    "measured_istar": MEASURED_ISTAR + "; null if never within tolerance_bits of log2 N (e.g. duplicate rows)",
    "computed_istar": "Eq. 2: smallest 1-based count i with C(i) = sum_{j<=i} log2 K(j) >= log2 N "
    "(N = num_samples); null if never reached",
    "capacity_bits": "C(i) = sum_{j<=i} log2 K(j) in bits (Eq. 2), what prefix_entropy could at most be",
    "prop1_bound": "per position, max(0, min(log2 K(i), log2 N - C(i-1))) bits (paper Prop. 1, "
    "generalised to a variable K(i)); exact when earlier positions are fully and uniformly used",
    "remaining_budget": "R(i) = log2 N - C(i-1) bits (Fig. 2(a)), not clipped",
    "saturated_at": "1-based count of positions after which every prefix is unique "
    "(all later conditional entropies are exactly 0); null if never",
    "codes_used": "distinct codes that occur at each position over the N rows",
    "utilisation": "codes_used / K(i) per position",
    "mean_utilisation_first_k": "mean utilisation of the first probe_k positions",
    "warnings": "codebook collapse: a position with K(i) > 1 where every row uses the same code (0 bits)",
    "probe": PROBE_FEATURE + "; on the first probe_k positions (equal k for every set)",
    "probe_equal_capacity": "the same probe on the first k positions of each set, k chosen per set so that "
    "C(k) is closest to probe_bits (equal capacity; null without probe_bits)",
}


def write_json_atomic(obj: Any, path: str) -> None:
    """Write JSON to ``path`` atomically (temp file + os.replace)."""
    atomic_write_json(path, obj, indent=1)


def _floats(a: Any) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64)]


def _pick(mapping_or_value: Any, name: str, what: str, names: list[str]) -> Any:
    """A per-set value: a dict keyed by set name, or one value shared by all sets."""
    if isinstance(mapping_or_value, Mapping):
        unknown = sorted(set(mapping_or_value) - set(names))
        if unknown:
            raise ValueError(f"{what} has keys {unknown} that are not token sets; token sets are {names}")
        return mapping_or_value.get(name)
    return mapping_or_value


def _collapse_warning(used: np.ndarray, sizes: np.ndarray) -> str | None:
    """A warning naming the (1-based) positions with K(i) > 1 where a single code is used."""
    where = np.nonzero((used == 1) & (sizes > 1))[0]
    if not where.size:
        return None
    shown = ", ".join(f"{i + 1} (K={int(sizes[i])})" for i in where[:12]) + (" ..." if where.size > 12 else "")
    return (f"codebook collapse: {where.size} position(s) use one code only, so they carry 0 bits: "
            f"position {shown} (1-based)")


def cliff_report(
    token_sets: Mapping[str, tuple[Any, CodebookSchedule | str | dict]],
    out_dir: str | os.PathLike | None,
    labels: Any = None,
    codebooks: Any = None,
    num_samples: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_BITS,
    probe_k: int = 10,
    *,
    probe_bits: float | None = None,
    miller_madow: bool = False,
    max_plot_positions: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the entropy cliff of one or more token sets and compare it with the theory.

    Args:
        token_sets: name -> (tokens (N, L) int array / memmap / tensor / .npy path, schedule);
            the schedule (anything :meth:`CodebookSchedule.from_spec` takes) declares K(i), and
            every token is checked to lie in [0, K(i)).
        out_dir: folder for report.json, fig2a_entropy_cliff.{png,svg} and fig2b_schedules.{png,svg}
            (written atomically; created if missing, an existing file there is an error);
            ``None`` writes nothing.
        labels / codebooks: for the first-k linear probe, either one value shared by all sets or a
            dict name -> value; the probe runs for a set when both are known.
        num_samples: N used by the theory (computed i*, Prop. 1 bound, R(i)); default each set's
            number of rows. The measured i* always uses the rows measured.
        tolerance: bits; measured i* is the first prefix length whose prefix entropy is within
            ``tolerance`` of log2 N (see ``DEFINITIONS["measured_istar"]``).
        probe_k: number of leading positions the probe sees (equal k for every set).
        probe_bits: if given, the probe also runs at equal capacity: on the first k positions of each
            set with k from :func:`~vcq_plugin.analysis.probe.equal_capacity_k` (``probe_equal_capacity``).

    Returns:
        the report dict (also report.json, strict JSON): ``definitions``, ``tolerance_bits``,
        ``sets`` (one entry per token set) and ``warnings`` (codebook collapse, per set).
    """
    if not isinstance(token_sets, Mapping) or not token_sets:
        raise ValueError("token_sets must be a non-empty dict name -> (tokens, schedule)")
    tolerance = _check_tolerance(tolerance)
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {str(out_dir)!r} exists and is not a folder; give a folder for report.json "
                         "and the figures")
    names = [str(n) for n in token_sets]
    sets: dict[str, Any] = {}
    curves = []
    schedules: dict[str, CodebookSchedule] = {}
    all_warnings: list[str] = []
    for name, item in token_sets.items():
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"token_sets[{name!r}] must be a (tokens, schedule) pair")
        tokens, schedule = item
        arr = as_token_array(tokens, name=f"tokens of {name!r}")
        sched = CodebookSchedule.from_spec(schedule)
        n_rows, length = arr.shape
        if sched.seq_len != length:
            raise ValueError(
                f"tokens of {name!r} have L={length} positions but the schedule has seq_len={sched.seq_len}"
            )
        used = codebook_usage(arr, sched, progress=progress)  # also validates 0 <= token < K(i)
        sizes = sched.sizes.numpy()
        util = used / sizes.astype(np.float64)
        prof = prefix_entropy_profile(arr, miller_madow=miller_madow, progress=progress)
        n_theory = float(n_rows if num_samples is None else num_samples)
        bound = prop1_bound(n_theory, sched)
        computed = sched.transition_position(n_theory)
        warns = [w for w in (_collapse_warning(used, sizes),) if w]
        all_warnings += [f"{name}: {w}" for w in warns]
        entry: dict[str, Any] = {
            "num_rows": int(n_rows),
            "seq_len": int(length),
            "num_samples": n_theory,
            "log2_num_samples": math.log2(n_theory),
            "schedule": sched.to_dict(),
            "mean_size": sched.mean_size,
            "bpp": sched.bits_per_pixel(256),
            "computed_istar": computed,
            "measured_istar": prof.transition_position(tolerance),
            "saturated_at": prof.saturated_at,
            "total_entropy_bits": float(prof.joint[-1]),
            "max_excess_over_prop1_bound": float(np.max(prof.conditional - bound)),
            "conditional_entropy": _floats(prof.conditional),
            "prefix_entropy": _floats(prof.joint),
            "capacity_bits": _floats(sched.capacity_bits()),
            "distinct_prefixes": [int(x) for x in prof.distinct_prefixes],
            "prop1_bound": _floats(bound),
            "remaining_budget": _floats(sched.remaining_budget(n_theory)),
            "codes_used": [int(x) for x in used],
            "utilisation": _floats(util),
            "mean_utilisation_first_k": float(util[: min(probe_k, length)].mean()),
            "warnings": warns,
            "probe": None,
            "probe_equal_capacity": None,
        }
        lab = _pick(labels, name, "labels", names)
        cb = _pick(codebooks, name, "codebooks", names)
        if lab is not None and cb is not None:
            entry["probe"] = first_k_linear_probe(arr, lab, cb, k=probe_k, seed=seed)
            if probe_bits is not None:
                k_eq = equal_capacity_k({name: sched}, probe_bits)[name]
                entry["probe_equal_capacity"] = dict(
                    first_k_linear_probe(arr, lab, cb, k=k_eq, seed=seed),
                    target_bits=float(probe_bits), capacity_bits=float(sched.capacity_bits()[k_eq - 1]))
        sets[name] = entry
        schedules[name] = sched
        curves.append(
            {"name": name, "conditional": prof.conditional, "remaining_budget": sched.remaining_budget(n_theory).numpy(),
             "istar": computed, "measured_istar": entry["measured_istar"], "prefix_entropy": prof.plugin_joint(),
             "capacity": sched.capacity_bits().numpy(), "log2_num_samples": math.log2(n_rows)}
        )
    report: dict[str, Any] = {
        "version": 2,
        "definitions": DEFINITIONS,
        "tolerance_bits": tolerance,
        "miller_madow": bool(miller_madow),
        "probe_k": int(probe_k),
        "probe_bits": None if probe_bits is None else float(probe_bits),
        "sets": sets,
        "warnings": all_warnings,
        "files": {},
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        files = plot_entropy_cliff(curves, os.path.join(out_dir, "fig2a_entropy_cliff"), max_positions=max_plot_positions,
                                   tolerance=tolerance)
        files += plot_schedules(schedules, os.path.join(out_dir, "fig2b_schedules"))
        report["files"] = {"plots": [os.path.basename(f) for f in files], "report": "report.json"}
        write_json_atomic(report, os.path.join(out_dir, "report.json"))
    return report


def format_table(report: Mapping[str, Any], show_positions: int = 6) -> str:
    """A short text table of a :func:`cliff_report` result, each column explained below it."""
    head = (
        f"{'set':<16} {'N':>9} {'mean K':>8} {'i* Eq.2':>7} {'i* meas':>7} {'unique@':>7} "
        f"{'util<k':>6} {'probe top1':>10}  H(x_i|x_<i) bits, i=1..{show_positions}"
    )
    lines = [head, "-" * len(head)]
    for name, s in report["sets"].items():
        probe = s.get("probe")
        p = f"{probe['top1']:.3f}/{probe['chance']:.3f}" if probe else "-"
        h = " ".join(f"{x:.2f}" for x in s["conditional_entropy"][:show_positions])
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        lines.append(
            f"{name[:16]:<16} {s['num_rows']:>9} {s['mean_size']:>8.1f} {fmt(s['computed_istar']):>7} "
            f"{fmt(s['measured_istar']):>7} {fmt(s['saturated_at']):>7} {s['mean_utilisation_first_k']:>6.2f} "
            f"{p:>10}  {h}"
        )
    k = report.get("probe_k")
    lines += [
        "i* Eq.2: first position (1-based) where the capacity sum log2 K(j) reaches log2 N (theory, full code use)",
        f"i* meas: first prefix length whose prefix entropy H(x_<=i) is within {report['tolerance_bits']:g} bit of "
        "log2 N (prefixes unique: the measured cliff)",
        "unique@: prefix length from which every prefix is unique (all later H are exactly 0); - = never",
        f"util<k: mean share of the K(i) codes used over the first {k} positions",
        f"probe top1: first-{k}-token linear probe, held-out top-1 / chance (1 / #classes); - = no labels",
    ]
    for w in report.get("warnings", []):
        lines.append(f"WARNING {w}")
    return "\n".join(lines)
