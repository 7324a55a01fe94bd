"""Warnings for runs too small or too short to mean anything (logged and listed in summary.md).

Each warning has a code that the README explains (*What the warnings mean*):

- ``short-run``: a stage trained for far fewer steps than the schema's default (< 1/4 of it);
- ``codebook-collapse``: a tokenizer uses few of its codes (< 10 % of K_max), or positions use a single
  code although K(i) > 1;
- ``psnr-flat``: training raised the held-out reconstruction PSNR by less than 1 dB;
- ``ar-loss-flat``: the AR training loss fell by less than 10 % from the first to the last tenth of training;
- ``ar-near-chance``: the AR held-out NLL is within 5 % of guessing uniformly among the K(i) codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SHORT_FRACTION = 0.25
MIN_CODE_FRACTION = 0.10
MIN_PSNR_GAIN_DB = 1.0
MIN_LOSS_DROP = 0.10
NEAR_CHANCE = 0.95


@dataclass(frozen=True)
class RunWarning:
    code: str
    message: str


def diagnose(cfg: Any, defaults: Any, tokenizers: Mapping[str, dict], tokens: Mapping[str, dict],
             ar: Mapping[str, dict]) -> list[RunWarning]:
    """The warnings that apply to a finished demo run (``defaults``: the schema's default config)."""
    out: list[RunWarning] = []
    for key in ("tokenizer.steps", "ar.steps"):
        if key.startswith("ar.") and not ar:
            continue
        section, name = key.split(".")
        value, default = int(cfg[section][name]), int(defaults[section][name])
        if value < SHORT_FRACTION * default:
            what, numbers = (("tokenizers", "i*, PSNR, probe, and everything trained on their tokens")
                             if section == "tokenizer" else ("AR models", "NLL, samples"))
            out.append(RunWarning("short-run", f"{key}={value} is far below its default {default}: the {what} are "
                                  f"undertrained, so their numbers ({numbers}) and any comparison between tokenizers "
                                  "may be reversed or meaningless"))
    for name, t in tokens.items():
        used, k_max = t.get("codes_used"), t.get("k_max")
        if used is not None and k_max and used < MIN_CODE_FRACTION * k_max:
            out.append(RunWarning("codebook-collapse", f"tokenizer {name} uses {used} of its {k_max} codes "
                                  f"(< {MIN_CODE_FRACTION:.0%}): the codebook collapsed"))
        sizes, distinct = t.get("sizes") or [], t.get("distinct_per_position") or []
        single = [i + 1 for i, (k, d) in enumerate(zip(sizes, distinct)) if k > 1 and d <= 1]
        if single:
            out.append(RunWarning("codebook-collapse", f"tokenizer {name}: position(s) {_positions(single)} (1-based) "
                                  "use a single code for every image although K(i) > 1"))
    for name, tok in tokenizers.items():
        before, after = tok.get("psnr_untrained"), tok.get("psnr_heldout")
        if before is not None and after is not None and after - before < MIN_PSNR_GAIN_DB:
            out.append(RunWarning("psnr-flat", f"tokenizer {name}: held-out PSNR {after:.2f} dB, {after - before:+.2f} dB "
                                  f"over the untrained tokenizer ({before:.2f} dB): reconstruction did not improve"))
    for name, a in ar.items():
        first, last = a.get("loss_first"), a.get("loss_last")
        if first is not None and last is not None and last > (1 - MIN_LOSS_DROP) * first:
            out.append(RunWarning("ar-loss-flat", f"AR model on {name}: training loss {first:.3f} -> {last:.3f} nats "
                                  f"(fell by less than {MIN_LOSS_DROP:.0%}): it hardly learned"))
        chance, held = a.get("chance_bits_per_token"), a["heldout"]["bits_per_token"]
        if chance and held > NEAR_CHANCE * chance:
            out.append(RunWarning("ar-near-chance", f"AR model on {name}: held-out NLL {held:.3f} bits/token vs "
                                  f"{chance:.3f} for guessing uniformly among the K(i) codes"))
    return out


def _positions(ps: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(p) for p in ps[:limit])
    return shown + (f" and {len(ps) - limit} more" if len(ps) > limit else "")
