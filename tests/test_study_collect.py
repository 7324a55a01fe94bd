"""``collect``: paper Table 4 / Table 6 layout from full-scale eval JSON made up here."""
from __future__ import annotations

import json
import math

import pytest

from recipes.study.collect import CollectError, collect, format_markdown, main, read_run

CONST = {"kind": "constant", "k_max": 16384, "seq_len": 256}
COSINE = {"kind": "cosine", "k_min": 2, "k_max": 16384, "seq_len": 256}


def eval_json(fid, *, n=50_000, comparable=True, **extra):
    """What `vcq eval --out` writes (compute_generation_metrics + samples/reference paths)."""
    d = {"fid": fid, "is_mean": 200.0, "is_std": 3.0, "precision": 0.8, "recall": 0.5, "f_score": 0.62,
         "num_samples": n, "num_reference": 10_000, "comparable": comparable,
         "feature_extractor": "inception-v3-compat", "feature_layer": "2048", "reference_stats": "npz",
         "reference_cache": "off", "warnings": [], "samples": "samples.npz", "reference": "VIRTUAL_imagenet256_labeled.npz"}
    d.update(extra)
    return d


def make_run(root, name, schedule, *, cfg=None, nocfg=None, psnr=None, rfid=None, probes=None):
    d = root / name
    d.mkdir()
    (d / "schedule.json").write_text(json.dumps(schedule))
    if cfg is not None:
        (d / "eval_cfg.json").write_text(json.dumps(eval_json(cfg)))
    if nocfg is not None:
        (d / "eval_nocfg.json").write_text(json.dumps(eval_json(nocfg)))
    if psnr is not None or rfid is not None:
        (d / "recon_eval.json").write_text(json.dumps({"psnr": psnr, "rfid": rfid, "lpips": None}))
    if probes is not None:
        (d / "probe.json").write_text(json.dumps(probes))
    return d


def test_runs_of_one_schedule_become_one_row_with_an_interval(tmp_path):
    runs = [make_run(tmp_path, f"const{s}", CONST, cfg=6.4 + s * 0.1, nocfg=28.0 + s, psnr=20.6, rfid=2.3,
                     probes=[{"k": 10, "top1": 0.27, "top5": 0.49}, {"k": 256, "top1": 0.48, "top5": 0.71}])
            for s in range(3)]
    runs += [make_run(tmp_path, f"vcq{s}", COSINE, cfg=4.8, nocfg=14.8 + s * 0.2, psnr=20.0, rfid=2.8,
                      probes={"k": 10, "top1": 0.44, "top5": 0.68})
             for s in range(2)]
    c = collect(runs)
    t4 = {r["schedule"]: r for r in c["table4"]}
    const = t4["Constant (K=16384)"]
    assert const["runs"] == 3 and const["mean_k"] == 16384 and const["bpp"] == pytest.approx(0.055, abs=5e-4)
    assert const["gfid_nocfg"]["mean"] == pytest.approx(29.0) and const["gfid_nocfg"]["n"] == 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975,2} * s / sqrt(n), s = 1
    assert const["gfid_nocfg"]["high"] == pytest.approx(29.0 + half)
    assert const["paper"]["gfid_nocfg"] == 27.98 and const["paper"]["psnr"] == 20.67
    vcq = t4["VCQ-Cosine (2..16384, L=256)"]
    assert vcq["runs"] == 2 and round(vcq["mean_k"]) == 5964 and vcq["paper"]["gfid"] == 4.79
    assert [r["schedule"] for r in c["table4"]][0].startswith("Constant")  # constant rows first, as the paper
    t6 = {(r["schedule"], r["k"]): r for r in c["table6"]}
    assert t6[("Constant (K=16384)", 10)]["top1"]["mean"] == pytest.approx(0.27)
    assert t6[("Constant (K=16384)", 10)]["paper"] == {"top1": 0.2712, "top5": 0.4927}
    assert t6[("VCQ-Cosine (2..16384, L=256)", 10)]["paper"]["top1"] == 0.4377
    assert ("VCQ-Cosine (2..16384, L=256)", 256) not in t6
    json.dumps(c, allow_nan=False)  # strict JSON
    md = format_markdown(c)
    assert "| Constant (K=16384) | 3 |" in md and "27.98" in md and "43.8" in md


def test_a_schedule_the_paper_lacks_has_no_paper_column_and_notes_flag_weak_evals(tmp_path):
    d = make_run(tmp_path, "small", {"kind": "cosine", "k_min": 2, "k_max": 4096, "seq_len": 128}, cfg=9.0)
    (d / "eval_nocfg.json").write_text(json.dumps(eval_json(20.0, n=10_000, comparable=False)))
    c = collect([d], image_size=128)
    row = c["table4"][0]
    assert row["paper"] is None and row["gfid"]["mean"] == 9.0 and row["gfid"]["low"] is None
    assert row["psnr"]["mean"] is None  # no recon_eval.json: empty cell, not an error
    assert any("not ADM-comparable" in n for n in c["notes"]) and any("10000 samples" in n for n in c["notes"])
    md = format_markdown(c)
    assert "| - |" in md and "9.00 |" in md


@pytest.mark.parametrize("files, message", [
    ({}, "no schedule.json"),
    ({"schedule.json": json.dumps({"kind": "zigzag"})}, "not a codebook schedule"),
    ({"schedule.json": json.dumps(CONST)}, "none of"),
    ({"schedule.json": json.dumps(CONST), "eval_cfg.json": "{\"fid\": NaN}"}, "not strict JSON"),
    ({"schedule.json": json.dumps(CONST), "eval_cfg.json": "{\"fid\": 1.0"}, "not valid JSON"),
    ({"schedule.json": json.dumps(CONST), "eval_cfg.json": json.dumps({"psnr": 3.0})}, "has no 'fid'"),
    ({"schedule.json": json.dumps(CONST), "eval_cfg.json": json.dumps({"fid": "low"})}, "finite number"),
    ({"schedule.json": json.dumps(CONST), "probe.json": json.dumps([{"top1": 0.3}])}, "integer 'k'"),
    ({"schedule.json": json.dumps(CONST), "recon_eval.json": json.dumps({"lpips": 0.1})}, "neither 'psnr'"),
])
def test_bad_run_folders_name_the_file(tmp_path, files, message):
    d = tmp_path / "run"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    with pytest.raises(CollectError, match=message):
        read_run(d)


def test_main_writes_strict_json_and_markdown(tmp_path, capsys):
    runs = [make_run(tmp_path, f"r{s}", CONST, cfg=6.0 + s, nocfg=27.0 + s) for s in range(2)]
    out_json, out_md = tmp_path / "t.json", tmp_path / "t.md"
    assert main([str(r) for r in runs] + ["--out-json", str(out_json), "--out-md", str(out_md)]) == 0
    data = json.loads(out_json.read_text())
    assert data["table4"][0]["gfid"]["mean"] == 6.5
    assert out_md.read_text() == capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
