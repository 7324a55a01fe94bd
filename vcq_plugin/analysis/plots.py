"""The paper's Fig. 2(a) (entropy cliff) and Fig. 2(b) (K(i) curves), PNG + SVG (matplotlib Agg)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._errors import check_int
from .._io import atomic_path
from ..schedule import CodebookSchedule

__all__ = ["plot_entropy_cliff", "plot_schedules", "entropy_cliff_figure", "schedules_figure"]


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


def entropy_cliff_figure(
    curves: Sequence[dict[str, Any]],
    max_positions: int = 32,
    title: str = "Entropy cliff: remaining budget R(i) and measured H(x_i | x_<i)",
    tolerance: float | None = None,
) -> Any:
    """The matplotlib Figure of :func:`plot_entropy_cliff` (not saved)."""
    if not curves:
        raise ValueError("curves must contain at least one curve")
    max_positions = check_int("max_positions", max_positions, minimum=1)
    length = max(len(c[key]) for c in curves for key in ("conditional", "remaining_budget") if c.get(key) is not None)
    marks = [c.get(key) for c in curves for key in ("istar", "measured_istar") if c.get(key) is not None]
    shown = min(length, max([max_positions] + [m + 1 for m in marks]))  # every i* mark stays in view
    joint = [c for c in curves if c.get("prefix_entropy") is not None]
    fig = _figure((12.5, 4.8) if joint else (8.0, 4.8))
    ax, ax_joint = fig.subplots(1, 2, width_ratios=[1.6, 1]) if joint else (fig.subplots(), None)
    colors = _colors()
    meas_rule = "" if tolerance is None else f" (prefix entropy within {tolerance:g} bit of log2 N)"
    for j, c in enumerate(curves):
        color = colors[j % len(colors)]
        name = c["name"]
        h = None
        if c.get("conditional") is not None:
            h = np.asarray(c["conditional"], dtype=np.float64)[:shown]
            ax.plot(np.arange(1, h.size + 1), h, "-o", ms=3, color=color, label=f"{name}: measured H(x_i | x_<i)")
        if c.get("remaining_budget") is not None:
            r = np.clip(np.asarray(c["remaining_budget"], dtype=np.float64)[:shown], 0.0, None)
            ax.plot(np.arange(1, r.size + 1), r, "--", color=color, alpha=0.8, label=f"{name}: budget R(i)")
        if "istar" in c:
            if c["istar"] is not None:
                ax.axvline(c["istar"], ls=":", lw=1.5, color=color, alpha=0.8,
                           label=f"{name}: i* computed (Eq. 2) = {c['istar']}")
            else:
                ax.plot([], [], ls=":", color=color, label=f"{name}: i* computed (Eq. 2) never reached")
        if "measured_istar" in c:
            m = c["measured_istar"]
            if m is not None:
                y = float(h[m - 1]) if h is not None and m <= h.size else 0.0
                ax.plot([m], [y], marker="*", ms=13, ls="none", color=color, markeredgecolor="black",
                        label=f"{name}: i* measured = {m}{meas_rule}")
            else:
                ax.plot([], [], marker="*", ls="none", color=color,
                        label=f"{name}: i* measured not reached{meas_rule}")
    ax.set_xlabel("position i (1-based)")
    ax.set_ylabel("bits")
    ax.set_xlim(0.5, shown + 0.5)
    ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes: never on a curve
    if ax_joint is not None:
        _prefix_entropy_panel(ax_joint, curves, colors, shown, tolerance)
    return fig


def _prefix_entropy_panel(ax: Any, curves: Sequence[dict[str, Any]], colors: list[str], shown: int,
                          tolerance: float | None) -> None:
    """Right panel: prefix entropy H(x_<=i) and capacity C(i) against log2 N, where the measured i* is read."""
    for j, c in enumerate(curves):
        if c.get("prefix_entropy") is None:
            continue
        color = colors[j % len(colors)]
        h = np.asarray(c["prefix_entropy"], dtype=np.float64)[:shown]
        ax.plot(np.arange(1, h.size + 1), h, "-o", ms=3, color=color, label=f"{c['name']}: H(x_<=i)")
        if c.get("capacity") is not None:
            cap = np.asarray(c["capacity"], dtype=np.float64)[:shown]
            ax.plot(np.arange(1, cap.size + 1), cap, "--", color=color, alpha=0.6, label=f"{c['name']}: capacity C(i)")
        if c.get("log2_num_samples") is not None:
            top = float(c["log2_num_samples"])
            ax.axhline(top, color=color, lw=0.8, alpha=0.7)
            if tolerance:
                ax.axhspan(top - tolerance, top, color=color, alpha=0.12)
        m = c.get("measured_istar")
        if m is not None and m <= h.size:
            ax.plot([m], [h[m - 1]], marker="*", ms=13, ls="none", color=color, markeredgecolor="black")
    tops = [float(c["log2_num_samples"]) for c in curves if c.get("log2_num_samples") is not None]
    if tops:
        ax.set_ylim(0.0, 1.25 * max(tops))  # the capacity C(i) grows far beyond log2 N: clip it
    band = "" if not tolerance else f", band = {tolerance:g} bit below it"
    ax.set_title(f"Prefix entropy vs log2 N (line{band}); star = measured i*", fontsize=9)
    ax.set_xlabel("prefix length i (1-based)")
    ax.set_ylabel("bits")
    ax.set_xlim(0.5, shown + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)


def plot_entropy_cliff(
    curves: Sequence[dict[str, Any]],
    out_stem: str,
    max_positions: int = 32,
    title: str = "Entropy cliff: remaining budget R(i) and measured H(x_i | x_<i)",
    formats: Sequence[str] = ("png", "svg"),
    tolerance: float | None = None,
) -> list[str]:
    """Fig. 2(a): one colour per token set; solid = measured conditional entropy, dashed = R(i).

    Each curve is a dict with ``name`` and any of ``conditional`` (bits [L]),
    ``remaining_budget`` (bits [L]; displayed clipped at 0), ``istar`` (the computed i* of Eq. 2,
    1-based: a dotted vertical line) and ``measured_istar`` (1-based: a star on the measured
    curve); each i* has its own legend entry, also when it is ``None`` (never reached). With
    ``prefix_entropy`` (bits [L]), ``log2_num_samples`` and optionally ``capacity`` (C(i), bits [L])
    a right panel shows where the prefix entropy reaches log2 N, which defines the measured i*. Positions are
    1-based; the first ``max_positions`` are shown, more if needed to keep every i* in view.
    ``tolerance`` (bits) is quoted in the measured i*'s legend entry. Returns the written paths.
    """
    return _save(entropy_cliff_figure(curves, max_positions, title, tolerance), out_stem, formats)


def schedules_figure(
    schedules: dict[str, CodebookSchedule | str | dict],
    log_scale: bool = True,
    title: str = "Codebook size K(i) per position",
) -> Any:
    """The matplotlib Figure of :func:`plot_schedules` (not saved)."""
    if not schedules:
        raise ValueError("schedules must contain at least one schedule")
    fig = _figure((6.5, 4.0))
    ax = fig.subplots()
    for name, s in schedules.items():
        sched = CodebookSchedule.from_spec(s)
        ax.plot(np.arange(1, sched.seq_len + 1), sched.sizes.numpy(), label=f"{name} (mean K {sched.mean_size:.0f})")
    if log_scale:
        ax.set_yscale("log", base=2)
    ax.set_xlabel("position i (1-based)")
    ax.set_ylabel("K(i)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_schedules(
    schedules: dict[str, CodebookSchedule | str | dict],
    out_stem: str,
    log_scale: bool = True,
    title: str = "Codebook size K(i) per position",
    formats: Sequence[str] = ("png", "svg"),
) -> list[str]:
    """Fig. 2(b): K(i) against the 1-based position i for each named schedule. Returns the paths."""
    return _save(schedules_figure(schedules, log_scale, title), out_stem, formats)
