"""The ``vcq`` command.

Subcommands are contributed by modules listed in ``_COMMAND_MODULES``; each exposes
``add_commands(subparsers)`` and sets ``func`` on its parsers (``func(args) -> int``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .schedule import KINDS, CodebookSchedule

_COMMAND_MODULES = ("vcq_plugin.analysis.cli", "vcq_plugin.metrics.cli")


def _cmd_schedule(args: argparse.Namespace) -> int:
    name = "constant" if args.kind == "constant" else f"vcq_{args.kind}"
    sched = CodebookSchedule.from_spec(name, k_min=args.k_min, k_max=args.k_max, seq_len=args.seq_len,
                                       power=2.5 if args.power is None and args.kind == "power" else args.power)
    print(sched)
    print(f"mean K = {sched.mean_size:.1f}   BPP ({args.image_size}x{args.image_size}) = "
          f"{sched.bits_per_pixel(args.image_size):.4f}")
    cap = sched.capacity_bits()
    if args.num_samples:
        print(f"N = {args.num_samples:g} (log2 N = {__import__('math').log2(args.num_samples):.2f} bits): "
              f"computed i* = {sched.transition_position(args.num_samples)}")
    print(f"{'i':>5} {'K(i)':>7} {'log2 K':>7} {'C(i) bits':>10}   (positions i are 1-based, as in the paper)")
    step = max(1, sched.seq_len // args.rows)
    for i in list(range(0, sched.seq_len, step)) + ([sched.seq_len - 1] if (sched.seq_len - 1) % step else []):
        print(f"{i + 1:>5} {int(sched.sizes[i]):>7} {float(sched.log2_sizes()[i]):>7.2f} {float(cap[i]):>10.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcq", description="Variable Codebook Size Quantization tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("schedule", help="print a codebook-size schedule K(i), its mean K, BPP and i*")
    p.add_argument("--kind", default="cosine", choices=[k for k in KINDS if k != "explicit"])
    p.add_argument("--k-min", type=int, default=None, help="smallest size (default 2; refused for constant)")
    p.add_argument("--k-max", type=int, default=16384)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--power", type=float, default=None, help="exponent of --kind power (default 2.5; refused otherwise)")
    p.add_argument("--num-samples", type=float, default=None, help="dataset size N, to print i*")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--rows", type=int, default=16, help="how many positions to print")
    p.set_defaults(func=_cmd_schedule)
    for mod_name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue
            raise
        mod.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:  # bad input or an unreadable / unwritable file: no traceback
        print(f"vcq {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
