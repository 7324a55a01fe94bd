"""``collect``: the paper's Table 4 / Table 6 layout from full-scale runs (issue 13, item 5).

    python recipes/run_study.py collect RUN_DIR... [--out-json T.json] [--out-md T.md]

Each RUN_DIR is one trained tokenizer + AR model (one seed of one arm) and holds:

    schedule.json      the tokenizer's CodebookSchedule.to_dict() (required: it names the row)
    eval_cfg.json      `vcq eval --out` of the samples drawn with guidance (gFID, IS, precision, recall)
    eval_nocfg.json    `vcq eval --out` of the samples drawn without guidance (gFID w/o CFG)
    recon_eval.json    `vcq recon-eval --out` on the validation set (PSNR, rFID)       [optional]
    probe.json         first_k_linear_probe results, one object or a list (k, top1, top5) [optional]

Runs whose schedules have the same K(i) are seeds of one row: each cell is the mean and 95 %
t-interval over them (``recipes.study.verdict.t_interval``), beside the paper's number for that
schedule. A file that is missing leaves its cells empty; a file that is present but not what
``vcq`` writes is an error naming the file. Evaluations that are not ADM-comparable (random or
non-pool_3 features, fewer than 50,000 samples) are flagged in the table's notes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vcq_plugin._io import atomic_write_text
from vcq_plugin.schedule import CodebookSchedule

from .paper import TABLE6, table4_row_for_schedule
from .verdict import INTERVAL_METHOD, Interval, t_interval

SCHEDULE_FILE = "schedule.json"
EVAL_FILES = {"cfg": "eval_cfg.json", "nocfg": "eval_nocfg.json"}
RECON_FILE = "recon_eval.json"
PROBE_FILE = "probe.json"
ADM_SAMPLES = 50_000


class CollectError(ValueError):
    """A run folder or one of its files is not what ``collect`` reads; the message names the file."""


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CollectError(f"{path}: cannot be read ({e})") from None

    def bad_constant(name: str) -> Any:
        raise CollectError(f"{path}: not strict JSON ({name} is not a JSON number; use null plus a reason)")

    try:
        return json.loads(text, parse_constant=bad_constant)
    except json.JSONDecodeError as e:
        raise CollectError(f"{path}: not valid JSON ({e})") from None


def _number(path: Path, obj: dict, key: str, *, required: bool) -> float | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise CollectError(f"{path}: has no {key!r} (is it the JSON `vcq eval --out` / `vcq recon-eval --out` "
                               f"writes? keys: {sorted(obj)})")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CollectError(f"{path}: {key!r} must be a finite number, got {v!r}")
    return float(v)


@dataclass
class RunRecord:
    """One run folder, read."""

    path: Path
    schedule: CodebookSchedule
    gen: dict[str, dict[str, float | None]] = field(default_factory=dict)   # "cfg"/"nocfg" -> metric -> value
    recon: dict[str, float | None] = field(default_factory=dict)
    probes: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_run(run_dir: str | Path) -> RunRecord:
    """Read one RUN_DIR (see the module docstring); raises CollectError naming the bad file."""
    root = Path(run_dir)
    if not root.is_dir():
        raise CollectError(f"{root}: not a folder (collect takes run folders holding {SCHEDULE_FILE} and eval JSON)")
    sched_path = root / SCHEDULE_FILE
    if not sched_path.is_file():
        raise CollectError(f"{root}: no {SCHEDULE_FILE} (the tokenizer's CodebookSchedule.to_dict(); it names the row)")
    spec = _read_json(sched_path)
    try:
        schedule = CodebookSchedule.from_spec(spec)
    except (TypeError, ValueError) as e:
        raise CollectError(f"{sched_path}: not a codebook schedule ({e})") from None
    rec = RunRecord(root, schedule)
    for mode, name in EVAL_FILES.items():
        p = root / name
        if not p.is_file():
            continue
        d = _read_json(p)
        if not isinstance(d, dict):
            raise CollectError(f"{p}: expected the JSON object `vcq eval --out` writes")
        rec.gen[mode] = {"fid": _number(p, d, "fid", required=True), "is": _number(p, d, "is_mean", required=False),
                         "precision": _number(p, d, "precision", required=False),
                         "recall": _number(p, d, "recall", required=False)}
        if d.get("comparable") is False:
            rec.notes.append(f"{p.name}: not ADM-comparable ({d.get('feature_extractor')}, layer {d.get('feature_layer')})")
        n = d.get("num_samples")
        if isinstance(n, int) and n < ADM_SAMPLES:
            rec.notes.append(f"{p.name}: {n} samples (the ADM protocol uses {ADM_SAMPLES}; FID is biased upwards)")
    p = root / RECON_FILE
    if p.is_file():
        d = _read_json(p)
        if not isinstance(d, dict):
            raise CollectError(f"{p}: expected the JSON object `vcq recon-eval --out` writes")
        rec.recon = {"psnr": _number(p, d, "psnr", required=False), "rfid": _number(p, d, "rfid", required=False)}
        if rec.recon["psnr"] is None and rec.recon["rfid"] is None:
            raise CollectError(f"{p}: has neither 'psnr' nor 'rfid' (keys: {sorted(d)})")
    p = root / PROBE_FILE
    if p.is_file():
        d = _read_json(p)
        items = d if isinstance(d, list) else [d]
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("k"), int):
                raise CollectError(f"{p}: each probe result needs an integer 'k' and 'top1' (first_k_linear_probe's dict)")
            rec.probes.append({"k": item["k"], "top1": _number(p, item, "top1", required=True),
                               "top5": _number(p, item, "top5", required=False)})
    if not rec.gen and not rec.recon and not rec.probes:
        raise CollectError(f"{root}: none of {', '.join(list(EVAL_FILES.values()) + [RECON_FILE, PROBE_FILE])} found")
    return rec


def schedule_label(s: CodebookSchedule) -> str:
    if s.is_constant:
        return f"Constant (K={s.k_max})"
    name = {"linear": "VCQ-Linear", "cosine": "VCQ-Cosine", "power": f"VCQ-Power (p={s.power:g})"}.get(s.kind, "VCQ-explicit")
    return f"{name} ({s.k_min}..{s.k_max}, L={s.seq_len})"


def _iv(values: list[float | None]) -> dict:
    return t_interval(values).to_dict()


def collect(run_dirs: Sequence[str | Path], *, image_size: int = 256) -> dict:
    """Table 4 / Table 6 rows (mean and 95 % t-interval over the runs of each schedule, paper beside).

    Returns ``{"table4": [...], "table6": [...], "runs": [...], "notes": [...], "interval": ...}``
    (strict-JSON-ready: unmeasured cells are None).
    """
    if not run_dirs:
        raise CollectError("collect needs at least one RUN_DIR")
    records = [read_run(d) for d in run_dirs]
    groups: dict[CodebookSchedule, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.schedule, []).append(r)
    table4, table6 = [], []
    for sched, runs in sorted(groups.items(), key=lambda kv: (not kv[0].is_constant, -kv[0].mean_size)):
        paper = table4_row_for_schedule(sched.to_dict())

        def col(getter):
            return _iv([getter(r) for r in runs])

        table4.append({
            "schedule": schedule_label(sched), "schedule_spec": sched.to_dict(), "runs": len(runs),
            "mean_k": sched.mean_size, "bpp": sched.bits_per_pixel(image_size),
            "psnr": col(lambda r: r.recon.get("psnr")), "rfid": col(lambda r: r.recon.get("rfid")),
            "gfid": col(lambda r: r.gen.get("cfg", {}).get("fid")),
            "gfid_nocfg": col(lambda r: r.gen.get("nocfg", {}).get("fid")),
            "is": col(lambda r: r.gen.get("cfg", {}).get("is")),
            "precision": col(lambda r: r.gen.get("cfg", {}).get("precision")),
            "recall": col(lambda r: r.gen.get("cfg", {}).get("recall")),
            "paper": None if paper is None else {"label": paper.label, "mean_k": paper.mean_k, "bpp": paper.bpp,
                                                 "psnr": paper.psnr, "rfid": paper.rfid, "gfid": paper.gfid,
                                                 "gfid_nocfg": paper.gfid_nocfg},
        })
        ks = sorted({p["k"] for r in runs for p in r.probes})
        for k in ks:
            def probe(r, key, k=k):
                return next((p[key] for p in r.probes if p["k"] == k), None)
            paper6 = None
            if paper is not None:
                paper6 = next(({"top1": t1, "top5": t5} for _, arm, kk, t1, t5 in TABLE6
                               if arm == paper.study_arm and kk == k), None)
            table6.append({"schedule": schedule_label(sched), "k": k, "runs": len(runs),
                           "top1": col(lambda r: probe(r, "top1")), "top5": col(lambda r: probe(r, "top5")),
                           "paper": paper6})
    return {"table4": table4, "table6": table6, "interval": INTERVAL_METHOD, "image_size": image_size,
            "runs": [{"path": str(r.path), "schedule": schedule_label(r.schedule)} for r in records],
            "notes": [n for r in records for n in (f"{r.path}: {x}" for x in r.notes)]}


def _cell(iv: dict, digits: int = 2, scale: float = 1.0) -> str:
    i = Interval(**iv)
    if i.mean is None:
        return "-"
    if not i.defined:
        return f"{i.mean * scale:.{digits}f}"
    return f"{i.mean * scale:.{digits}f} [{i.low * scale:.{digits}f}, {i.high * scale:.{digits}f}]"


def _paper(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_markdown(c: dict) -> str:
    """The collected tables as Markdown: ours (mean [95% interval], n runs) | paper."""
    lines = ["## Table 4 (in kind): schedules under the same tokenizer + AR recipe", "",
             "| Schedule | runs | mean K | BPP | PSNR | PSNR (paper) | rFID | rFID (paper) | gFID | gFID (paper) "
             "| gFID w/o CFG | w/o CFG (paper) |", "|" + "---|" * 12]
    for r in c["table4"]:
        p = r["paper"] or {}
        lines.append(f"| {r['schedule']} | {r['runs']} | {r['mean_k']:.1f} | {r['bpp']:.3f} | {_cell(r['psnr'])} | "
                     f"{_paper(p.get('psnr'))} | {_cell(r['rfid'])} | {_paper(p.get('rfid'))} | {_cell(r['gfid'])} | "
                     f"{_paper(p.get('gfid'))} | {_cell(r['gfid_nocfg'])} | {_paper(p.get('gfid_nocfg'))} |")
    lines += ["", "## Table 6 (in kind): linear probe on the first k tokens (top-1 / top-5, %)", "",
              "| Tokenizer | k | runs | Top-1 | Top-1 (paper) | Top-5 | Top-5 (paper) |", "|" + "---|" * 7]
    for r in c["table6"]:
        p = r["paper"] or {}
        lines.append(f"| {r['schedule']} | {r['k']} | {r['runs']} | {_cell(r['top1'], 1, 100)} | "
                     f"{_paper(p.get('top1'), 1, 100)} | {_cell(r['top5'], 1, 100)} | {_paper(p.get('top5'), 1, 100)} |")
    lines += ["", f"Cells: mean [{c['interval']}] over the runs of a schedule; a single run shows its value.",
              f"BPP at {c['image_size']} x {c['image_size']}."]
    if c["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in c["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``collect RUN_DIR... [--out-json F] [--out-md F] [--image-size S]``; prints the Markdown."""
    ap = argparse.ArgumentParser(prog="run_study.py collect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out-json", default=None, help="write the tables as strict JSON here")
    ap.add_argument("--out-md", default=None, help="write the Markdown tables here")
    ap.add_argument("--image-size", type=int, default=256, help="image side for BPP (default 256, the paper's)")
    args = ap.parse_args(argv)
    try:
        c = collect(args.run_dirs, image_size=args.image_size)
    except CollectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = format_markdown(c)
    if args.out_json:
        atomic_write_text(args.out_json, json.dumps(c, indent=1, allow_nan=False) + "\n")
    if args.out_md:
        atomic_write_text(args.out_md, md)
    print(md, end="")
    return 0
