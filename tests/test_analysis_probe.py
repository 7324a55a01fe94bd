"""First-k linear probe (paper Table 6): beats chance when the first tokens carry the label."""
import numpy as np
import pytest
import torch

from vcq_plugin.analysis.probe import equal_capacity_k, first_k_linear_probe
from vcq_plugin.schedule import CodebookSchedule


def _data(informative: bool, n=600, num_classes=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    tokens = rng.integers(0, 16, size=(n, 12))
    if informative:
        tokens[:, 0] = labels  # the label is written into the first token (a K=8 position)
        tokens[:, 1] = (labels + rng.integers(0, 2, size=n)) % num_classes
    codebook = rng.normal(size=(16, 6)).astype(np.float32)
    return tokens, labels, codebook


def test_probe_beats_chance_when_first_tokens_carry_the_label():
    tokens, labels, codebook = _data(True)
    r = first_k_linear_probe(tokens, labels, codebook, k=3, seed=0)
    assert r["chance"] == pytest.approx(1 / 8) and r["chance_top5"] == pytest.approx(5 / 8)
    assert r["top1"] > 0.9 and r["top5"] > 0.99
    assert (r["n_train"], r["n_test"], r["k"], r["num_classes"]) == (480, 120, 3, 8)
    assert "first k positions" in r["feature"] and "scikit-learn" in r["feature"] and r["converged"] is True
    # deterministic under a seed; torch codebook gives the same numbers
    assert first_k_linear_probe(tokens, labels, torch.from_numpy(codebook), k=3, seed=0) == r


def test_probe_is_at_chance_when_they_do_not():
    tokens, labels, codebook = _data(True)
    tokens_late = tokens.copy()
    tokens_late[:, :2] = np.random.default_rng(9).integers(0, 16, size=(600, 2))  # label info only at 0..1
    r = first_k_linear_probe(tokens_late, labels, codebook, k=3, seed=0)
    # 120 test samples, chance 1/8: a generous 4-sigma band (sigma ~ 0.03)
    assert abs(r["top1"] - r["chance"]) < 0.13
    assert abs(r["top5"] - r["chance_top5"]) < 0.18


def test_probe_bad_input():
    tokens, labels, codebook = _data(True, n=50)
    with pytest.raises(ValueError, match="labels must be a 1-D array with one label per token row"):
        first_k_linear_probe(tokens, labels[:-1], codebook)
    with pytest.raises(ValueError, match="k must be <= the sequence length L=12"):
        first_k_linear_probe(tokens, labels, codebook, k=13)
    with pytest.raises(ValueError, match="codebook size 4"):
        first_k_linear_probe(tokens, labels, codebook[:4], k=2)
    with pytest.raises(ValueError, match="codebook must be a non-empty 2-D"):
        first_k_linear_probe(tokens, labels, codebook[0], k=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        first_k_linear_probe(tokens, np.zeros(50, dtype=int), codebook, k=2)
    with pytest.raises(ValueError, match="2-D"):
        first_k_linear_probe(tokens[:, 0], labels, codebook, k=1)


def test_class_missing_from_the_training_split_is_never_predicted():
    tokens, labels, codebook = _data(True)
    labels = labels.copy()
    labels[17] = 99  # a class with one row: the stratified split puts it in the test set
    r = first_k_linear_probe(tokens, labels, codebook, k=3, seed=0)
    assert r["num_classes"] == 9 and r["n_test"] == 120 and r["top1"] > 0.9


def test_equal_capacity_k_matches_brute_force():
    sched = {
        "constant": CodebookSchedule.from_spec("constant", k_max=256, seq_len=32),  # 8 bits per position
        "vcq_cosine": CodebookSchedule.from_spec("vcq_cosine", k_max=256, seq_len=32),
        "explicit": CodebookSchedule.from_spec([4, 4, 16, 16]),                     # C = 2, 4, 8, 12 bits
    }
    for bits in (1.0, 5.0, 11.9, 32.0, 40.0):
        got = equal_capacity_k({k: v for k, v in sched.items() if k != "explicit" or bits <= 12}, bits)
        for name, k in got.items():
            sizes = sched[name].sizes.numpy()
            gaps = [abs(np.log2(sizes[:j]).sum() - bits) for j in range(1, len(sizes) + 1)]
            assert k == 1 + int(np.argmin(gaps)), (name, bits)
    assert equal_capacity_k({"c": sched["constant"]}, 32.0) == {"c": 4}
    assert equal_capacity_k({"e": sched["explicit"]}, 3.0) == {"e": 1}   # 2 and 4 bits tie: the smaller k
    assert equal_capacity_k({"e": [4, 4, 16, 16]}, 10.0) == {"e": 3}      # any schedule description
    with pytest.raises(ValueError, match=r"exceeds the total capacity of schedule 'e': C\(L=4\) = 12.00 bits"):
        equal_capacity_k({"e": sched["explicit"]}, 12.5)
    with pytest.raises(ValueError, match="bits must be a finite number > 0"):
        equal_capacity_k(sched, 0)
    with pytest.raises(TypeError, match="bits must be a number"):
        equal_capacity_k(sched, "8")
