"""The paper's Fig. 2(a) (entropy cliff) and Fig. 2(b) (K(i) curves), PNG + SVG (matplotlib Agg)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._io import atomic_path
from ..schedule import CodebookSchedule, coerce_schedule

__all__ = ["plot_entropy_cliff", "plot_schedules"]


def _figure(figsize: tuple[float, float]) -> Any:
    """A Figure on the Agg canvas, without pyplot (no global backend switch, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _colors() -> list[str]:
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig: Any, out_stem: str, formats: Sequence[str]) -> list[str]:
    """Save ``fig`` as out_stem.<fmt> for each format, atomically (temp file + os.replace)."""
    paths = []
    for fmt in formats:
        path = f"{out_stem}.{fmt}"
        with atomic_path(path, suffix=f".tmp.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_entropy_cliff(
    curves: Sequence[dict[str, Any]],
    out_stem: str,
    max_positions: int = 32,
    title: str = "Entropy cliff: remaining budget R(i) and measured H(x_i | x_<i)",
    formats: Sequence[str] = ("png", "svg"),
) -> list[str]:
    """Fig. 2(a): one colour per curve; solid = measured conditional entropy, dashed = R(i).

    Each curve is a dict with ``name`` and any of ``conditional`` (bits [L]),
    ``remaining_budget`` (bits [L]; displayed clipped at 0) and ``istar`` (marked by a dotted
    vertical line). Positions are shown 1-based, the first ``max_positions`` of them.
    Returns the written paths.
    """
    if not curves:
        raise ValueError("curves must contain at least one curve")
    fig = _figure((7.5, 4.5))
    ax = fig.subplots()
    colors = _colors()
    shown = 1
    for j, c in enumerate(curves):
        color = colors[j % len(colors)]
        if c.get("conditional") is not None:
            h = np.asarray(c["conditional"], dtype=np.float64)[:max_positions]
            ax.plot(np.arange(1, h.size + 1), h, "-o", ms=3, color=color, label=f"{c['name']}: measured H")
            shown = max(shown, h.size)
        if c.get("remaining_budget") is not None:
            r = np.clip(np.asarray(c["remaining_budget"], dtype=np.float64)[:max_positions], 0.0, None)
            ax.plot(np.arange(1, r.size + 1), r, "--", color=color, alpha=0.8, label=f"{c['name']}: budget R(i)")
            shown = max(shown, r.size)
        if c.get("istar") is not None and c["istar"] <= max_positions:
            ax.axvline(c["istar"], ls=":", color=color, alpha=0.6)
    ax.set_xlabel("position i (1-based)")
    ax.set_ylabel("bits")
    ax.set_xlim(0.5, shown + 0.5)
    ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out_stem, formats)


def plot_schedules(
    schedules: dict[str, CodebookSchedule | str | dict],
    out_stem: str,
    log_scale: bool = True,
    title: str = "Codebook size K(i) per position",
    formats: Sequence[str] = ("png", "svg"),
) -> list[str]:
    """Fig. 2(b): K(i) against the 0-based position for each named schedule. Returns the paths."""
    if not schedules:
        raise ValueError("schedules must contain at least one schedule")
    fig = _figure((6.5, 4.0))
    ax = fig.subplots()
    for name, s in schedules.items():
        sched = coerce_schedule(s)
        ax.plot(np.arange(sched.seq_len), sched.sizes.numpy(), label=f"{name} (mean K {sched.mean_size:.0f})")
    if log_scale:
        ax.set_yscale("log", base=2)
    ax.set_xlabel("position i")
    ax.set_ylabel("K(i)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_stem, formats)
