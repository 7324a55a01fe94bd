"""Labelled image grids, the result tables (with every column explained once) and summary.md."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from vcq_plugin._io import Written, atomic_write_bytes, atomic_write_text

MIN_PIXELS = 64  # figures show every sample at least this many pixels wide


# ====================================================================== figures
def _font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def labelled_grid(images: torch.Tensor | np.ndarray, ncols: int, row_labels: Sequence[str], *,
                  min_pixels: int = MIN_PIXELS, title: str | None = None):
    """A PIL image: ``images`` (N, 3, H, W) in [0, 1], ``ncols`` per row, each row labelled on the left;
    samples are upscaled (nearest) to at least ``min_pixels`` wide."""
    from PIL import Image, ImageDraw

    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).detach().float()
    x = x.clamp(0, 1)
    n, _, h, w = x.shape
    nrows = math.ceil(n / ncols)
    if len(row_labels) != nrows:
        raise ValueError(f"{nrows} rows of {ncols} images but {len(row_labels)} row labels")
    scale = max(1, math.ceil(min_pixels / min(h, w)))
    ch, cw = h * scale, w * scale
    font = _font(14)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([int(probe.textlength(s, font=font)) for s in row_labels] + [0]) + 12
    pad, top = 2, (22 if title else 0)
    width = max(label_w + ncols * (cw + pad) + pad, int(probe.textlength(title, font=font)) + 8 if title else 0)
    canvas = Image.new("RGB", (width, top + nrows * (ch + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        tile = Image.fromarray(arr[i]).resize((cw, ch), Image.NEAREST)
        canvas.paste(tile, (label_w + pad + c * (cw + pad), top + pad + r * (ch + pad)))
    for r, label in enumerate(row_labels):
        draw.text((4, top + pad + r * (ch + pad) + ch // 2 - 7), label, fill=(0, 0, 0), font=font)
    return canvas


def png_writer(image) -> Any:
    """``write(f)`` for :meth:`StageContext.save_with` / ``vcq_plugin._io.atomic_write``."""
    return lambda f: image.save(f, format="PNG")


def save_png(path: str | Path, image) -> Written:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# ====================================================================== text
def describe_schedule(s: Mapping[str, Any] | Any) -> str:
    """``K=256`` for a constant schedule, ``cosine K=2..256`` (``power p=2.5 K=2..256``) otherwise."""
    d = s if isinstance(s, Mapping) else s.to_dict()
    kind = d.get("kind")
    if kind == "constant":
        return f"K={d['k_max']}"
    if kind == "explicit":
        sizes = d.get("sizes") or [0]
        return f"explicit K={min(sizes)}..{max(sizes)}"
    extra = f" p={d['power']:g}" if kind == "power" else ""
    return f"{kind}{extra} K={d['k_min']}..{d['k_max']}"


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    return [f"- **{name}**: {text}" for name, text in items]


def chance_levels(num_classes: int) -> tuple[float, float]:
    """Accuracy of guessing: top-1 = 1/C, top-5 = min(5, C)/C."""
    return 1.0 / num_classes, min(5, num_classes) / num_classes


def tokenizer_table(tokenizers: Mapping[str, dict], tokens: Mapping[str, dict], report: Mapping[str, Any],
                    num_classes: int) -> list[str]:
    """Markdown table + legend: schedule, i* (computed, measured), PSNR, codes used, probe vs chance."""
    sets = report["sets"]
    k = report.get("probe_k")
    c1, c5 = chance_levels(num_classes)
    header = ["tokenizer", "schedule", "mean K", "i* Eq. 2", "i* measured", "PSNR (dB)", "PSNR untrained (dB)",
              "codes used", f"probe top-1 (chance {c1:.3f})", f"probe top-5 (chance {c5:.3f})"]
    rows = []
    for name, tok in tokenizers.items():
        s = sets.get(name, {})
        probe = s.get("probe") or {}
        used = tokens.get(name, {})
        rows.append([name, describe_schedule(s.get("schedule") or tok["schedule"]), _fmt(s.get("mean_size"), ".1f"),
                     _fmt(s.get("computed_istar")), _fmt(s.get("measured_istar")), _fmt(tok.get("psnr_heldout"), ".2f"),
                     _fmt(tok.get("psnr_untrained"), ".2f"),
                     f"{used.get('codes_used', '—')} / {used.get('k_max', '—')}",
                     _fmt(probe.get("top1")), _fmt(probe.get("top5"))])
    legend = _legend([
        ("schedule", "K(i), the codebook size at each position: `K=256` is one constant size, `cosine K=2..256` "
                     "grows from K(0) = 2 to K(L-1) = 256 (paper Eq. 3)"),
        ("mean K", "the mean of K(i) over the L positions"),
        ("i* Eq. 2", "computed transition position: the smallest count of positions whose capacity "
                     "sum log2 K(i) reaches log2 N (N = number of images); assumes every code is used uniformly, "
                     "so it is a bound, not a prediction"),
        ("i* measured", f"the first prefix length whose joint entropy H(x_<=i) = sum_j<=i H(x_j | x_<j), measured "
                        f"on the tokens, is within {report.get('tolerance_bits')} bit of log2 N: there the prefixes "
                        "have become unique and every later token is a function of the prefix (— when it never "
                        "is, e.g. duplicate images)"),
        ("PSNR", "reconstruction PSNR on the held-out images after training; **PSNR untrained** the same for "
                 "the freshly initialised tokenizer (training should raise it by several dB)"),
        ("codes used", "distinct codes that appear anywhere in the tokens / K_max"),
        ("probe top-1 / top-5", f"accuracy of a linear classifier of the image class from the code embeddings of "
                                f"the first {k} positions (held-out split); chance = guessing: top-1 = 1/C, "
                                f"top-5 = min(5, C)/C with C = {num_classes} classes"),
    ])
    return _table(header, rows) + [""] + legend


def ar_table(ar: Mapping[str, dict]) -> list[str]:
    header = ["tokens", "params", "steps", "held-out NLL (bits/token)", "train NLL (bits/token)",
              "uniform over K(i) (bits/token)", "held-out bits/image", "training loss first → last (nats)"]
    rows = [[name, f"{a['params']:,}", str(a["steps"]), _fmt(a["heldout"]["bits_per_token"]),
             _fmt(a["train"]["bits_per_token"]), _fmt(a.get("chance_bits_per_token")),
             _fmt(a["heldout"]["bits_per_image"], ".1f"),
             f"{_fmt(a.get('loss_first'))} → {_fmt(a.get('loss_last'))}"] for name, a in ar.items()]
    legend = _legend([
        ("held-out / train NLL", "next-token negative log-likelihood on the held-out / on training token sequences, "
                                 "in bits per token (lower is better; train far below held-out = memorising)"),
        ("uniform over K(i)", "the NLL of guessing uniformly among the K(i) codes allowed at each position, "
                              "mean log2 K(i): the chance level a trained model must beat"),
        ("held-out bits/image", "held-out NLL summed over the L positions"),
        ("training loss first → last", "mean training cross-entropy over the first and the last tenth of the logged "
                                       "steps"),
    ])
    return _table(header, rows) + [""] + legend


def samples_table(samples: Mapping[str, dict], num_classes: int) -> list[str]:
    c1, _ = chance_levels(num_classes)
    header = ["tokens", "samples", "every token < K(i)", f"class agreement (chance {c1:.3f})", "sampler", "grid"]
    rows = [[name, str(s["num"]), "yes" if s["tokens_valid"] else "**no**", _fmt(s.get("label_agreement")),
             f"`{s['sampler']}`", f"`{s['grid']}`"] for name, s in samples.items()]
    legend = _legend([
        ("every token < K(i)", "each sampled token lies in the codebook prefix its position may use"),
        ("class agreement", "fraction of samples whose nearest training image (pixel L2, decoded samples) has the "
                            "requested class; chance = 1/C"),
        ("grid", "one row per class, labelled"),
    ])
    return _table(header, rows) + [""] + legend


def write_summary(path: str | Path, *, data: Mapping[str, Any], tokenizer: Mapping[str, Any],
                  tokenizers: Mapping[str, dict], tokens: Mapping[str, dict], report: Mapping[str, Any],
                  ar: Mapping[str, dict], samples: Mapping[str, dict], warnings: Sequence[Any],
                  stages: Sequence[Mapping[str, Any]], config: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                  wall_s: float | None) -> Written:
    """summary.md from the stage records: the config they were made with, the tables, warnings, files."""
    sets = report["sets"]
    n = next(iter(sets.values()))["num_rows"] if sets else 0
    c = int(data["num_classes"])
    lines = [
        "# VCQ demo run summary", "",
        f"Data `{data['name']}` ({n} images, {data['image_size']}x{data['image_size']}, {c} classes), "
        f"L = {tokenizer['num_latent_tokens']} tokens, K_max = {tokenizer['codebook_size']}, "
        f"log2 N = {np.log2(max(n, 1)):.2f} bits, tokenizer {tokenizer['steps']} steps.", "",
    ]
    if warnings:
        lines += ["## Warnings", "", "This run is too small or too short for its numbers to mean much where it says "
                  "so below (README: *What the warnings mean*).", ""]
        lines += [f"- `{w.code}`: {w.message}" for w in warnings] + [""]
    lines += ["## Tokenizers and the entropy cliff", ""]
    lines += tokenizer_table(tokenizers, tokens, report, c)
    lines += ["", "Conditional entropy H(x_i | x_<i) per position i = 1..L (bits):", ""]
    for name, s in sets.items():
        lines.append(f"- {name}: " + " ".join(f"{x:.2f}" for x in s["conditional_entropy"]))
    if ar:
        lines += ["", "## AR models (class-conditional, next-token prediction)", ""] + ar_table(ar)
    if samples:
        lines += ["", "## Generation checks, side by side", ""] + samples_table(samples, c)
    if metrics and metrics.get("computed"):
        lines += ["", f"gFID (samples vs held-out images): {dict(metrics['gfid'])}; rFID (held-out reconstructions): "
                  f"{dict(metrics['rfid'])}. Few tiny images: for the pipeline, not comparable with the paper's "
                  "50k-sample ImageNet numbers."]
    else:
        lines += ["", "gFID / rFID / LPIPS need Inception / VGG weights that this run does not download; set "
                  "`metrics.inception_weights=<local pt_inception-2015-12-05 file>` to compute gFID / rFID here, "
                  "or use `vcq eval` / `vcq recon-eval`."]
    lines += ["", "## Provenance", "", "Each stage records the config values it depends on (`<stage>/stage.json`); "
              "the values below are those records, merged. `config.yaml` is the config this run folder was started "
              "with, `config_history/<n>.yaml` each command's.", ""]
    lines += _table(["stage", "status", "made by command", "seconds (last command)"],
                    [[f"`{s['stage']}`", s["status"], f"#{s['invocation']} (`config_history/{s['invocation']:03d}.yaml`)",
                      _fmt(s.get("seconds_last_command"), ".0f")] for s in stages])
    lines += ["", "```yaml"] + [f"{k}: {json.dumps(v)}" for k, v in sorted(config.items())]
    lines += ["```", "", "## Files", ""]
    for label, rel in [("reconstructions (original / each tokenizer)", "recon.png"),
                       ("entropy-cliff report", "cliff/report.json"), ("Fig. 2(a)", "cliff/fig2a_entropy_cliff.png"),
                       ("Fig. 2(b)", "cliff/fig2b_schedules.png")]:
        lines.append(f"- {label}: `{rel}`")
    for name in tokenizers:
        lines.append(f"- tokenizer {name}: `tokenizer_{name}/checkpoint.pt`, tokens `tokens/{name}/tokens.npy` "
                     f"(+ `labels.npy`, `codebook.npy`, `schedule.json`), reconstructions `tokenizer_{name}/recon.png`")
    if wall_s is not None:
        lines += ["", f"Wall time of this command: {wall_s:.0f} s (stages finished by an earlier command are skipped)."]
    return atomic_write_text(path, "\n".join(lines) + "\n")
