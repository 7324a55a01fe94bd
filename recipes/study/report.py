"""report.md + report.json of the reproduction study: paper Tables 1, 4 and 6 in kind, the paper's
numbers beside ours, mean and 95 % interval over seeds, one computed verdict per claim, and "why
not" statements computed from the data.

Input: the study's results dict (strict JSON; what the study stages collect)::

    {"study": {"date": str, "machine": str, "wall_s": float, "seeds": [int], "config": {...}},
     "datasets": {NAME: {
        "description": str,                      # how the class is encoded (recipes.study.data)
        "num_train": int, "num_heldout": int, "num_classes": int, "image_size": int,
        "probe_k": int,                          # k of the equal-k probe
        "classifier": {"heldout_top1": float, "chance": float, ...},
        "sampling": {"guidance_scale": float, "guidance_power": float, "samples_per_mode": int, ...},
        "arms": {ARM: {
            "schedule": {...},                   # CodebookSchedule.to_dict()
            "mean_k": float, "bpp": float, "istar_computed": int, "capacity_bits": [float] * L,
            "seeds": {SEED: {METRIC: float | None, ...,
                             "subsets": [{"n": int, "istar_computed": int, "istar_measured": int | None}],
                             "curves": {"conditional_bits": [...], "joint_bits": [...], "utilisation": [...],
                                        "nll_train_bits": [...], "nll_heldout_bits": [...]},
                             "notes": {METRIC: "why it is None"}}}}}}},
     "figures": {NAME: path}}                    # optional

Scalar metrics per seed (the names the claims in ``recipes.study.verdict`` use): ``istar_measured``,
``istar_computed``, ``prefix_bits_at_i0``, ``psnr``, ``rfd``, ``recon_class_acc`` (the measuring
classifier on held-out reconstructions: does the tokenizer keep the class?), ``util_min``, ``nll_train``,
``nll_heldout``, ``nll_gap`` (held-out - train, bits/token), ``fd_<mode>``, ``precision_<mode>``,
``recall_<mode>``, ``class_acc_<mode>``, ``token_copy_<mode>``, ``nn_ratio_<mode>`` for mode in
``none | constant | aware``, ``probe_top1_equal_k``, ``probe_top1_equal_capacity``,
``probe_k_equal_capacity``, ``probe_top1_all``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from vcq_plugin._io import atomic_write_text

from .paper import TABLE6_K, table4_row_for_arm, table6_rows_for_arm
from .verdict import (
    INCONCLUSIVE,
    INTERVAL_METHOD,
    NOT_REPRODUCED,
    PAPER_CLAIMS,
    REPRODUCED,
    Interval,
    Verdict,
    judge_all,
    t_interval,
)

SCHEMA = "vcq-study-report/1"
MODES = ("none", "constant", "aware")
MODE_NAMES = {"none": "no CFG", "constant": "constant CFG", "aware": "aware CFG (Eq. 4)"}
ARM_LABELS = {"constant_kmax": "Constant (K_max)", "constant_mean": "Constant (K near VCQ mean)",
              "vcq_cosine": "VCQ-Cosine", "vcq_linear": "VCQ-Linear", "vcq_power": "VCQ-Power (p=2.5)"}
# below these, an AR model is called too small to memorise / too weak to show the class
MEMORISATION_GAP_BITS = 0.1
VERDICT_RULES = (
    "arms: per-arm 95% intervals disjoint and on the paper's side -> reproduced; disjoint on the other side -> "
    "not reproduced; overlapping (touching included) -> inconclusive. paired: 95% interval of per-seed "
    "differences strictly on one side of 0. band: interval inside / outside reference +- tolerance. "
    "Fewer than 2 measured seeds -> inconclusive.")


# ----------------------------------------------------------------------------- tables from results
def seed_table(dataset: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """arm -> metric -> seed -> value (scalars only) from one dataset's results."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for arm, a in dataset["arms"].items():
        metrics: dict[str, dict[str, float | None]] = {}
        for seed, values in a.get("seeds", {}).items():
            for k, v in values.items():
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                    metrics.setdefault(k, {})[str(seed)] = None if v is None else float(v)
        out[arm] = metrics
    return out


def _iv(table: Mapping, arm: str, metric: str) -> Interval:
    return t_interval(list(table.get(arm, {}).get(metric, {}).values()))


def _fmt(iv: Interval | dict | None, digits: int = 2, scale: float = 1.0) -> str:
    if iv is None:
        return "-"
    if isinstance(iv, dict):
        iv = Interval(**iv)
    if iv.mean is None:
        return "n/a"
    m = iv.mean * scale
    if not iv.defined:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{iv.low * scale:.{digits}f}, {iv.high * scale:.{digits}f}]"


def _num(x: Any, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}"


def _rows_table1(ds: Mapping[str, Any]) -> list[dict]:
    """Computed vs measured i* per arm and training-subset size (Table 1 in kind)."""
    rows = []
    for arm, a in ds["arms"].items():
        by_n: dict[int, dict] = {}
        for s in a.get("seeds", {}).values():
            for sub in s.get("subsets", []):
                e = by_n.setdefault(int(sub["n"]), {"computed": set(), "measured": []})
                e["computed"].add(sub.get("istar_computed"))
                e["measured"].append(sub.get("istar_measured"))
        for n, e in sorted(by_n.items()):
            comp = sorted(c for c in e["computed"] if c is not None)
            rows.append({"arm": arm, "n": n, "log2_n": math.log2(n),
                         "istar_computed": comp[0] if len(comp) == 1 else comp,
                         "istar_measured": t_interval(e["measured"]).to_dict(),
                         "never_reached": sum(m is None for m in e["measured"])})
    return rows


def _rows_table4(ds: Mapping[str, Any], table: Mapping) -> list[dict]:
    rows = []
    for arm, a in ds["arms"].items():
        p = table4_row_for_arm(arm)
        rows.append({"arm": arm, "label": ARM_LABELS.get(arm, arm), "schedule": a.get("schedule"),
                     "mean_k": a.get("mean_k"), "bpp": a.get("bpp"), "istar_computed": a.get("istar_computed"),
                     "psnr": _iv(table, arm, "psnr").to_dict(), "rfd": _iv(table, arm, "rfd").to_dict(),
                     "recon_class_acc": _iv(table, arm, "recon_class_acc").to_dict(),
                     "fd_cfg": _iv(table, arm, "fd_aware").to_dict(), "fd_nocfg": _iv(table, arm, "fd_none").to_dict(),
                     "paper": None if p is None else {"label": p.label, "mean_k": p.mean_k, "bpp": p.bpp, "psnr": p.psnr,
                                                      "rfid": p.rfid, "gfid": p.gfid, "gfid_nocfg": p.gfid_nocfg}})
    return rows


def _rows_generation(ds: Mapping[str, Any], table: Mapping) -> list[dict]:
    rows = []
    for arm in ds["arms"]:
        for mode in MODES:
            rows.append({"arm": arm, "mode": mode, **{m: _iv(table, arm, f"{m}_{mode}").to_dict() for m in
                                                     ("fd", "precision", "recall", "class_acc", "token_copy", "nn_ratio")}})
    return rows


def _rows_ar(ds: Mapping[str, Any], table: Mapping) -> list[dict]:
    return [{"arm": arm, **{m: _iv(table, arm, m).to_dict() for m in ("nll_train", "nll_heldout", "nll_gap")}}
            for arm in ds["arms"]]


def _rows_table6(ds: Mapping[str, Any], table: Mapping) -> list[dict]:
    rows = []
    for arm in ds["arms"]:
        ks = sorted({v for v in table.get(arm, {}).get("probe_k_equal_capacity", {}).values() if v is not None})
        paper = {k: (t1, t5) for _, _, k, t1, t5 in table6_rows_for_arm(arm)}
        rows.append({"arm": arm, "k": ds.get("probe_k"), "top1_equal_k": _iv(table, arm, "probe_top1_equal_k").to_dict(),
                     "k_equal_capacity": [int(k) for k in ks],
                     "top1_equal_capacity": _iv(table, arm, "probe_top1_equal_capacity").to_dict(),
                     "top1_all": _iv(table, arm, "probe_top1_all").to_dict(),
                     "paper": {"k": TABLE6_K, "top1": paper.get(TABLE6_K, (None,))[0],
                               "top1_all": paper.get(256, (None,))[0]} if paper else None})
    return rows


def _rows_utilisation(ds: Mapping[str, Any]) -> list[dict]:
    rows = []
    for arm, a in ds["arms"].items():
        for seed, s in a.get("seeds", {}).items():
            util = s.get("curves", {}).get("utilisation") or []
            cond = s.get("curves", {}).get("conditional_bits") or []
            rows.append({"arm": arm, "seed": str(seed), "util_min": min(util) if util else None,
                         "positions_without_bits": [i + 1 for i, h in enumerate(cond) if h == 0.0 and
                                                    i + 1 < (s.get("istar_measured") or len(cond) + 1)]})
    return rows


def _rows_position_use(ds: Mapping[str, Any]) -> list[dict]:
    """Per arm: the share of K(i) codes used at each position (mean over seeds) and the lowest seed."""
    rows = []
    for arm, a in ds["arms"].items():
        utils = [s.get("curves", {}).get("utilisation") for s in a.get("seeds", {}).values()]
        utils = [u for u in utils if u]
        if not utils:
            continue
        length = min(len(u) for u in utils)
        rows.append({"arm": arm, "mean": [sum(u[i] for u in utils) / len(utils) for i in range(length)],
                     "min": [min(u[i] for u in utils) for i in range(length)]})
    return rows


# ----------------------------------------------------------------------------- why not
def why_not(v: Verdict, ds: Mapping[str, Any], table: Mapping) -> list[str]:
    """Plain statements, computed from the data, about why a claim did not come out reproduced."""
    if v.verdict == REPRODUCED:
        return []
    c, out = v.claim, []
    t, b = c.treatment, c.baseline or c.treatment

    def iv(arm, metric):
        return _iv(table, arm, metric)

    def overlap(x: Interval, y: Interval) -> bool:
        return x.defined and y.defined and not (x.high < y.low or y.high < x.low)

    ist_t, ist_b = iv(t, "istar_measured"), iv("constant_kmax", "istar_measured")
    if c.id in ("cliff_at_capacity", "cliff_later_with_vcq", "slower_information_use") or c.metric.startswith("fd_"):
        if c.id != "cliff_at_capacity" and t != "constant_kmax" and overlap(ist_t, ist_b):
            out.append(f"no clear difference in the measured cliff: i* {ist_t.format(1)} for {t} vs "
                       f"{ist_b.format(1)} for constant_kmax")
    if c.id == "cliff_at_capacity" and v.treatment.mean is not None and v.reference is not None:
        a = ds["arms"].get(t, {})
        caps = a.get("capacity_bits") or []
        ratios = []
        for s in a.get("seeds", {}).values():
            cond = s.get("curves", {}).get("conditional_bits") or []
            m = s.get("istar_measured") or len(cond)
            logk = [caps[i] - (caps[i - 1] if i else 0.0) for i in range(min(m, len(caps), len(cond)))]
            ratios += [h / lk for h, lk in zip(cond, logk) if lk > 0]
        if ratios:
            out.append(f"the measured cliff comes {v.treatment.mean - v.reference:+.1f} positions from Eq. 2's: "
                       f"before it, positions carry {100 * sum(ratios) / len(ratios):.0f} % of their log2 K(i) bits "
                       "on average (Eq. 2 assumes 100 %; the paper reports 80-90 %)")
    if c.metric.startswith(("fd_", "nll_")) or c.id == "memorisation_after_cliff":
        gap = iv("constant_kmax", "nll_gap")
        if gap.mean is not None and gap.mean < MEMORISATION_GAP_BITS:
            out.append(f"the AR models are too small to memorise: the held-out minus train NLL gap of constant_kmax "
                       f"is {gap.format(3)} bits/token (below {MEMORISATION_GAP_BITS}), {iv(t, 'nll_gap').format(3)} "
                       f"for {t}")
        copies = iv("constant_kmax", "token_copy_none")
        if copies.mean is not None and copies.mean == 0.0:
            out.append("no sample of constant_kmax repeats a training token sequence (no copying to penalise)")
    if c.metric.startswith(("fd_", "probe_")):
        chance = (ds.get("classifier") or {}).get("chance")
        kept = [(arm, iv(arm, "recon_class_acc")) for arm in dict.fromkeys((t, b))]
        if chance is not None and any(k.mean is not None and k.mean < 2 * chance for _, k in kept):
            out.append("the tokenizer loses the class: the classifier recognises "
                       + ", ".join(f"{k.format(2)} of {arm}'s reconstructions" for arm, k in kept if k.mean is not None)
                       + f" (chance {chance:.2f})")
    if c.metric.startswith("fd_"):
        mode = c.metric.split("_", 1)[1]
        acc_t, acc_b = iv(t, f"class_acc_{mode}"), iv(b, f"class_acc_{c.baseline_metric.split('_', 1)[1]}"
                                                      if c.baseline_metric else f"class_acc_{mode}")
        chance = (ds.get("classifier") or {}).get("chance")
        if chance is not None and acc_t.mean is not None and acc_b.mean is not None and max(acc_t.mean, acc_b.mean) < 2 * chance:
            out.append(f"the samples rarely show their class (classifier accuracy {acc_t.format(2)} for {t}, "
                       f"{acc_b.format(2)} for {b}, chance {chance:.2f}): the AR models are too weak for the comparison")
        if v.baseline is not None and v.treatment.std is not None and v.baseline.std is not None and \
                v.treatment.mean is not None and v.baseline.mean is not None:
            spread = max(v.treatment.std, v.baseline.std)
            diff = abs(v.treatment.mean - v.baseline.mean)
            if diff < spread:
                out.append(f"the FD difference ({diff:.3g}) is smaller than its seed-to-seed spread (sd {spread:.3g})")
    if c.id in ("probe_equal_k", "probe_equal_capacity"):
        caps = {arm: ds["arms"][arm].get("capacity_bits") for arm in (t, b) if arm in ds["arms"]}
        if c.id == "probe_equal_k":
            ks = {arm: [ds.get("probe_k")] for arm in (t, b)}
        else:  # each arm's own k (the k whose C(k) is closest to the reference's), as measured per seed
            ks = {arm: sorted({int(k) for k in table.get(arm, {}).get("probe_k_equal_capacity", {}).values()
                               if k is not None}) for arm in (t, b)}
        if all(caps.get(arm) and ks[arm] and all(ks[arm]) for arm in (t, b)):
            def carried(arm: str) -> str:
                return ", ".join(f"{caps[arm][k - 1]:.1f} bits at k = {k}" for k in ks[arm])
            out.append(f"the {t} prefix can carry {carried(t)}, the {b} prefix {carried(b)}")
        all_t, all_b = iv(t, "probe_top1_all"), iv(b, "probe_top1_all")
        if all_t.mean is not None and all_b.mean is not None:
            out.append(f"with all tokens the probe reads {all_t.format(2)} ({t}) vs {all_b.format(2)} ({b})")
    if c.kind == "paired" and v.difference is not None and v.difference.mean is not None:
        s = ds.get("sampling") or {}
        out.append(f"aware minus constant CFG: {v.difference.format(3)} (guidance scale {s.get('guidance_scale')}, "
                   f"power {s.get('guidance_power')}, fixed before the runs)")
    if not out:
        out.append("the per-seed values are in report.json; nothing else the study measured explains it")
    return out


# ----------------------------------------------------------------------------- build + write
def build_report(results: Mapping[str, Any]) -> dict:
    """The report as a strict-JSON dict (tables, verdicts, why-not statements)."""
    datasets = {}
    verdicts = []
    for name, ds in results["datasets"].items():
        table = seed_table(ds)
        vs = judge_all(table, PAPER_CLAIMS)
        for v in vs:
            v.why_not = why_not(v, ds, table)
            verdicts.append({"dataset": name, **v.to_dict()})
        datasets[name] = {
            "description": ds.get("description"), "num_train": ds.get("num_train"), "num_heldout": ds.get("num_heldout"),
            "num_classes": ds.get("num_classes"), "image_size": ds.get("image_size"), "probe_k": ds.get("probe_k"),
            "classifier": ds.get("classifier"), "sampling": ds.get("sampling"),
            "arms": {arm: {k: a.get(k) for k in ("schedule", "mean_k", "bpp", "istar_computed")}
                     for arm, a in ds["arms"].items()},
            "tables": {"table1": _rows_table1(ds), "table4": _rows_table4(ds, table),
                       "generation": _rows_generation(ds, table), "ar": _rows_ar(ds, table),
                       "table6": _rows_table6(ds, table), "utilisation": _rows_utilisation(ds),
                       "position_use": _rows_position_use(ds)},
            "per_seed": table,
            "curves": {arm: {str(s): v.get("curves", {}) for s, v in a.get("seeds", {}).items()}
                       for arm, a in ds["arms"].items()},
            "notes": {arm: {str(s): v.get("notes", {}) for s, v in a.get("seeds", {}).items() if v.get("notes")}
                      for arm, a in ds["arms"].items()},
        }
    counts = {k: sum(v["verdict"] == k for v in verdicts) for k in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}
    return {"schema": SCHEMA, "study": results.get("study", {}), "interval": INTERVAL_METHOD,
            "verdict_rules": VERDICT_RULES, "verdict_counts": counts, "verdicts": verdicts, "datasets": datasets,
            "figures": results.get("figures", {})}


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _ours_cell(o: Mapping[str, Any]) -> str:
    """A verdict's measured side: treatment, and baseline (with the paired difference) or Eq. 2's value."""
    ours = _fmt(o["treatment"], 3)
    if o.get("difference"):
        ours += f" vs {_fmt(o['baseline'], 3)} (diff {_fmt(o['difference'], 3)})"
    elif o.get("baseline"):
        ours += f" vs {_fmt(o['baseline'], 3)}"
    elif o.get("reference") is not None:
        ours += f" vs Eq. 2: {o['reference']:g}"
    return ours


def format_markdown(report: Mapping[str, Any]) -> str:
    """report.md from :func:`build_report`'s dict."""
    st = report.get("study", {})
    L = ["# Does VCQ reproduce? The study's report", ""]
    L += [f"Run: {st.get('date', '?')} on {st.get('machine', '?')}, {_num(st.get('wall_s'), 0)} s; seeds "
          f"{st.get('seeds', '?')}. Every cell is the mean and {report['interval']}. Verdicts are computed "
          f"by `recipes/study/verdict.py`: {report['verdict_rules']}", ""]
    if st.get("warnings"):
        L += ["**Warnings** (computed from the config and the measurements):", ""]
        L += [f"- {w}" for w in st["warnings"]] + [""]
    if st.get("not_finished"):
        L += [f"**Not finished, left out:** {', '.join(st['not_finished'])}", ""]
    c = report["verdict_counts"]
    L += [f"**Verdicts: {c[REPRODUCED]} reproduced, {c[NOT_REPRODUCED]} not reproduced, {c[INCONCLUSIVE]} inconclusive.**",
          "", "## Verdicts", ""]
    rows = []
    for v in report["verdicts"]:
        ours = _ours_cell(v["ours"])
        pt, pb = v["paper"]["treatment"], v["paper"]["baseline"]
        paper = "-" if pt is None and pb is None else f"{_num(pt)} vs {_num(pb)}"
        rows.append([v["dataset"], v["claim"] + (" (study question)" if v["study_question"] else ""), v["source"],
                     v["comparison"], ours, paper, f"**{v['verdict']}**",
                     "; ".join(v["why_not"]) if v["why_not"] else ""])
    L += _md_table(["data", "claim", "paper", "comparison", "ours", "paper (treatment vs baseline)", "verdict",
                    "why not"], rows)
    for name, ds in report["datasets"].items():
        t = ds["tables"]
        clf = ds.get("classifier") or {}
        L += ["", f"## {name}", "", f"Data: {ds.get('description')}. {ds.get('num_train')} training / "
              f"{ds.get('num_heldout')} held-out images, {ds.get('num_classes')} classes, {ds.get('image_size')} px.",
              f"Measuring classifier (trained on the real training images, frozen before any arm was evaluated): "
              f"held-out top-1 {_num(clf.get('heldout_top1'), 3)} (chance {_num(clf.get('chance'), 3)}).", ""]
        L += ["### Table 1 in kind: computed (Eq. 2) vs measured i* on training subsets", "",
              "Measured i*: the first prefix length whose joint prefix entropy is within 0.5 bit of log2 N "
              "(prefixes unique up to that slack).", ""]
        L += _md_table(["arm", "N", "log2 N", "i* computed", "i* measured", "seeds never reaching it"],
                       [[r["arm"], str(r["n"]), f"{r['log2_n']:.1f}", str(r["istar_computed"]),
                         _fmt(r["istar_measured"], 1), str(r["never_reached"])] for r in t["table1"]])
        from vcq_plugin.analysis.theory import table1

        L += ["", "Paper Table 1 (K = 16384, computed by Eq. 1; the paper's printed i*):", ""]
        L += _md_table(["dataset", "N", "log2 N", "i* (Eq. 1)", "i* (paper)"],
                       [[r["dataset"], f"{r['num_samples']:,}", f"{r['log2_num_samples']:.1f}", str(r["istar"]),
                         str(r["paper_istar"])] for r in table1()])
        L += ["", "### Table 4 in kind: schedules under the same tokenizer + AR recipe", "",
              "gFD: Frechet distance in the measuring classifier's features (not Inception: not comparable in value "
              "to the paper's gFID, only in direction). With CFG = aware CFG (for a constant schedule the aware rule is "
              "RAR's standard cosine CFG, the paper's baseline).", ""]
        L += _md_table(["arm", "mean K", "i* (Eq. 2)", "PSNR", "rFD", "class kept", "gFD (CFG)", "gFD w/o CFG",
                        "paper row", "PSNR", "rFID", "gFID", "gFID w/o CFG"],
                       [[r["label"], _num(r["mean_k"], 1), str(r["istar_computed"]), _fmt(r["psnr"]), _fmt(r["rfd"], 3),
                         _fmt(r["recon_class_acc"]),
                         _fmt(r["fd_cfg"], 3), _fmt(r["fd_nocfg"], 3)] +
                        ([r["paper"]["label"], _num(r["paper"]["psnr"]), _num(r["paper"]["rfid"]),
                          _num(r["paper"]["gfid"]), _num(r["paper"]["gfid_nocfg"])] if r["paper"] else ["-"] * 5)
                        for r in t["table4"]])
        L += ["", "### Generation by guidance mode (equal sample counts)", ""]
        L += _md_table(["arm", "guidance", "FD", "precision", "recall", "class accuracy", "token copies",
                        "NN distance / held-out"],
                       [[r["arm"], MODE_NAMES[r["mode"]], _fmt(r["fd"], 3), _fmt(r["precision"]), _fmt(r["recall"]),
                         _fmt(r["class_acc"]), _fmt(r["token_copy"], 3), _fmt(r["nn_ratio"])] for r in t["generation"]])
        L += ["", "### AR next-token NLL (bits/token): memorisation shows as a held-out minus train gap", ""]
        L += _md_table(["arm", "train", "held-out", "gap"],
                       [[r["arm"], _fmt(r["nll_train"], 3), _fmt(r["nll_heldout"], 3), _fmt(r["nll_gap"], 3)]
                        for r in t["ar"]])
        L += ["", "### Table 6 in kind: linear probe on the first tokens (top-1)", ""]
        L += _md_table(["arm", "k", "top-1 at k", "k at equal capacity", "top-1 at equal capacity", "top-1 all tokens",
                        f"paper top-1 (k={TABLE6_K})", "paper top-1 (all 256)"],
                       [[r["arm"], str(r["k"]), _fmt(r["top1_equal_k"], 3), ", ".join(map(str, r["k_equal_capacity"])),
                         _fmt(r["top1_equal_capacity"], 3), _fmt(r["top1_all"], 3),
                         _num((r["paper"] or {}).get("top1"), 3), _num((r["paper"] or {}).get("top1_all"), 3)]
                        for r in t["table6"]])
        L += ["", "### Codebook use per arm and seed", ""]
        L += _md_table(["arm", "seed", "lowest per-position utilisation", "positions carrying 0 bits before the cliff"],
                       [[r["arm"], r["seed"], _num(r["util_min"], 3),
                         ", ".join(map(str, r["positions_without_bits"])) or "none"] for r in t["utilisation"]])
        if t.get("position_use"):
            n = max(len(r["mean"]) for r in t["position_use"])
            L += ["", "### Per-position codebook use: share of the K(i) codes used at position i (training tokens), "
                  "mean over seeds (lowest seed in brackets)", ""]
            L += _md_table(["arm"] + [str(i + 1) for i in range(n)],
                           [[r["arm"]] + [f"{m:.2f} ({lo:.2f})" for m, lo in zip(r["mean"], r["min"])]
                            for r in t["position_use"]])
    if report.get("figures"):
        L += ["", "## Figures", ""] + [f"- {k}: `{v}`" for k, v in report["figures"].items()]
    return "\n".join(L) + "\n"


def format_summary(report: Mapping[str, Any]) -> str:
    """A short Markdown summary of :func:`build_report`'s dict (what the README pastes): the run, the
    verdicts, per dataset the main numbers per arm and the per-position codebook use, and the computed
    why-not statements. Every number comes from the report; nothing here is written by hand."""
    st = report.get("study", {})
    wall = st.get("wall_s")
    seeds = st.get("seeds_per_dataset") or {}
    L = [f"Run {st.get('date', '?')}, {st.get('machine', '?')}; wall time "
         f"{'?' if wall is None else f'{wall / 60:.0f} min'}; seeds "
         + ("; ".join(f"{d}: {s}" for d, s in seeds.items()) if seeds else str(st.get("seeds", "?")))
         + f". Cells: mean [95% t-interval over seeds].", ""]
    if st.get("warnings"):
        L += [f"- warning: {w}" for w in st["warnings"]] + [""]
    c = report["verdict_counts"]
    L += [f"**{c[REPRODUCED]} reproduced, {c[NOT_REPRODUCED]} not reproduced, {c[INCONCLUSIVE]} inconclusive.**", ""]
    rows = []
    for v in report["verdicts"]:
        ours = _ours_cell(v["ours"])
        pt, pb = v["paper"]["treatment"], v["paper"]["baseline"]
        rows.append([v["dataset"], v["claim"], v["comparison"].split(" (")[0], ours,
                     "-" if pt is None and pb is None else f"{_num(pt)} vs {_num(pb)}", f"**{v['verdict']}**"])
    L += _md_table(["data", "claim", "comparison", "ours", "paper", "verdict"], rows)
    for name, ds in report["datasets"].items():
        t, table = ds["tables"], ds["per_seed"]
        L += ["", f"{name} ({ds.get('num_train')} training images, {ds.get('num_classes')} classes; measuring "
              f"classifier held-out top-1 {_num((ds.get('classifier') or {}).get('heldout_top1'), 3)}):", ""]
        L += _md_table(["arm", "mean K", "i* Eq. 2", "i* measured", "PSNR", "class kept", "NLL gap", "gFD w/o CFG",
                        "gFD aware CFG", "probe top-1 (k)", "probe top-1 (equal capacity)"],
                       [[r["arm"], _num(r["mean_k"], 1), str(r["istar_computed"]), _fmt(_iv(table, r["arm"], "istar_measured"), 1),
                         _fmt(r["psnr"]), _fmt(r["recon_class_acc"]), _fmt(_iv(table, r["arm"], "nll_gap"), 3),
                         _fmt(r["fd_nocfg"], 3), _fmt(r["fd_cfg"], 3),
                         _fmt(_iv(table, r["arm"], "probe_top1_equal_k"), 3),
                         _fmt(_iv(table, r["arm"], "probe_top1_equal_capacity"), 3)] for r in t["table4"]])
        if t.get("position_use"):
            n = max(len(r["mean"]) for r in t["position_use"])
            show = list(range(min(4, n)))
            L += ["", "Per-position codebook use (share of the K(i) codes used, mean over seeds; lowest seed in brackets):", ""]
            L += _md_table(["arm"] + [f"pos {i + 1}" for i in show] + ["lowest position (mean)", "lowest seed, any position"],
                           [[r["arm"]] + [f"{r['mean'][i]:.2f} ({r['min'][i]:.2f})" for i in show]
                            + [f"{min(r['mean']):.2f} at {1 + r['mean'].index(min(r['mean']))}", f"{min(r['min']):.2f}"]
                            for r in t["position_use"]])
    notes = [v for v in report["verdicts"] if v["verdict"] != REPRODUCED and v["why_not"]]
    if notes:
        L += ["", "Why not reproduced (statements computed from the data by `recipes/study/report.py`):", ""]
        L += [f"- {v['dataset']} / {v['claim']} ({v['verdict']}): " + "; ".join(v["why_not"]) for v in notes]
    return "\n".join(L) + "\n"


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json`` (strict JSON), ``report.md`` and ``summary.md`` (:func:`format_summary`) into
    ``out_dir``; returns their paths."""
    report = build_report(results)
    out = Path(out_dir)
    text = json.dumps(report, indent=1, allow_nan=False)  # raises on NaN / inf: metrics must be None + reason
    return {"json": atomic_write_text(out / "report.json", text + "\n").path,
            "md": atomic_write_text(out / "report.md", format_markdown(report)).path,
            "summary": atomic_write_text(out / "summary.md", format_summary(report)).path}
