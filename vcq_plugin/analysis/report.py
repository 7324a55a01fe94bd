"""The entropy-cliff report: measured vs. computed i*, utilisation, probe, report.json + plots."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from .._io import atomic_write_json
from ..schedule import CodebookSchedule, coerce_schedule
from .entropy import as_token_array, codebook_utilisation, measured_transition_position, prefix_entropy_profile
from .plots import plot_entropy_cliff, plot_schedules
from .probe import PROBE_FEATURE, first_k_linear_probe
from .theory import prop1_bound

__all__ = ["cliff_report", "format_table", "DEFINITIONS", "write_json_atomic"]

DEFINITIONS = {
    "positions": "0-based indices in every per-position list; 'i-th position' in text is 1-based",
    "conditional_entropy": "H(x_i | x_<i) = H(x_<=i) - H(x_<i) in bits, exact plug-in entropies of the "
    "token prefixes over the N rows (Miller-Madow corrected if miller_madow is true)",
    "measured_istar": "number of positions before the first position whose conditional entropy is "
    "< threshold_bits (= 0-based index of that position = its 1-based index - 1); same count as "
    "computed_istar, because the Prop. 1 bound is 0 from the (i*+1)-th position on; null if no "
    "position falls below the threshold",
    "first_low_entropy_position": "1-based index of the first position whose conditional entropy is < threshold_bits",
    "computed_istar": "Eq. 2: smallest 1-based count i with C(i) = sum_{j<=i} log2 K(j) >= log2 N "
    "(N = num_samples); null if never reached",
    "prop1_bound": "per position, max(0, min(log2 K(i), log2 N - C(i-1))) bits (paper Prop. 1, "
    "generalised to a variable K(i)); exact when earlier positions are fully and uniformly used",
    "remaining_budget": "R(i) = log2 N - C(i-1) bits (Fig. 2(a)), not clipped",
    "saturated_at": "1-based count of positions after which every prefix is unique "
    "(all later conditional entropies are exactly 0); null if never",
    "utilisation": "distinct codes used at position i / K(i)",
    "probe": PROBE_FEATURE,
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


def cliff_report(
    token_sets: Mapping[str, tuple[Any, CodebookSchedule | str | dict]],
    out_dir: str | None,
    labels: Any = None,
    codebooks: Any = None,
    num_samples: float | None = None,
    threshold: float = 0.5,
    probe_k: int = 10,
    *,
    miller_madow: bool = False,
    max_plot_positions: int = 32,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the entropy cliff of one or more token sets and compare it with the theory.

    Args:
        token_sets: name -> (tokens (N, L) int array / memmap / tensor / .npy path, schedule);
            the schedule (CodebookSchedule, registry name or dict) declares K(i), and every token
            is checked to lie in [0, K(i)).
        out_dir: where report.json, fig2a_entropy_cliff.{png,svg} and fig2b_schedules.{png,svg}
            go (written atomically); ``None`` writes nothing.
        labels / codebooks: for the first-k linear probe, either one value shared by all sets or a
            dict name -> value; the probe runs for a set when both are known.
        num_samples: N used by the theory (computed i*, Prop. 1 bound, R(i)); default each set's
            number of rows.
        threshold: bits; defines the measured i* (see ``DEFINITIONS``).
        probe_k: number of leading positions the probe sees.

    Returns:
        the report dict (also report.json): ``definitions``, ``threshold_bits`` and ``sets``.
    """
    if not isinstance(token_sets, Mapping) or not token_sets:
        raise ValueError("token_sets must be a non-empty dict name -> (tokens, schedule)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a number of bits > 0, got {threshold!r}")
    names = [str(n) for n in token_sets]
    sets: dict[str, Any] = {}
    curves = []
    schedules: dict[str, CodebookSchedule] = {}
    for name, item in token_sets.items():
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"token_sets[{name!r}] must be a (tokens, schedule) pair")
        tokens, schedule = item
        arr = as_token_array(tokens, name=f"tokens of {name!r}")
        sched = coerce_schedule(schedule)
        n_rows, length = arr.shape
        if sched.seq_len != length:
            raise ValueError(
                f"tokens of {name!r} have L={length} positions but the schedule has seq_len={sched.seq_len}"
            )
        util = codebook_utilisation(arr, sched, progress=progress)  # also validates 0 <= token < K(i)
        prof = prefix_entropy_profile(arr, miller_madow=miller_madow, progress=progress)
        n_theory = float(n_rows if num_samples is None else num_samples)
        bound = prop1_bound(n_theory, sched)
        measured = measured_transition_position(prof.conditional, threshold)
        computed = sched.transition_position(n_theory)
        entry: dict[str, Any] = {
            "num_rows": int(n_rows),
            "seq_len": int(length),
            "num_samples": n_theory,
            "log2_num_samples": math.log2(n_theory),
            "schedule": sched.to_dict(),
            "mean_size": sched.mean_size,
            "bpp": sched.bits_per_pixel(256),
            "computed_istar": computed,
            "measured_istar": measured,
            "first_low_entropy_position": None if measured is None else measured + 1,
            "saturated_at": prof.saturated_at,
            "total_entropy_bits": float(prof.joint[-1]),
            "max_excess_over_prop1_bound": float(np.max(prof.conditional - bound)),
            "conditional_entropy": _floats(prof.conditional),
            "joint_entropy": _floats(prof.joint),
            "distinct_prefixes": [int(x) for x in prof.distinct_prefixes],
            "prop1_bound": _floats(bound),
            "remaining_budget": _floats(sched.remaining_budget(n_theory)),
            "utilisation": _floats(util),
            "mean_utilisation_first_k": float(util[: min(probe_k, length)].mean()),
            "probe": None,
        }
        lab = _pick(labels, name, "labels", names)
        cb = _pick(codebooks, name, "codebooks", names)
        if lab is not None and cb is not None:
            entry["probe"] = first_k_linear_probe(arr, lab, cb, k=probe_k, seed=seed)
        sets[name] = entry
        schedules[name] = sched
        curves.append(
            {"name": name, "conditional": prof.conditional, "remaining_budget": sched.remaining_budget(n_theory).numpy(),
             "istar": computed}
        )
    report: dict[str, Any] = {
        "version": 1,
        "definitions": DEFINITIONS,
        "threshold_bits": float(threshold),
        "miller_madow": bool(miller_madow),
        "probe_k": int(probe_k),
        "sets": sets,
        "files": {},
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        files = plot_entropy_cliff(curves, os.path.join(out_dir, "fig2a_entropy_cliff"), max_positions=max_plot_positions)
        files += plot_schedules(schedules, os.path.join(out_dir, "fig2b_schedules"))
        report["files"] = {"plots": [os.path.basename(f) for f in files], "report": "report.json"}
        write_json_atomic(report, os.path.join(out_dir, "report.json"))
    return report


def format_table(report: Mapping[str, Any], show_positions: int = 6) -> str:
    """A short text table of a :func:`cliff_report` result."""
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
    lines.append(
        f"(threshold {report['threshold_bits']:g} bit; i* meas = positions before the first H < threshold; "
        "probe = top-1 / chance)"
    )
    return "\n".join(lines)
