"""``vcq eval`` (gFID / IS / precision / recall / KID) and ``vcq recon-eval`` (PSNR / LPIPS / rFID)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .._io import atomic_write_text


def _check_out(path: str | None) -> None:
    """Refuse an --out that cannot be written, before any metric is computed."""
    if path is not None and os.path.isdir(path):
        raise ValueError(f"--out {path!r} is an existing folder; give the path of a JSON file to write")


def _write_json(obj: dict, path: str | None) -> None:
    """Strict JSON (no NaN / Infinity: the metrics put None plus a reason in ``not_computed``)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    if path is None:
        print(text)
        return
    out = atomic_write_text(path, text + "\n")
    summary = {k: v for k, v in obj.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(summary.items())))
    for key, why in sorted(obj.get("not_computed", {}).items()):
        print(f"{key}: {why}")
    print(f"wrote {out}", file=sys.stderr)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="JSON file to write (default: print to stdout)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--cache-dir", default=None, help="reference feature cache (default: $VCQ_METRICS_CACHE or "
                   "$TORCH_HOME/vcq_metrics_cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the reference cache")
    p.add_argument("--feature-layer", default="2048", choices=("64", "192", "768", "2048"),
                   help="Inception layer for FID/PRC/KID (2048 = pool_3, the ADM protocol)")
    p.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)  # tests only


def _cmd_eval(args: argparse.Namespace) -> int:
    from .fidelity import compute_generation_metrics

    _check_out(args.out)
    res = compute_generation_metrics(
        args.samples, args.ref, metrics=args.metrics, weights_path=args.weights,
        random_weights=args.random_weights, cache_dir=False if args.no_cache else args.cache_dir,
        batch_size=args.batch_size, device=args.device, reference_stats=args.reference_stats,
        feature_layer=args.feature_layer,
    )
    res.update(samples=str(args.samples), reference=str(args.ref))
    _write_json(res, args.out)
    return 0


def _cmd_recon(args: argparse.Namespace) -> int:
    from .fidelity import parse_metrics
    from .recon import RECON_METRICS, compute_reconstruction_metrics
    from .weights import MissingWeightsError, resolve_inception_weights, resolve_vgg16_weights

    _check_out(args.out)
    names = parse_metrics(args.metrics, RECON_METRICS)
    if not args.random_weights and "psnr" not in names:  # nothing to report if every network is missing
        missing = []
        for name, resolve, path in (("lpips", resolve_vgg16_weights, args.lpips_weights),
                                    ("rfid", resolve_inception_weights, args.inception_weights)):
            try:
                if name in names:
                    resolve(path)
            except MissingWeightsError as e:
                missing.append(str(e))
        if len(missing) == len(names):
            raise MissingWeightsError(" ".join(missing))
    res = compute_reconstruction_metrics(
        args.recon, args.orig, metrics=names, lpips_weights=args.lpips_weights,
        inception_weights=args.inception_weights, random_weights=args.random_weights,
        batch_size=args.batch_size, device=args.device, cache_dir=False if args.no_cache else args.cache_dir,
        feature_layer=args.feature_layer, missing_weights="skip",
    )
    res.update(reconstructions=str(args.recon), originals=str(args.orig))
    _write_json(res, args.out)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("eval", help="gFID / IS / precision / recall / KID of samples vs an ADM reference batch")
    p.add_argument("--samples", required=True, help="ADM .npz (arr_0 uint8 NHWC) or folder of images")
    p.add_argument("--ref", default=None, help="reference: ADM .npz (arr_0 and/or mu/sigma) or folder of images")
    p.add_argument("--metrics", default="fid,is,prc", help="comma list from fid,is,prc,kid (default fid,is,prc)")
    p.add_argument("--weights", default=None, help="Inception weights (else $VCQ_INCEPTION_WEIGHTS or torch hub cache)")
    p.add_argument("--reference-stats", default="auto", choices=("auto", "npz", "compute"),
                   help="FID reference statistics: stored mu/sigma (npz), from images (compute), or auto")
    _common(p)
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("recon-eval", help="PSNR / LPIPS / rFID of reconstructions vs originals")
    p.add_argument("--recon", required=True, help="reconstructions: .npz or folder (same order as --orig)")
    p.add_argument("--orig", required=True, help="originals: .npz or folder")
    p.add_argument("--metrics", default="psnr,lpips,rfid",
                   help="comma list from psnr,lpips,rfid (default all three). PSNR needs no network; LPIPS (VGG16) or "
                        "rFID (Inception) whose weights are not on disk is written as null with the reason in "
                        "not_computed, and the others are still computed")
    p.add_argument("--lpips-weights", default=None, help="VGG16 trunk (else $VCQ_VGG16_WEIGHTS or torch hub cache)")
    p.add_argument("--inception-weights", default=None, help="Inception weights for rFID")
    _common(p)
    p.set_defaults(func=_cmd_recon)
