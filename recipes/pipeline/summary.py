"""Image grids and the run's summary.md."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .rundir import save_bytes, save_text


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, upscale: int = 1) -> Path:
    """Write images (N, 3, H, W) in [0, 1] as one PNG grid (nearest-neighbour ``upscale``), atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    x = images.detach().float().clamp(0, 1)
    if upscale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=upscale, mode="nearest")
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=0.5)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return save_bytes(path, buf.getvalue())


def _first_k_bits(s: Mapping[str, Any], k: int | None) -> float:
    """Capacity sum_{i<k} log2 K(i) of a report set's first k positions (bits)."""
    from vcq_plugin.schedule import CodebookSchedule

    sched = CodebookSchedule.from_dict(dict(s["schedule"]))
    return float(sched.log2_sizes()[: int(k or 0)].sum())


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def write_summary(path: str | Path, *, cfg: Mapping[str, Any], tokenizers: Mapping[str, dict],
                  report: Mapping[str, Any], ar: Mapping[str, dict], samples: Mapping[str, dict],
                  wall_s: float | None, run_dir: Path, metrics: Mapping[str, Any] | None = None) -> Path:
    """summary.md: i* (computed and measured), PSNR, probe accuracy per tokenizer; AR NLL; files."""
    sets = report["sets"]
    n = next(iter(sets.values()))["num_rows"] if sets else 0
    lines = [
        "# VCQ demo run summary",
        "",
        f"Host `{cfg['host']}`, data `{cfg['data']['name']}` ({n} images, "
        f"{cfg['data']['image_size']}x{cfg['data']['image_size']}, {cfg['data']['num_classes']} classes), "
        f"L = {cfg['tokenizer']['num_latent_tokens']} tokens, K_max = {cfg['tokenizer']['codebook_size']}, "
        f"log2 N = {np.log2(max(n, 1)):.2f} bits.",
        "",
        "## Tokenizers and the entropy cliff",
        "",
        "| tokenizer | schedule | mean K | i* computed (Eq. 2) | i* measured | recon PSNR (dB, held-out) "
        f"| first-{report.get('probe_k')} probe top-1 | top-5 | chance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, tok in tokenizers.items():
        s = sets.get(name, {})
        probe = s.get("probe") or {}
        sched = s.get("schedule", {})
        kind = sched.get("kind", "?") + (f" {sched.get('k_min')}..{sched.get('k_max')}" if sched.get("kind") != "constant"
                                          else f" {sched.get('k_max')}")
        lines.append(
            f"| {name} | {kind} | {_fmt(s.get('mean_size'), '.1f')} | {_fmt(s.get('computed_istar'))} | "
            f"{_fmt(s.get('measured_istar'))} | {_fmt(tok.get('psnr_heldout'), '.2f')} | "
            f"{_fmt(probe.get('top1'))} | {_fmt(probe.get('top5'))} | {_fmt(probe.get('chance'))} |")
    lines += [
        "",
        f"The probe sees the code embeddings of the first {report.get('probe_k')} positions, whose capacity "
        "sum log2 K(i) is " + ", ".join(f"{name} {_first_k_bits(s, report.get('probe_k')):.1f} bits"
                                       for name, s in sets.items()) + ".",
        "",
        f"i* measured = number of positions before the first position whose conditional entropy "
        f"H(x_i | x_<i) falls below {report.get('threshold_bits')} bit (cliff/report.json has the definitions, "
        "per-position entropies, utilisation and the Prop. 1 bound). i* computed assumes every code is used "
        "uniformly, so it is a bound, not a prediction.",
        "",
        "Conditional entropy per position (bits):",
        "",
    ]
    for name, s in sets.items():
        h = " ".join(f"{x:.2f}" for x in s["conditional_entropy"])
        lines.append(f"- {name}: {h}")
    lines += ["", "## AR model (class-conditional, next-token prediction)", "",
              "| tokens | params | steps | held-out NLL (bits/token) | train NLL (bits/token) | held-out bits/image |",
              "|---|---|---|---|---|---|"]
    for name, a in ar.items():
        lines.append(f"| {name} | {a['params']:,} | {a['steps']} | {_fmt(a['heldout']['bits_per_token'])} | "
                     f"{_fmt(a['train']['bits_per_token'])} | {_fmt(a['heldout']['bits_per_image'], '.1f')} |")
    lines += ["", "## Samples", ""]
    for name, smp in samples.items():
        lines.append(f"- {name}: `{smp['grid']}` ({smp['num']} samples, one row per class, sampler "
                     f"`{smp['sampler']}`: {smp['sampler_repr']}); every token < K(i): **{smp['tokens_valid']}**")
        if smp.get("label_agreement") is not None:
            lines.append(f"  - nearest-training-image class agreement of the samples (decoded, pixel L2): "
                         f"{smp['label_agreement']:.3f} (chance {1 / cfg['data']['num_classes']:.3f})")
    if metrics and metrics.get("computed"):
        lines += ["", f"gFID (samples vs held-out images): {dict(metrics['gfid'])}; rFID (held-out "
                  f"reconstructions): {dict(metrics['rfid'])}. Few images at 16x16: for the pipeline, not "
                  "comparable with the paper's 50k-sample ImageNet numbers.", ""]
    else:
        lines += ["", "gFID / rFID / LPIPS need Inception / VGG weights that this run does not download; set "
                  "`metrics.inception_weights=<local pt_inception-2015-12-05 file>` to compute gFID / rFID here, "
                  "or use `vcq eval` / `vcq recon-eval`.", ""]
    lines += ["## Files", ""]
    for label, rel in [("config", "config.yaml"), ("report", "cliff/report.json"),
                       ("Fig. 2(a) plot", "cliff/fig2a_entropy_cliff.png"),
                       ("Fig. 2(b) plot", "cliff/fig2b_schedules.png")]:
        lines.append(f"- {label}: `{rel}`")
    for name in tokenizers:
        lines.append(f"- tokenizer {name}: `tokenizer_{name}/checkpoint.pt`, tokens `tokens/{name}/tokens.npy` "
                     f"(+ `labels.npy`, `codebook.npy`, `schedule.json`), reconstructions `tokenizer_{name}/recon.png`")
    if wall_s is not None:
        lines += ["", f"Wall time of this invocation: {wall_s:.0f} s (stages finished by an earlier invocation are skipped)."]
    return save_text(path, "\n".join(lines) + "\n")
