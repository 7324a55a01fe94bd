"""The paper's published numbers the study sets beside its own (Tables 4 and 6; Table 1 lives in
``vcq_plugin.analysis.theory.TABLE1_DATASETS``), and which study arm each paper row corresponds to.

Table 4 (Base tokenizer + AR-B, ImageNet 256, L = 256): schedule, mean K, BPP, PSNR, rFID, gFID
(with CFG: Table 7 presets), gFID w/o CFG. Table 6: linear probe top-1 / top-5 on the first k tokens.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperTable4Row:
    label: str
    schedule: dict          # CodebookSchedule.to_dict()-style: kind, k_min, k_max, seq_len (+ power)
    mean_k: float
    bpp: float
    psnr: float
    rfid: float
    gfid: float
    gfid_nocfg: float
    study_arm: str          # the study arm playing this row's role


_L = 256
TABLE4: tuple[PaperTable4Row, ...] = (
    PaperTable4Row("Constant (K=16384)", {"kind": "constant", "k_max": 16384, "seq_len": _L}, 16384, 0.055,
                   20.67, 2.26, 6.43, 27.98, "constant_kmax"),
    PaperTable4Row("Constant (K=8192)", {"kind": "constant", "k_max": 8192, "seq_len": _L}, 8192, 0.051,
                   20.48, 2.36, 5.87, 18.16, "constant_mean"),
    PaperTable4Row("VCQ-Linear", {"kind": "linear", "k_min": 2, "k_max": 16384, "seq_len": _L}, 8193, 0.049,
                   20.35, 2.42, 5.32, 14.70, "vcq_linear"),
    PaperTable4Row("VCQ-Cosine", {"kind": "cosine", "k_min": 2, "k_max": 16384, "seq_len": _L}, 5964, 0.044,
                   20.02, 2.77, 4.79, 14.80, "vcq_cosine"),
    PaperTable4Row("VCQ-Power (p=2.5)", {"kind": "power", "k_min": 2, "k_max": 16384, "seq_len": _L, "power": 2.5},
                   4696, 0.041, 19.82, 2.89, 5.14, 16.19, "vcq_power"),
)
# The paper's "Constant (K=8192)" is a constant codebook at (about) VCQ-Linear's mean K; the study's
# constant_mean arm is a constant codebook at VCQ cosine's mean K: the same question (schedule or
# just fewer bits?), asked of the study's default schedule.

# Table 6: (label, study arm, k, top-1, top-5), fractions
TABLE6: tuple[tuple[str, str, int, float, float], ...] = (
    ("Constant (K=16384)", "constant_kmax", 10, 0.2712, 0.4927),
    ("Constant (K=16384)", "constant_kmax", 256, 0.4802, 0.7151),
    ("VCQ-Linear", "vcq_linear", 10, 0.3124, 0.5459),
    ("VCQ-Linear", "vcq_linear", 256, 0.4660, 0.7011),
    ("VCQ-Cosine", "vcq_cosine", 10, 0.4377, 0.6770),
    ("VCQ-Cosine", "vcq_cosine", 256, 0.4879, 0.7270),
    ("VCQ-Power (p=2.5)", "vcq_power", 10, 0.4942, 0.7270),
    ("VCQ-Power (p=2.5)", "vcq_power", 256, 0.4693, 0.7071),
)
TABLE6_K = 10  # the paper's "first tokens" (10 of 256)


def table4_row_for_arm(arm: str) -> PaperTable4Row | None:
    return next((r for r in TABLE4 if r.study_arm == arm), None)


def table6_rows_for_arm(arm: str) -> list[tuple[str, str, int, float, float]]:
    return [r for r in TABLE6 if r[1] == arm]


def table4_row_for_schedule(schedule: dict) -> PaperTable4Row | None:
    """The paper row with exactly this schedule (kind, sizes, L; power for power), or None."""
    def key(d: dict) -> tuple:
        kind = d.get("kind")
        return (kind, None if kind == "constant" else d.get("k_min"), d.get("k_max"), d.get("seq_len"),
                d.get("power") if kind == "power" else None)
    return next((r for r in TABLE4 if key(r.schedule) == key(schedule)), None)
