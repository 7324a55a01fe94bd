"""Intervals over seeds and one verdict per paper claim, computed, never written by hand.

Interval: for the per-seed values x_1..x_n of one arm and metric, the two-sided 95 % Student-t
confidence interval of the mean, ``mean +- t_{0.975, n-1} * s / sqrt(n)`` (s the sample standard
deviation, ddof = 1; scipy.stats.t). It needs n >= 2; with one seed there is no interval. Values
that were not measured (None) are left out and counted.

Verdicts. Every claim names a metric, the arm the paper says is better (``treatment``), the arm it
beats (``baseline``) and the direction ("lower" or "higher" is better). Three kinds:

- ``arms`` (two different tokenizers / models): the per-arm 95 % intervals are compared.
  *reproduced* when they are disjoint and the treatment's lies on the better side;
  *not reproduced* when they are disjoint and the treatment's lies on the worse side;
  *inconclusive* when they overlap. Intervals that touch (an end point in common) overlap.
  Disjoint 95 % intervals are a conservative test (about p < 0.01 for equal widths): a claim
  is called reproduced only on clear evidence.
- ``paired`` (one model, two sampling modes, e.g. aware vs constant CFG): seed s of both sides is
  the same AR model, so the per-seed differences d_s = treatment_s - baseline_s get one 95 %
  t-interval; *reproduced* when it lies strictly on the better side of 0, *not reproduced* when
  it lies strictly on the worse side, *inconclusive* when it contains 0. Only seeds measured on
  both sides count.
- ``band`` (a measurement against a value the theory computes, e.g. measured vs Eq. 2 i*):
  *reproduced* when the interval lies inside ``[reference - tolerance, reference + tolerance]``,
  *not reproduced* when it lies entirely outside it, *inconclusive* otherwise.

Every kind is *inconclusive* when a side has fewer than 2 measured seeds (the reason says so).
The mapping of each paper claim to a comparison is :data:`PAPER_CLAIMS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from scipy import stats

CONFIDENCE = 0.95
INTERVAL_METHOD = "two-sided 95% Student-t interval of the mean over seeds (t_{0.975, n-1} * s / sqrt(n), s with ddof=1)"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
KINDS = ("arms", "paired", "band")

# per-seed table: arm -> metric -> seed -> value (None = not measured)
SeedTable = Mapping[str, Mapping[str, Mapping[Any, "float | None"]]]


@dataclass(frozen=True)
class Interval:
    """Mean and 95 % t-interval of ``n`` measured seeds (``low`` / ``high`` None when n < 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    std: float | None = None
    missing: int = 0

    @property
    def defined(self) -> bool:
        return self.low is not None and self.high is not None

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "std": self.std,
                "missing": self.missing}

    def format(self, digits: int = 2) -> str:
        if self.mean is None:
            return "n/a"
        if not self.defined:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _finite(x: Any) -> bool:
    return x is not None and not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def t_interval(values: Sequence["float | None"], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided Student-t interval of the measured (not None) values.

    Raises ValueError for NaN / inf (a metric that failed must be None with a reason elsewhere).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    vals = []
    for v in values:
        if v is None:
            continue
        if not _finite(v):
            raise ValueError(f"values must be finite numbers or None, got {v!r}")
        vals.append(float(v))
    missing = len(values) - len(vals)
    n = len(vals)
    if n == 0:
        return Interval(None, None, None, 0, None, missing)
    mean = math.fsum(vals) / n
    if n == 1:
        return Interval(mean, None, None, 1, None, missing)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, missing)


@dataclass(frozen=True)
class Claim:
    """One paper claim as a comparison (see the module docstring for the three kinds).

    ``paper``: the paper's numbers for (treatment, baseline) or (measurement, reference), shown
    beside ours; ``statement``: the claim in the paper's words; ``source``: where it is made.
    ``reference_metric`` (band kind): the metric of the same arm holding the reference value.
    """

    id: str
    source: str
    statement: str
    kind: str
    metric: str
    better: str
    treatment: str
    baseline: str | None = None
    baseline_metric: str | None = None
    reference_metric: str | None = None
    tolerance: float = 0.0
    paper: tuple[float | None, float | None] = (None, None)
    unit: str = ""
    study_question: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.better not in ("lower", "higher", "within"):
            raise ValueError(f"claim {self.id}: better must be 'lower', 'higher' or 'within', got {self.better!r}")
        if self.kind == "band" and (self.reference_metric is None or self.tolerance < 0 or self.better != "within"):
            raise ValueError(f"claim {self.id}: a band claim needs reference_metric, tolerance >= 0 and better='within'")
        if self.kind != "band" and self.better == "within":
            raise ValueError(f"claim {self.id}: better='within' is for band claims only")
        if self.kind == "arms" and (self.baseline is None or self.baseline == self.treatment):
            raise ValueError(f"claim {self.id}: an arms claim compares two different arms")
        if self.kind == "paired" and self.baseline_metric is None and self.baseline in (None, self.treatment):
            raise ValueError(f"claim {self.id}: a paired claim needs another metric or arm to pair with")

    def describe(self) -> str:
        """The comparison in one line, for the report."""
        if self.kind == "band":
            return (f"{self.treatment}: {self.metric} within +-{self.tolerance:g} of {self.reference_metric} "
                    "(95% interval inside the band)")
        side = "<" if self.better == "lower" else ">"
        base_arm = self.baseline or self.treatment
        base_metric = self.baseline_metric or self.metric
        how = "disjoint 95% intervals" if self.kind == "arms" else "95% interval of per-seed differences excludes 0"
        return f"{self.treatment}.{self.metric} {side} {base_arm}.{base_metric} ({how})"


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    reason: str
    treatment: Interval
    baseline: Interval | None = None
    difference: Interval | None = None
    reference: float | None = None
    why_not: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        c = self.claim
        return {
            "claim": c.id, "source": c.source, "statement": c.statement, "comparison": c.describe(),
            "kind": c.kind, "metric": c.metric, "better": c.better, "treatment": c.treatment,
            "baseline": c.baseline, "baseline_metric": c.baseline_metric, "unit": c.unit,
            "paper": {"treatment": c.paper[0], "baseline": c.paper[1]}, "study_question": c.study_question,
            "verdict": self.verdict, "reason": self.reason,
            "ours": {"treatment": self.treatment.to_dict(),
                     "baseline": None if self.baseline is None else self.baseline.to_dict(),
                     "difference": None if self.difference is None else self.difference.to_dict(),
                     "reference": self.reference},
            "why_not": list(self.why_not),
        }


def _values(table: SeedTable, arm: str, metric: str) -> dict:
    return dict(table.get(arm, {}).get(metric, {}) or {})


def _few(name: str, iv: Interval) -> str | None:
    if iv.n < 2:
        return f"{name} has {iv.n} measured seed{'s' if iv.n != 1 else ''} (an interval needs >= 2)"
    return None


def judge(claim: Claim, table: SeedTable, confidence: float = CONFIDENCE) -> Verdict:
    """The verdict on ``claim`` from the per-seed ``table`` (arm -> metric -> seed -> value)."""
    if claim.kind == "band":
        return _judge_band(claim, table, confidence)
    if claim.kind == "paired":
        return _judge_paired(claim, table, confidence)
    t_vals, b_vals = _values(table, claim.treatment, claim.metric), _values(table, claim.baseline, claim.baseline_metric or claim.metric)
    ti, bi = t_interval(list(t_vals.values()), confidence), t_interval(list(b_vals.values()), confidence)
    few = _few(f"{claim.treatment}.{claim.metric}", ti) or _few(f"{claim.baseline}.{claim.baseline_metric or claim.metric}", bi)
    if few:
        return Verdict(claim, INCONCLUSIVE, few, ti, bi)
    if ti.high < bi.low:
        side = "lower"
    elif bi.high < ti.low:
        side = "higher"
    else:
        return Verdict(claim, INCONCLUSIVE, f"the 95% intervals overlap ({ti.format(3)} vs {bi.format(3)})", ti, bi)
    ok = side == claim.better
    reason = (f"{claim.treatment} {ti.format(3)} is {side} than {claim.baseline} {bi.format(3)} "
              f"with disjoint 95% intervals; the paper says {claim.better} is better")
    return Verdict(claim, REPRODUCED if ok else NOT_REPRODUCED, reason, ti, bi)


def _judge_paired(claim: Claim, table: SeedTable, confidence: float) -> Verdict:
    base_arm = claim.baseline or claim.treatment
    base_metric = claim.baseline_metric or claim.metric
    t_vals, b_vals = _values(table, claim.treatment, claim.metric), _values(table, base_arm, base_metric)
    ti, bi = t_interval(list(t_vals.values()), confidence), t_interval(list(b_vals.values()), confidence)
    seeds = [s for s in t_vals if s in b_vals and t_vals[s] is not None and b_vals[s] is not None]
    di = t_interval([t_vals[s] - b_vals[s] for s in seeds], confidence)
    few = _few("the paired differences", di)
    if few:
        return Verdict(claim, INCONCLUSIVE, few, ti, bi, di)
    if di.high < 0:
        side = "lower"
    elif di.low > 0:
        side = "higher"
    else:
        return Verdict(claim, INCONCLUSIVE, f"the 95% interval of the per-seed differences {di.format(3)} contains 0",
                       ti, bi, di)
    ok = side == claim.better
    reason = (f"per-seed difference {claim.treatment}.{claim.metric} - {base_arm}.{base_metric} = {di.format(3)} "
              f"(n={di.n}), entirely {'below' if side == 'lower' else 'above'} 0; the paper says {claim.better} is better")
    return Verdict(claim, REPRODUCED if ok else NOT_REPRODUCED, reason, ti, bi, di)


def _judge_band(claim: Claim, table: SeedTable, confidence: float) -> Verdict:
    t_vals = _values(table, claim.treatment, claim.metric)
    refs = {v for v in _values(table, claim.treatment, claim.reference_metric).values() if v is not None}
    ti = t_interval(list(t_vals.values()), confidence)
    if len(refs) != 1:
        why = "not measured" if not refs else f"differs between seeds ({sorted(refs)})"
        return Verdict(claim, INCONCLUSIVE, f"the reference {claim.reference_metric} {why}", ti)
    ref = float(next(iter(refs)))
    few = _few(f"{claim.treatment}.{claim.metric}", ti)
    if few:
        return Verdict(claim, INCONCLUSIVE, few, ti, reference=ref)
    lo, hi = ref - claim.tolerance, ref + claim.tolerance
    if lo <= ti.low and ti.high <= hi:
        return Verdict(claim, REPRODUCED, f"{ti.format(3)} lies inside [{lo:g}, {hi:g}] around {claim.reference_metric} = {ref:g}",
                       ti, reference=ref)
    if ti.high < lo or ti.low > hi:
        return Verdict(claim, NOT_REPRODUCED, f"{ti.format(3)} lies entirely outside [{lo:g}, {hi:g}] around "
                       f"{claim.reference_metric} = {ref:g}", ti, reference=ref)
    return Verdict(claim, INCONCLUSIVE, f"{ti.format(3)} straddles the band [{lo:g}, {hi:g}] around "
                   f"{claim.reference_metric} = {ref:g}", ti, reference=ref)


# ---------------------------------------------------------------------------------------------
# the paper's claims as comparisons (arm names and metric names are the study's; see report.py)
ARMS = ("constant_kmax", "constant_mean", "vcq_cosine", "vcq_linear", "vcq_power")
PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim("cliff_at_capacity", "Table 1 / Eq. 2 / Fig. 2(a)",
          "with a constant codebook the entropy cliff sits where the cumulative capacity C(i) first reaches "
          "log2 N (the observed decay 'aligns closely with the theoretical prediction')",
          kind="band", metric="istar_measured", better="within", treatment="constant_kmax",
          reference_metric="istar_computed", tolerance=1.0, paper=(2, 2), unit="positions"),
    Claim("cliff_later_with_vcq", "Table 1 / Eq. 2 / Sec. 2.1",
          "VCQ moves the entropy cliff later (ImageNet: i* = 2 for constant 16384, about 5 for VCQ cosine)",
          kind="arms", metric="istar_measured", better="higher", treatment="vcq_cosine", baseline="constant_kmax",
          paper=(5, 2), unit="positions"),
    Claim("slower_information_use", "Fig. 2(a)",
          "VCQ keeps the information spent by the first positions small: the measured prefix entropy after "
          "the constant codebook's computed i* positions is lower for VCQ",
          kind="arms", metric="prefix_bits_at_i0", better="lower", treatment="vcq_cosine", baseline="constant_kmax",
          unit="bits"),
    Claim("gfd_without_cfg", "Table 4",
          "with AR models of equal size, VCQ tokens give a much better generation FD without guidance "
          "(gFID w/o CFG 27.98 -> 14.80)",
          kind="arms", metric="fd_none", better="lower", treatment="vcq_cosine", baseline="constant_kmax",
          paper=(14.80, 27.98), unit="FD"),
    Claim("gfd_with_cfg", "Table 4",
          "with guidance (codebook-size-aware CFG for VCQ, standard cosine CFG for the constant codebook, "
          "which is what the aware rule gives for a constant schedule), VCQ is better (gFID 6.43 -> 4.79)",
          kind="arms", metric="fd_aware", better="lower", treatment="vcq_cosine", baseline="constant_kmax",
          paper=(4.79, 6.43), unit="FD"),
    Claim("structure_not_capacity", "Table 4 (variable structure vs. total capacity)",
          "at (nearly) equal mean codebook size, the variable schedule beats a constant one "
          "(paper: VCQ-Linear 14.70 vs Constant 8192 18.16 gFID w/o CFG; here VCQ cosine vs a constant K at its mean)",
          kind="arms", metric="fd_none", better="lower", treatment="vcq_cosine", baseline="constant_mean",
          paper=(14.70, 18.16), unit="FD"),
    Claim("probe_equal_k", "Table 6",
          "a linear probe on the first k tokens is more accurate for VCQ than for the constant codebook "
          "(k = 10: 43.77 % vs 27.12 % top-1)",
          kind="arms", metric="probe_top1_equal_k", better="higher", treatment="vcq_cosine", baseline="constant_kmax",
          paper=(0.4377, 0.2712), unit="top-1"),
    Claim("probe_equal_capacity", "Sec. 4.4 (explanation of Table 6)",
          "VCQ gathers the global content into the first tokens: at equal prefix capacity (k chosen per arm so "
          "the prefixes carry the same bits) its probe is still more accurate",
          kind="arms", metric="probe_top1_equal_capacity", better="higher", treatment="vcq_cosine",
          baseline="constant_kmax", unit="top-1", study_question=True),
    Claim("aware_cfg_beats_constant_cfg", "Eq. 4 / Appendix C, Table 8",
          "on VCQ tokens, codebook-size-aware CFG gives a better FD than a guidance scale that ignores K(i) "
          "(paper: 7.61 with vanilla cosine CFG -> 4.79 aware)",
          kind="paired", metric="fd_aware", better="lower", treatment="vcq_cosine", baseline_metric="fd_constant",
          paper=(4.79, 7.61), unit="FD"),
    Claim("memorisation_after_cliff", "Sec. 2.2",
          "beyond the cliff the AR model can only memorise: the train / held-out NLL gap is larger for the "
          "constant codebook than for VCQ",
          kind="arms", metric="nll_gap", better="lower", treatment="vcq_cosine", baseline="constant_kmax",
          unit="bits/token"),
)


def applicable_claims(arms: Sequence[str], claims: Sequence[Claim] = PAPER_CLAIMS) -> list[Claim]:
    """The claims whose arms were all run (digits runs fewer arms)."""
    have = set(arms)
    return [c for c in claims if c.treatment in have and (c.baseline is None or c.baseline in have)]


def judge_all(table: SeedTable, claims: Sequence[Claim] | None = None, confidence: float = CONFIDENCE) -> list[Verdict]:
    """Verdicts for every claim whose arms are in ``table`` (all of :data:`PAPER_CLAIMS` by default)."""
    claims = applicable_claims(list(table), PAPER_CLAIMS if claims is None else claims)
    return [judge(c, table, confidence) for c in claims]
