"""Study verdicts: t-intervals over seeds and the three verdict kinds on made-up result tables."""
from __future__ import annotations

import math

import pytest

from recipes.study.verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PAPER_CLAIMS,
    REPRODUCED,
    Claim,
    applicable_claims,
    judge,
    judge_all,
    t_interval,
)

FD_CLAIM = Claim("fd", "Table 4", "VCQ has the lower FD", kind="arms", metric="fd", better="lower",
                 treatment="vcq", baseline="const")


def table(vcq, const, metric="fd"):
    return {"vcq": {metric: dict(enumerate(vcq))}, "const": {metric: dict(enumerate(const))}}


def test_t_interval_matches_the_textbook_formula():
    iv = t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t_{0.975, 2} = 4.302652729911275 (tables), half-width t * s / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)
    assert iv.mean == pytest.approx(2.0) and iv.std == pytest.approx(1.0)
    assert iv.low == pytest.approx(2.0 - half, rel=1e-9) and iv.high == pytest.approx(2.0 + half, rel=1e-9)
    assert iv.n == 3 and iv.missing == 0


def test_t_interval_skips_unmeasured_and_refuses_nan():
    iv = t_interval([None, 4.0, 6.0])
    assert iv.n == 2 and iv.missing == 1 and iv.mean == 5.0
    assert iv.low == pytest.approx(5.0 - 12.706204736174698 * math.sqrt(2) / math.sqrt(2))
    one = t_interval([3.0, None])
    assert one.mean == 3.0 and one.low is None and not one.defined
    assert t_interval([]).mean is None
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, float("nan")])


def test_constant_values_give_a_point_interval():
    iv = t_interval([7, 7, 7])
    assert (iv.low, iv.high) == (7.0, 7.0)


def test_clear_win_is_reproduced():
    v = judge(FD_CLAIM, table([10.0, 11.0, 10.5], [20.0, 21.0, 19.5]))
    assert v.verdict == REPRODUCED
    assert v.treatment.high < v.baseline.low


def test_clear_loss_is_not_reproduced():
    v = judge(FD_CLAIM, table([30.0, 31.0, 30.5], [20.0, 21.0, 19.5]))
    assert v.verdict == NOT_REPRODUCED
    assert "disjoint" in v.reason


def test_overlapping_intervals_are_inconclusive():
    # the means differ (15 vs 20) but three noisy seeds cannot tell them apart
    v = judge(FD_CLAIM, table([10.0, 20.0, 15.0], [18.0, 22.0, 20.0]))
    assert v.verdict == INCONCLUSIVE and "overlap" in v.reason


def test_touching_intervals_count_as_overlap():
    v = judge(FD_CLAIM, table([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))
    assert v.verdict == INCONCLUSIVE
    v = judge(FD_CLAIM, table([1.0, 1.0], [1.0 + 1e-12, 1.0 + 1e-12]))
    assert v.verdict == REPRODUCED  # point intervals 1 and 1 + 1e-12 are disjoint


def test_higher_is_better_direction():
    probe = Claim("p", "Table 6", "VCQ probe better", kind="arms", metric="top1", better="higher",
                  treatment="vcq", baseline="const")
    assert judge(probe, table([0.9, 0.91, 0.92], [0.5, 0.52, 0.51], "top1")).verdict == REPRODUCED
    assert judge(probe, table([0.5, 0.52, 0.51], [0.9, 0.91, 0.92], "top1")).verdict == NOT_REPRODUCED


def test_one_seed_is_inconclusive_with_a_reason():
    v = judge(FD_CLAIM, table([1.0, None, None], [50.0, 60.0, 55.0]))
    assert v.verdict == INCONCLUSIVE and "1 measured seed" in v.reason


def test_paired_claim_uses_per_seed_differences():
    claim = Claim("cfg", "Eq. 4", "aware beats constant CFG", kind="paired", metric="fd_aware", better="lower",
                  treatment="vcq", baseline_metric="fd_constant")
    # the per-model level varies a lot between seeds, the aware - constant difference is always -1:
    # per-side intervals overlap, the paired interval does not contain 0
    t = {"vcq": {"fd_aware": {0: 10.0, 1: 30.0, 2: 50.0}, "fd_constant": {0: 11.0, 1: 31.0, 2: 51.1}}}
    v = judge(claim, t)
    assert v.verdict == REPRODUCED and v.difference.high < 0
    assert v.treatment.high > v.baseline.low  # unpaired, they would overlap
    t["vcq"]["fd_constant"] = {0: 9.0, 1: 29.0, 2: 48.9}
    assert judge(claim, t).verdict == NOT_REPRODUCED
    t["vcq"]["fd_constant"] = {0: 11.0, 1: 29.0, 2: 50.0}
    assert judge(claim, t).verdict == INCONCLUSIVE
    # only seeds measured on both sides pair up
    t["vcq"]["fd_constant"] = {0: 11.0, 5: 29.0, 6: 50.0}
    assert "1 measured seed" in judge(claim, t).reason


def test_band_claim_against_a_computed_reference():
    claim = Claim("cliff", "Eq. 2", "cliff at capacity", kind="band", metric="istar_measured", better="within",
                  treatment="const", reference_metric="istar_computed", tolerance=1.0)
    t = {"const": {"istar_measured": {0: 2, 1: 3, 2: 2}, "istar_computed": {0: 2, 1: 2, 2: 2}}}
    assert judge(claim, t).verdict == INCONCLUSIVE  # mean 2.33, interval [0.9, 3.8] sticks out of [1, 3]
    t["const"]["istar_measured"] = {0: 2, 1: 2, 2: 2}
    assert judge(claim, t).verdict == REPRODUCED
    t["const"]["istar_measured"] = {0: 7, 1: 8, 2: 7}
    v = judge(claim, t)
    assert v.verdict == NOT_REPRODUCED and v.reference == 2.0
    t["const"]["istar_computed"] = {0: 2, 1: 3, 2: 2}
    assert "differs between seeds" in judge(claim, t).reason


def test_bad_claims_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "", "", kind="vote", metric="m", better="lower", treatment="a", baseline="b")
    with pytest.raises(ValueError, match="two different arms"):
        Claim("x", "", "", kind="arms", metric="m", better="lower", treatment="a", baseline="a")
    with pytest.raises(ValueError, match="band"):
        Claim("x", "", "", kind="band", metric="m", better="lower", treatment="a", reference_metric="r")


def test_paper_claims_cover_the_issue_and_skip_missing_arms():
    ids = {c.id for c in PAPER_CLAIMS}
    assert {"cliff_at_capacity", "cliff_later_with_vcq", "gfd_without_cfg", "gfd_with_cfg", "probe_equal_k",
            "aware_cfg_beats_constant_cfg", "structure_not_capacity"} <= ids
    digits_arms = ["constant_kmax", "constant_mean", "vcq_cosine"]
    assert {c.id for c in applicable_claims(digits_arms)} == ids  # every claim uses only these three arms
    only_two = applicable_claims(["constant_kmax", "vcq_cosine"])
    assert "structure_not_capacity" not in {c.id for c in only_two}
    verdicts = judge_all({"vcq_cosine": {}, "constant_kmax": {}})
    assert verdicts and all(v.verdict == INCONCLUSIVE for v in verdicts)  # nothing measured: never a verdict
    d = verdicts[0].to_dict()
    assert d["verdict"] == INCONCLUSIVE and d["ours"]["treatment"]["n"] == 0
