"""cliff_report: report.json + Fig. 2(a)/(b) plots for several token sets on one axis."""
import json
import math
import os

import numpy as np
import pytest

from vcq_plugin.analysis.entropy import measured_transition_position, prefix_entropy
from vcq_plugin.analysis.plots import entropy_cliff_figure, schedules_figure
from vcq_plugin.analysis.probe import equal_capacity_k
from vcq_plugin.analysis.report import cliff_report, format_table
from vcq_plugin.analysis.theory import prop1_bound
from vcq_plugin.schedule import CodebookSchedule


def _sets(n=1500, length=20, seed=0):
    rng = np.random.default_rng(seed)
    cos = CodebookSchedule("cosine", k_min=2, k_max=256, seq_len=length)
    const = CodebookSchedule("constant", k_max=256, seq_len=length)
    labels = rng.integers(0, 4, size=n)
    t_cos = (rng.random((n, length)) * cos.sizes.numpy()).astype(np.uint16)
    t_cos[:, 0], t_cos[:, 1] = labels % 2, labels // 2
    t_const = rng.integers(0, 256, size=(n, length)).astype(np.uint16)
    return {"vcq_cosine": (t_cos, cos), "constant": (t_const, const)}, labels, rng.normal(size=(256, 4))


def test_cliff_report_writes_json_and_plots(tmp_path):
    sets, labels, codebook = _sets()
    rep = cliff_report(sets, str(tmp_path), labels=labels, codebooks={"vcq_cosine": codebook}, probe_k=2,
                       progress=False)
    with open(tmp_path / "report.json") as f:
        on_disk = json.load(f, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert on_disk["sets"].keys() == rep["sets"].keys() == {"vcq_cosine", "constant"}
    for stem in ("fig2a_entropy_cliff", "fig2b_schedules"):
        for ext in ("png", "svg"):
            assert os.path.getsize(tmp_path / f"{stem}.{ext}") > 1000
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    c, k = on_disk["sets"]["vcq_cosine"], on_disk["sets"]["constant"]
    n = 1500
    assert c["computed_istar"] == CodebookSchedule.from_spec(c["schedule"]).transition_position(n)
    assert k["computed_istar"] == 2  # 8 + 8 bits >= log2 1500 = 10.55
    h = np.array(k["conditional_entropy"])
    for name, entry in on_disk["sets"].items():
        np.testing.assert_allclose(entry["prefix_entropy"], prefix_entropy(sets[name][0]), atol=1e-12)
        assert entry["measured_istar"] == measured_transition_position(sets[name][0], 0.5)
        np.testing.assert_allclose(entry["capacity_bits"], sets[name][1].capacity_bits().numpy())
    assert k["measured_istar"] == 2  # 1500 random rows over 256 codes: unique after 2 tokens (8 + 8 bits)
    assert k["saturated_at"] >= 2 and np.all(h[k["saturated_at"]:] == 0) and h[k["saturated_at"] - 1] > 0
    np.testing.assert_allclose(k["prop1_bound"], prop1_bound(n, sets["constant"][1]))
    assert c["utilisation"][0] == 1.0 and 0 < k["utilisation"][5] <= 1
    assert c["codes_used"][:2] == [2, 2] and k["codes_used"][0] == 256 and c["warnings"] == [] == on_disk["warnings"]
    assert len(c["conditional_entropy"]) == 20 and math.isclose(sum(h), k["total_entropy_bits"])
    # probe only where both labels and a codebook are known; the label sits in the first 2 tokens
    assert k["probe"] is None and c["probe"]["top1"] > 0.95
    assert on_disk["tolerance_bits"] == 0.5 and "threshold_bits" not in on_disk
    why = on_disk["definitions"]["measured_istar"]
    assert "prefix entropy" in why and "within tolerance_bits of log2 N" in why and "K(0) = 2: at most 1 bit" in why
    table = format_table(rep)
    assert "vcq_cosine" in table and "constant" in table
    for column in ("i* Eq.2:", "i* meas:", "unique@:", "util<k:", "probe top1:"):
        assert column in table  # every column explained


def test_cliff_report_warns_on_collapse_and_probes_at_equal_capacity(tmp_path):
    sets, labels, codebook = _sets(n=600)
    t, s = sets["vcq_cosine"]
    t = t.copy()
    t[:, 2] = 1  # K(2) = 5 codes but every row uses code 1: codebook collapse at the 3rd position
    rep = cliff_report({"vcq": (t, s), "constant": sets["constant"]}, None, labels=labels, codebooks=codebook,
                       probe_k=3, probe_bits=16.0, progress=False)
    w = rep["sets"]["vcq"]["warnings"]
    assert len(w) == 1 and "codebook collapse: 1 position(s) use one code only" in w[0] and f"position 3 (K={int(s.sizes[2])})" in w[0]
    assert rep["warnings"] == [f"vcq: {w[0]}"] and rep["sets"]["constant"]["warnings"] == []
    assert "WARNING vcq: codebook collapse" in format_table(rep)
    ks = equal_capacity_k({"vcq": s, "constant": sets["constant"][1]}, 16.0)
    assert ks["constant"] == 2 and ks["vcq"] > 3
    for name, entry in rep["sets"].items():
        eq = entry["probe_equal_capacity"]
        assert eq["k"] == ks[name] and eq["target_bits"] == 16.0 and entry["probe"]["k"] == 3
        assert eq["capacity_bits"] == pytest.approx(float(np.log2(sets[name if name == "constant" else "vcq_cosine"][1]
                                                                   .sizes.numpy()[: ks[name]]).sum()))
    assert rep["probe_bits"] == 16.0


def test_fig2a_legend_names_both_istars_and_figures_count_from_1():
    curves = [
        {"name": "vcq", "conditional": np.linspace(2, 0, 40), "remaining_budget": np.linspace(10, -5, 40),
         "istar": 9, "measured_istar": 37},
        {"name": "constant", "conditional": np.zeros(40), "remaining_budget": np.zeros(40), "istar": None,
         "measured_istar": None},
    ]
    fig = entropy_cliff_figure(curves, max_positions=32, tolerance=0.5)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "vcq: i* computed (Eq. 2) = 9" in texts
    assert "vcq: i* measured = 37 (prefix entropy within 0.5 bit of log2 N)" in texts
    assert "constant: i* computed (Eq. 2) never reached" in texts
    assert "constant: i* measured not reached (prefix entropy within 0.5 bit of log2 N)" in texts
    assert ax.get_xlim()[1] >= 37.5                       # a mark beyond max_positions stays in view
    assert ax.lines[0].get_xdata()[0] == 1 and "1-based" in ax.get_xlabel()
    star = [ln for ln in ax.lines if ln.get_label().startswith("vcq: i* measured")][0]
    assert list(star.get_xdata()) == [37] and star.get_ydata()[0] == pytest.approx(curves[0]["conditional"][36])
    # with prefix entropies a right panel shows where H(x_<=i) reaches log2 N: the measured i*
    joint = dict(curves[0], prefix_entropy=np.minimum(np.arange(1, 41) * 0.3, 11.0), log2_num_samples=11.0,
                 capacity=np.arange(1, 41) * 2.0, measured_istar=36)
    fig2 = entropy_cliff_figure([joint], tolerance=0.5)
    right = fig2.axes[1]
    assert len(fig2.axes) == 2 and "1-based" in right.get_xlabel()
    stars = [ln for ln in right.lines if ln.get_marker() == "*"]
    assert [list(ln.get_xdata()) for ln in stars] == [[36]] and stars[0].get_ydata()[0] == pytest.approx(10.8)
    assert right.get_ylim()[1] == pytest.approx(1.25 * 11.0)
    fig_b = schedules_figure({"cos": CodebookSchedule.from_spec("vcq_cosine", k_max=64, seq_len=16)})
    ax_b = fig_b.axes[0]
    assert list(ax_b.lines[0].get_xdata()) == list(range(1, 17)) and "1-based" in ax_b.get_xlabel()
    assert ax_b.lines[0].get_ydata()[0] == 2                # K at position 1 is K_min


def test_cliff_report_bad_input(tmp_path):
    sets, labels, codebook = _sets(n=200)
    t, s = sets["constant"]
    with pytest.raises(ValueError, match=r"position 0 must be < K\(0\) = 2 of the declared schedule"):
        cliff_report({"x": (t, CodebookSchedule("cosine", k_max=256, seq_len=20))}, None, progress=False)
    with pytest.raises(ValueError, match="seq_len"):
        cliff_report({"x": (t[:, :5], s)}, None, progress=False)
    with pytest.raises(ValueError, match="labels must be a 1-D array"):
        cliff_report({"x": (t, s)}, None, labels=labels[:10], codebooks=codebook, progress=False)
    with pytest.raises(ValueError, match="not token sets"):
        cliff_report({"x": (t, s)}, None, labels={"y": labels}, codebooks=codebook, progress=False)
    with pytest.raises(ValueError, match="k must be <= the sequence length"):
        cliff_report({"x": (t, s)}, None, labels=labels, codebooks=codebook, probe_k=21, progress=False)
    with pytest.raises(ValueError, match="tolerance must be a finite number of bits >= 0"):
        cliff_report({"x": (t, s)}, None, tolerance=-1, progress=False)
    assert not os.listdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ValueError, match="taken' exists and is not a folder"):
        cliff_report({"x": (t, s)}, tmp_path / "taken", progress=False)
