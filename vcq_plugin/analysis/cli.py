"""`vcq table1`, `vcq advise` and `vcq cliff` (added to the `vcq` command by vcq_plugin.cli)."""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import numpy as np

from ..schedule import CodebookSchedule

__all__ = ["add_commands"]


def _cmd_table1(args: argparse.Namespace) -> int:
    from .theory import table1, table1_thresholds

    print(f"Paper Table 1: i* = ceil(log2 N / log2 K) (Eq. 1), K = {args.k} ({math.log2(args.k):.2f} bits/position)")
    print(f"{'dataset':<14} {'type':<20} {'N':>14} {'log2 N':>7} {'i*':>3}")
    for r in table1(args.k):
        print(f"{r['dataset']:<14} {r['type']:<20} {r['num_samples']:>14,.0f} {r['log2_num_samples']:>7.1f} {r['istar']:>3}")
    print(f"\nThresholds: log2 N must exceed m log2 K to move i* from m to m+1 (x = multiples of N={args.reference:,})")
    print(f"{'i*':>6} {'log2 N':>7} {'N':>12} {'x reference':>14}")
    for r in table1_thresholds(args.k, steps=args.steps, reference=args.reference):
        print(f"{r['istar_from']:>2}->{r['istar_to']:<2} {r['log2_num_samples']:>7.1f} {r['num_samples']:>12.3g} "
              f"{r['reference_multiple']:>14.4g}")
    return 0


def _cmd_advise(args: argparse.Namespace) -> int:
    from .theory import advise

    rows = advise(args.num_samples, args.k_max, k_min=args.k_min, seq_len=args.seq_len, target_istar=args.target_istar)
    print(f"N = {args.num_samples:,.0f} (log2 N = {math.log2(args.num_samples):.2f} bits), K_max = {args.k_max}, "
          f"K_min = {args.k_min}, L = {args.seq_len}: schedules with computed i* >= {args.target_istar}, "
          "highest mean K (least capacity given up) first")
    if not rows:
        print("none: no constant/linear/cosine/power(p <= 10) schedule reaches the target; lower --target-istar, "
              "raise --seq-len or lower --k-min")
        return 1
    shown = [r for r in rows if r["best_in_family"] or args.all]
    print(f"{'schedule':<16} {'i*':>4} {'mean K':>9} {'BPP':>7}")
    for r in shown:
        print(f"{r['name']:<16} {str(r['istar']):>4} {r['mean_size']:>9.1f} {r['bpp']:>7.4f}")
    best = shown[0]
    print(f"recommended: {best['name']} (schedule {json.dumps(best['schedule'])})")
    return 0


def _load_array(path: str, what: str) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.endswith((".pt", ".pth")):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            tensors = {k: v for k, v in obj.items() if hasattr(v, "ndim") and v.ndim == 2}
            if len(tensors) != 1:
                raise ValueError(
                    f"{what} file {path} holds a dict; expected exactly one 2-D tensor in it, found {sorted(tensors)}"
                )
            obj = next(iter(tensors.values()))
        return obj
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # truncated file, not a .npy, pickled objects
        raise ValueError(f"{what} file {path} is not a readable .npy array ({e})") from None


def _read_schedule_json(path: str) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f"schedule file not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule file {path} is not valid JSON ({e})") from None


def _cliff_schedule(args: argparse.Namespace, seq_len: int) -> tuple[CodebookSchedule, str]:
    """The schedule of ``vcq cliff`` and where it came from, through the one builder
    (:meth:`CodebookSchedule.from_spec`): an option that does not apply or disagrees is an error."""
    given = {k: v for k, v in (("k_min", args.k_min), ("k_max", args.k_max), ("seq_len", args.seq_len),
                               ("power", args.power)) if v is not None}
    if args.schedule is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(args.tokens)), "schedule.json")
        if os.path.exists(beside):
            spec, source = _read_schedule_json(beside), beside
        elif args.k_max is None:
            raise ValueError(
                f"no schedule.json beside {args.tokens} ({beside}): pass --k-max (and --schedule NAME, default "
                "vcq_cosine) or --schedule FILE.json; K_max is never guessed"
            )
        else:
            spec, source = "vcq_cosine", "--k-max with the default --schedule vcq_cosine"
    elif args.schedule.endswith(".json"):
        spec, source = _read_schedule_json(args.schedule), args.schedule
    else:
        if args.k_max is None:
            raise ValueError(f"--schedule {args.schedule} needs --k-max (the largest codebook size); K_max is never "
                             "guessed")
        spec, source = args.schedule, "--schedule " + args.schedule
    if isinstance(spec, str) or (isinstance(spec, dict) and "seq_len" not in spec and spec.get("kind") != "explicit"):
        given.setdefault("seq_len", seq_len)  # L of the tokens unless the description fixes it
    return CodebookSchedule.from_spec(spec, **given), source


def _cmd_cliff(args: argparse.Namespace) -> int:
    from .report import cliff_report, format_table

    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is an existing file; give a folder for report.json and the figures")
    tokens = _load_array(args.tokens, "tokens")
    if getattr(tokens, "ndim", 0) != 2:
        raise ValueError(f"tokens must be a 2-D (N, L) array of token ids, got shape {getattr(tokens, 'shape', None)}")
    sched, source = _cliff_schedule(args, int(tokens.shape[1]))
    labels = _load_array(args.labels, "labels") if args.labels else None
    codebook = _load_array(args.codebook, "codebook") if args.codebook else None
    if (labels is None) != (codebook is None):
        raise ValueError("the linear probe needs both --labels and --codebook (or neither)")
    if args.probe_bits is not None and labels is None:
        raise ValueError("--probe-bits sets the probe at equal capacity: it needs --labels and --codebook")
    name = args.name or os.path.splitext(os.path.basename(args.tokens))[0]
    print(f"schedule {sched!r} (from {source})")
    report = cliff_report(
        {name: (tokens, sched)},
        args.out,
        labels=None if labels is None else np.asarray(labels),
        codebooks=codebook,
        num_samples=args.num_samples,
        tolerance=args.tolerance,
        probe_k=args.probe_k,
        probe_bits=args.probe_bits,
        miller_madow=args.miller_madow,
        progress=not args.no_progress,
    )
    print(format_table(report))
    print(f"wrote {os.path.join(args.out, 'report.json')} and {', '.join(report['files']['plots'])}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``table1``, ``advise`` and ``cliff`` to the ``vcq`` command's subparsers."""
    p = subparsers.add_parser("table1", help="paper Table 1: dataset sizes -> i* for a constant codebook, thresholds")
    p.add_argument("--k", type=int, default=16384, help="constant codebook size K (default 16384)")
    p.add_argument("--steps", type=int, default=4, help="how many i* thresholds to list")
    p.add_argument("--reference", type=int, default=1_281_167, help="dataset size thresholds are expressed in")
    p.set_defaults(func=_cmd_table1)

    p = subparsers.add_parser("advise", help="schedules reaching a target i* while keeping mean K highest")
    p.add_argument("--num-samples", type=float, required=True, help="training-set size N")
    p.add_argument("--k-max", type=int, required=True)
    p.add_argument("--k-min", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--target-istar", type=int, required=True, help="computed i* (Eq. 2) to reach at least")
    p.add_argument("--all", action="store_true", help="list every sufficient power, not just the smallest")
    p.set_defaults(func=_cmd_advise)

    from .report import MEASURED_ISTAR

    p = subparsers.add_parser(
        "cliff", help="measure the entropy cliff of a token dataset: report.json + Fig. 2(a)/(b) plots",
        description="Measure the entropy cliff of an (N, L) token dataset and compare it with Eq. 2. The "
                    + MEASURED_ISTAR + ".",
    )
    p.add_argument("tokens", metavar="TOKENS.npy", help="(N, L) integer token ids (.npy, memory-mapped)")
    p.add_argument("--labels", metavar="LABELS.npy", help="(N,) class labels, for the first-k linear probe")
    p.add_argument("--codebook", metavar="CODEBOOK.npy|.pt", help="(K_max, D) code vectors, for the probe")
    p.add_argument("--schedule", default=None, metavar="NAME|FILE.json",
                   help="K(i): a registry name (vcq_cosine, vcq_linear, vcq_power, vcq_power2.5, constant; needs "
                        "--k-max) or a .json file holding CodebookSchedule.to_dict(). Default: schedule.json beside "
                        "TOKENS when present (as the recipes write it), else vcq_cosine with --k-max")
    p.add_argument("--k-max", type=int, default=None,
                   help="largest codebook size; required unless the schedule comes from a .json file")
    p.add_argument("--k-min", type=int, default=None, help="smallest size of a vcq_* schedule (default 2; "
                                                           "refused for constant)")
    p.add_argument("--seq-len", type=int, default=None, help="default: the tokens' L")
    p.add_argument("--power", type=float, default=None, help="exponent for --schedule vcq_power (refused otherwise)")
    p.add_argument("--num-samples", type=float, default=None,
                   help="N for the theory (computed i*, Prop. 1, R(i)); default: rows of TOKENS. The measured i* "
                        "always uses the rows measured")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="bits: measured i* = first prefix length whose prefix entropy is within this of log2 N "
                        "(default 0.5)")
    p.add_argument("--probe-k", type=int, default=10, help="leading positions the probe sees (default 10)")
    p.add_argument("--probe-bits", type=float, default=None,
                   help="also probe at equal capacity: k chosen so that sum_{j<k} log2 K(j) is closest to this")
    p.add_argument("--miller-madow", action="store_true", help="Miller-Madow bias-corrected entropies")
    p.add_argument("--name", default=None, help="name of the token set (default: file stem)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.set_defaults(func=_cmd_cliff)
