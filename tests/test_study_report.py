"""Study report: structure of report.md / report.json on made-up results."""
from __future__ import annotations

import copy
import json
import math

import pytest

from recipes.study.report import SCHEMA, build_report, format_markdown, seed_table, write_report
from recipes.study.verdict import INCONCLUSIVE, NOT_REPRODUCED, PAPER_CLAIMS, REPRODUCED

L = 12


def _seed(arm: str, s: int) -> dict:
    vcq = arm.startswith("vcq")
    jitter = 0.01 * s
    d = {
        "istar_measured": (9 if vcq else 6) + (s % 2), "istar_computed": 5 if vcq else 2,
        "prefix_bits_at_i0": (4.0 if vcq else 9.0) + jitter,
        "psnr": 20.0 + jitter, "rfd": 1.0 + jitter, "util_min": 0.5, "recon_class_acc": 0.9 if vcq else 0.15,
        "nll_train": 3.0, "nll_heldout": 3.02 + jitter, "nll_gap": 0.02 + jitter,
        "probe_top1_equal_k": 0.30 + jitter, "probe_top1_equal_capacity": 0.30 + 3 * jitter,
        "probe_k_equal_capacity": 3 if vcq else 1, "probe_top1_all": 0.9,
    }
    for mode in ("none", "constant", "aware"):
        # VCQ: clearly better FD without CFG; the constant arm worse; CFG modes overlap
        fd = {"none": 5.0 if vcq else 9.0, "constant": 4.0 + 2 * s, "aware": 3.9 + 2 * s}[mode]
        d.update({f"fd_{mode}": fd + jitter, f"precision_{mode}": 0.7, f"recall_{mode}": 0.6,
                  f"class_acc_{mode}": 0.9, f"token_copy_{mode}": 0.0, f"nn_ratio_{mode}": 1.0})
    d["subsets"] = [{"n": n, "istar_computed": 2 if n > 100 else 1, "istar_measured": d["istar_measured"] - (n < 500)}
                    for n in (64, 256, 1024)]
    cond = [1.0] * d["istar_measured"] + [0.0] * (L - d["istar_measured"])
    if arm == "vcq_cosine" and s == 1:
        cond[1] = 0.0  # a collapsed early position: the utilisation table must name it
    d["curves"] = {"conditional_bits": cond, "joint_bits": [sum(cond[:i + 1]) for i in range(L)],
                   "utilisation": [0.5] * L, "nll_train_bits": [3.0] * L, "nll_heldout_bits": [3.0] * L}
    d["notes"] = {}
    return d


def made_up_results(arms=("constant_kmax", "constant_mean", "vcq_cosine"), seeds=(0, 1, 2)) -> dict:
    arms_d = {}
    for arm in arms:
        vcq = arm.startswith("vcq")
        caps = [float(i + 1) * (1.0 if vcq else 8.0) for i in range(L)]
        arms_d[arm] = {"schedule": {"kind": "cosine" if vcq else "constant", "k_max": 256, "seq_len": L},
                       "mean_k": 96.6 if vcq else 256.0, "bpp": 0.5, "istar_computed": 5 if vcq else 2,
                       "capacity_bits": caps, "seeds": {str(s): _seed(arm, s) for s in seeds}}
    ds = {"description": "class = outline", "num_train": 1024, "num_heldout": 128, "num_classes": 8, "image_size": 16,
          "probe_k": 4, "classifier": {"heldout_top1": 0.99, "chance": 0.125},
          "sampling": {"guidance_scale": 3.0, "guidance_power": 1.0, "samples_per_mode": 800}, "arms": arms_d}
    return {"study": {"date": "2025-01-01", "machine": "test", "wall_s": 12.0, "seeds": list(seeds)},
            "datasets": {"study_shapes": ds, "digits": copy.deepcopy(ds)}, "figures": {"fig2a": "fig2a.png"}}


def test_report_json_is_strict_and_holds_every_table(tmp_path):
    res = made_up_results()
    paths = write_report(res, tmp_path)
    rep = json.loads(paths["json"].read_text())  # strict JSON: NaN would not parse back as a number
    assert rep["schema"] == SCHEMA and "Student-t" in rep["interval"]
    ds = rep["datasets"]["study_shapes"]
    assert set(ds["tables"]) == {"table1", "table4", "generation", "ar", "table6", "utilisation", "position_use"}
    t4 = {r["arm"]: r for r in ds["tables"]["table4"]}
    assert t4["constant_kmax"]["paper"]["gfid_nocfg"] == 27.98 and t4["vcq_cosine"]["paper"]["gfid"] == 4.79
    assert t4["vcq_cosine"]["fd_nocfg"]["n"] == 3 and t4["vcq_cosine"]["fd_nocfg"]["mean"] == pytest.approx(5.01)
    t1 = [r for r in ds["tables"]["table1"] if r["arm"] == "constant_kmax"]
    assert [r["n"] for r in t1] == [64, 256, 1024] and t1[0]["log2_n"] == 6.0 and t1[0]["istar_computed"] == 1
    t6 = {r["arm"]: r for r in ds["tables"]["table6"]}
    assert t6["vcq_cosine"]["paper"]["top1"] == 0.4377 and t6["vcq_cosine"]["k_equal_capacity"] == [3]
    assert t6["constant_mean"]["paper"] is None  # the paper has no Table 6 row for it
    util = {(r["arm"], r["seed"]): r for r in ds["tables"]["utilisation"]}
    assert util[("vcq_cosine", "1")]["positions_without_bits"] == [2]
    assert len(ds["tables"]["generation"]) == 3 * 3
    use = {r["arm"]: r for r in ds["tables"]["position_use"]}
    assert use["vcq_cosine"]["mean"] == pytest.approx([0.5] * L) and use["vcq_cosine"]["min"] == pytest.approx([0.5] * L)
    assert "Per-position codebook use" in paths["md"].read_text()


def test_verdicts_are_computed_per_claim_and_dataset():
    rep = build_report(made_up_results())
    by = {(v["dataset"], v["claim"]): v for v in rep["verdicts"]}
    assert len(rep["verdicts"]) == 2 * len(PAPER_CLAIMS)
    assert by[("study_shapes", "gfd_without_cfg")]["verdict"] == REPRODUCED        # 5.01 vs 9.01, tight
    assert by[("study_shapes", "structure_not_capacity")]["verdict"] == REPRODUCED
    assert by[("study_shapes", "gfd_with_cfg")]["verdict"] == INCONCLUSIVE         # seeds spread by 2
    assert by[("study_shapes", "cliff_at_capacity")]["verdict"] == NOT_REPRODUCED  # 6-7 vs computed 2 +- 1
    assert by[("study_shapes", "aware_cfg_beats_constant_cfg")]["verdict"] == REPRODUCED  # paired: always -0.1
    assert sum(rep["verdict_counts"].values()) == len(rep["verdicts"])


def test_why_not_statements_come_from_the_data():
    rep = build_report(made_up_results())
    by = {(v["dataset"], v["claim"]): v for v in rep["verdicts"]}
    cliff = by[("study_shapes", "cliff_at_capacity")]
    assert any("positions from Eq. 2's" in s and "% of their log2 K(i) bits" in s for s in cliff["why_not"])
    cfg = by[("study_shapes", "gfd_with_cfg")]
    assert any("too small to memorise" in s for s in cfg["why_not"])  # nll gap 0.02-0.04 bits/token
    assert any("no sample of constant_kmax repeats" in s for s in cfg["why_not"])
    assert any("smaller than its seed-to-seed spread" in s for s in cfg["why_not"])
    probe = by[("study_shapes", "probe_equal_k")]
    assert probe["verdict"] == INCONCLUSIVE and any("prefix can carry 4.0 bits" in s for s in probe["why_not"])
    # constant_kmax's reconstructions keep the class 15 % of the time (chance 12.5 %): said plainly
    assert any("the tokenizer loses the class" in s and "0.15" in s for s in probe["why_not"])
    assert by[("study_shapes", "gfd_without_cfg")]["why_not"] == []


def test_markdown_has_the_paper_layout_and_numbers():
    md = format_markdown(build_report(made_up_results()))
    for heading in ("## Verdicts", "### Table 1 in kind", "### Table 4 in kind", "### Table 6 in kind",
                    "### AR next-token NLL", "### Generation by guidance mode", "### Codebook use"):
        assert heading in md
    assert "27.98" in md and "43.8" not in md.split("### Table 6")[0]  # probe numbers only in Table 6
    assert "0.438" in md and "CIFAR-10/100" in md and "**reproduced**" in md and "**inconclusive**" in md
    assert "fig2a.png" in md


def test_a_missing_arm_drops_its_claims_and_unmeasured_metrics_stay_null():
    res = made_up_results(arms=("constant_kmax", "vcq_cosine"))
    for s in res["datasets"]["study_shapes"]["arms"]["vcq_cosine"]["seeds"].values():
        s["fd_none"] = None
        s["notes"] = {"fd_none": "sampling failed"}
    rep = build_report(res)
    claims = {v["claim"] for v in rep["verdicts"] if v["dataset"] == "study_shapes"}
    assert "structure_not_capacity" not in claims
    v = next(v for v in rep["verdicts"] if v["dataset"] == "study_shapes" and v["claim"] == "gfd_without_cfg")
    assert v["verdict"] == INCONCLUSIVE and v["ours"]["treatment"]["n"] == 0 and v["ours"]["treatment"]["missing"] == 3
    assert rep["datasets"]["study_shapes"]["notes"]["vcq_cosine"]["0"] == {"fd_none": "sampling failed"}
    json.dumps(rep, allow_nan=False)


def test_nan_in_results_is_refused(tmp_path):
    res = made_up_results()
    res["datasets"]["study_shapes"]["arms"]["vcq_cosine"]["seeds"]["0"]["psnr"] = math.nan
    with pytest.raises(ValueError, match="finite"):
        write_report(res, tmp_path)


def test_seed_table_keeps_only_scalars():
    t = seed_table(made_up_results()["datasets"]["study_shapes"])
    assert t["vcq_cosine"]["fd_none"] == {"0": 5.0, "1": 5.01, "2": 5.02}
    assert "curves" not in t["vcq_cosine"] and "subsets" not in t["vcq_cosine"]
