"""cliff_report: report.json + Fig. 2(a)/(b) plots for several token sets on one axis."""
import json
import math
import os

import numpy as np
import pytest

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
        on_disk = json.load(f)
    assert on_disk["sets"].keys() == rep["sets"].keys() == {"vcq_cosine", "constant"}
    for stem in ("fig2a_entropy_cliff", "fig2b_schedules"):
        for ext in ("png", "svg"):
            assert os.path.getsize(tmp_path / f"{stem}.{ext}") > 1000
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    c, k = on_disk["sets"]["vcq_cosine"], on_disk["sets"]["constant"]
    n = 1500
    assert c["computed_istar"] == CodebookSchedule.from_dict(c["schedule"]).transition_position(n)
    assert k["computed_istar"] == 2  # 8 + 8 bits >= log2 1500 = 10.55
    h = np.array(k["conditional_entropy"])
    assert k["measured_istar"] == int(np.nonzero(h < 0.5)[0][0])
    assert k["first_low_entropy_position"] == k["measured_istar"] + 1
    assert k["saturated_at"] >= 2 and np.all(h[k["saturated_at"]:] == 0) and h[k["saturated_at"] - 1] > 0
    np.testing.assert_allclose(k["prop1_bound"], prop1_bound(n, sets["constant"][1]))
    assert c["utilisation"][0] == 1.0 and 0 < k["utilisation"][5] <= 1
    assert len(c["conditional_entropy"]) == 20 and math.isclose(sum(h), k["total_entropy_bits"])
    # probe only where both labels and a codebook are known; the label sits in the first 2 tokens
    assert k["probe"] is None and c["probe"]["top1"] > 0.95
    assert "measured_istar" in on_disk["definitions"] and on_disk["threshold_bits"] == 0.5
    table = format_table(rep)
    assert "vcq_cosine" in table and "constant" in table


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
    assert not os.listdir(tmp_path)
