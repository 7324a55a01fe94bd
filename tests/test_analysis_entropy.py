"""Measured entropy cliff: exact values on constructed data, a brute-force reference, bounds, errors."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from vcq_plugin.analysis import entropy as ent
from vcq_plugin.analysis.entropy import (
    codebook_usage,
    codebook_utilisation,
    conditional_entropy,
    measured_transition_position,
    prefix_entropy,
    prefix_entropy_profile,
    validate_tokens,
)
from vcq_plugin.analysis.theory import prop1_bound
from vcq_plugin.schedule import CodebookSchedule


def brute_force_joint(tokens: np.ndarray) -> np.ndarray:
    """H(x_<=i) from Counter over tuple prefixes (the obvious, slow way)."""
    n, length = tokens.shape
    joint = []
    for i in range(1, length + 1):
        counts = np.array(list(Counter(map(tuple, tokens[:, :i].tolist())).values()), dtype=np.float64)
        p = counts / n
        joint.append(float(-(p * np.log2(p)).sum()))
    return np.array(joint)


def brute_force_conditional(tokens: np.ndarray) -> np.ndarray:
    """H(x_<=i) - H(x_<i) from the brute-force prefix entropies."""
    joint = brute_force_joint(tokens)
    return joint - np.concatenate([[0.0], joint[:-1]])


def brute_force_transition(tokens: np.ndarray, tolerance: float):
    """First 1-based prefix length whose brute-force prefix entropy is within ``tolerance`` of log2 N."""
    hit = np.nonzero(brute_force_joint(tokens) >= math.log2(tokens.shape[0]) - tolerance - 1e-9)[0]
    return int(hit[0]) + 1 if hit.size else None


def mixed_radix_rows(sizes, extra_cols, extra_alpha, rng):
    """All prod(sizes) combinations of per-position alphabets ``sizes`` (each row once, shuffled),
    then ``extra_cols`` random columns in [0, extra_alpha)."""
    num_rows = int(np.prod(sizes))
    digits = np.zeros((num_rows, len(sizes)), dtype=np.int64)
    r = np.arange(num_rows)
    for j in range(len(sizes) - 1, -1, -1):
        digits[:, j] = r % sizes[j]
        r //= sizes[j]
    extra = rng.integers(0, extra_alpha, size=(num_rows, extra_cols))
    rows = np.concatenate([digits, extra], axis=1)
    return rows[rng.permutation(num_rows)]


@pytest.mark.parametrize("bits,total_bits", [(1, 7), (2, 9), (3, 9), (2, 1)])
def test_iid_uniform_gives_b_bits_until_log2n(bits, total_bits):
    # every combination enumerated: H(x_<=i) = min(total_bits, i * bits) exactly
    rng = np.random.default_rng(bits)
    num_pos = math.ceil(total_bits / bits)
    n = 2**total_bits
    rem = total_bits - (num_pos - 1) * bits  # the last enumerated position carries the rest
    tokens = mixed_radix_rows([2**bits] * (num_pos - 1) + [2**rem], 4, 2**bits, rng)
    expected = np.array([max(0.0, min(bits, total_bits - i * bits)) for i in range(tokens.shape[1])])
    prof = prefix_entropy_profile(tokens)
    np.testing.assert_allclose(prof.conditional, expected, atol=1e-12)
    assert prof.conditional.dtype == np.float64
    assert prof.saturated_at == num_pos
    assert prof.distinct_prefixes[-1] == n
    np.testing.assert_allclose(prof.joint[-1], total_bits, atol=1e-12)


def test_deterministic_continuation_is_zero_and_never_saturates():
    rng = np.random.default_rng(0)
    n, length = 3000, 70  # L > 32 so the loop crosses column blocks; duplicates keep groups alive
    first = rng.integers(0, 4, size=n)
    tokens = np.empty((n, length), dtype=np.int64)
    tokens[:, 0] = first
    for j in range(1, length):
        tokens[:, j] = (tokens[:, :j].sum(axis=1) * 7 + j) % 11
    prof = prefix_entropy_profile(tokens)
    counts = np.bincount(first) / n
    h0 = float(-(counts * np.log2(counts)).sum())
    assert prof.conditional[0] == pytest.approx(h0, abs=1e-12)
    assert np.all(prof.conditional[1:] == 0.0)
    assert prof.saturated_at is None
    assert np.all(prof.distinct_prefixes == 4)


def test_small_tree_hand_computed():
    # x1: 1 bit; given x1=0 the second token is a fair coin (P=1/2) -> 0.5 bit;
    # given prefix (0,0) (P=1/4) the third is a fair coin -> 0.25 bit; then unique/dup rows.
    tokens = np.array(
        [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=np.uint8
    )
    np.testing.assert_allclose(conditional_entropy(tokens), [1.0, 0.5, 0.25], atol=1e-15)
    mm = conditional_entropy(tokens, miller_madow=True)
    c = 1.0 / (2 * 8 * math.log(2))  # one extra distinct prefix at each position
    np.testing.assert_allclose(mm, [1.0 + c, 0.5 + c, 0.25 + c], atol=1e-12)
    assert prefix_entropy_profile(tokens).distinct_prefixes.tolist() == [2, 3, 4]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_matches_brute_force_on_random_data(dtype):
    rng = np.random.default_rng(1)
    for trial in range(4):
        n = int(rng.integers(1, 300))
        length = int(rng.integers(1, 12))
        alpha = int(rng.integers(1, 6))
        tokens = rng.integers(0, alpha, size=(n, length)).astype(dtype)
        if trial == 3:
            tokens = np.repeat(tokens, 3, axis=0)  # duplicates
        ref = brute_force_conditional(tokens)
        np.testing.assert_allclose(conditional_entropy(tokens), ref, atol=1e-9)


def test_sort_path_huge_values_and_block_paths_agree(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 40, size=(500, 9))
    ref = brute_force_conditional(tokens)
    monkeypatch.setattr(ent, "_DENSE_SLACK", 0)  # force np.unique for every wide step
    np.testing.assert_allclose(conditional_entropy(tokens), ref, atol=1e-9)
    # token values near 2**62 need the exact alphabet compaction
    huge = tokens.astype(np.int64) * (2**56) + 5
    np.testing.assert_allclose(conditional_entropy(huge), ref, atol=1e-9)
    # one column per block, rows re-read from a memmap for the shrinking working set
    monkeypatch.setattr(ent, "_BLOCK_BYTES", 1)
    path = tmp_path / "t.npy"
    np.save(path, tokens.astype(np.uint16))
    mm = np.load(path, mmap_mode="r")
    np.testing.assert_allclose(conditional_entropy(mm), ref, atol=1e-9)
    np.testing.assert_allclose(conditional_entropy(str(path)), ref, atol=1e-9)
    np.testing.assert_allclose(conditional_entropy(torch.from_numpy(tokens)), ref, atol=1e-9)


def test_variable_schedule_meets_prop1_bound_with_equality():
    # full, uniform use of K(i): the measured entropy equals the generalised Prop. 1 bound
    sched = CodebookSchedule.from_sizes([2, 2, 3, 4, 6, 8, 8, 8])
    rng = np.random.default_rng(3)
    n = 2 * 2 * 3 * 4 * 5  # the 5th position only sees 5 of its 6 codes per prefix
    tokens = mixed_radix_rows([2, 2, 3, 4, 5], 3, 8, rng)
    h = conditional_entropy(tokens)
    bound = prop1_bound(n, sched)
    np.testing.assert_allclose(h, bound, atol=1e-12)
    assert h[4] == pytest.approx(math.log2(5))
    computed = sched.transition_position(n)
    # prefixes become unique after 5 positions (2*2*3*4*5 = N rows): measured i* = Eq. 2's i*
    assert measured_transition_position(tokens) == computed == 5


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear"])
def test_random_tokens_respect_the_cumulative_and_data_bounds(kind):
    # Any data: H(x_<=i) <= min(log2 N, C(i)) and H(x_i | x_<i) <= min(log2 K(i), log2 N - H(x_<i)).
    # (Prop. 1 replaces H(x_<i) by C(i-1); that per-position form needs fully used early
    # positions -- see test_prop1_needs_full_use_of_earlier_positions.)
    sched = CodebookSchedule(kind, k_min=2, k_max=64, seq_len=24)
    rng = np.random.default_rng(4)
    for n in (50, 700, 4000):
        tokens = (rng.random((n, 24)) * sched.sizes.numpy()).astype(np.int64)
        prof = prefix_entropy_profile(tokens, schedule=sched)
        cap = sched.capacity_bits().numpy()
        assert np.all(prof.joint <= np.minimum(math.log2(n), cap) + 1e-9)
        prev = np.concatenate([[0.0], prof.joint[:-1]])
        data_bound = np.minimum(sched.log2_sizes().numpy(), math.log2(n) - prev)
        assert np.all(prof.conditional <= data_bound + 1e-9)
        assert np.all(prof.conditional >= 0.0)
        assert prof.saturated_at is None or np.all(prof.conditional[prof.saturated_at:] == 0.0)


def test_prop1_needs_full_use_of_earlier_positions():
    # N = 2, K = 2: the first position is unused, so the second carries the sample's bit;
    # the paper's bound (0 from position i* + 1 = 2 on) does not hold for such data.
    tokens = np.array([[0, 0], [0, 1]])
    sched = CodebookSchedule("constant", k_max=2, seq_len=2)
    np.testing.assert_allclose(conditional_entropy(tokens), [0.0, 1.0])
    np.testing.assert_allclose(prop1_bound(2, sched), [1.0, 0.0])


def test_codebook_utilisation_exact_and_checks_range():
    sched = CodebookSchedule.from_sizes([2, 4, 8])
    tokens = np.array([[0, 0, 7], [1, 3, 7], [1, 3, 0]], dtype=np.int16)
    np.testing.assert_allclose(codebook_utilisation(tokens, sched), [1.0, 0.5, 0.25])
    bad = tokens.copy()
    bad[2, 1] = 4
    with pytest.raises(ValueError, match=r"position 1 must be < K\(1\) = 4.*got 4"):
        codebook_utilisation(bad, sched)
    with pytest.raises(ValueError, match=r"position 1 must be < K\(1\) = 4.*got 4"):
        validate_tokens(bad, sched)
    with pytest.raises(ValueError, match="position 1 must be < K"):
        prefix_entropy_profile(bad, schedule=sched)
    neg = tokens.copy()
    neg[0, 2] = -3
    for fn in (lambda t: codebook_utilisation(t, sched), conditional_entropy, validate_tokens):
        with pytest.raises(ValueError, match="must be >= 0, got -3 at position 2"):
            fn(neg)
    with pytest.raises(ValueError, match="seq_len"):
        codebook_utilisation(tokens[:, :2], sched)


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (np.arange(5), ValueError, "2-D"),
        (np.zeros((0, 4), dtype=np.int64), ValueError, "non-empty"),
        (np.zeros((3, 0), dtype=np.int64), ValueError, "non-empty"),
        (np.zeros((3, 4), dtype=np.float32), TypeError, "integer dtype"),
        (np.zeros((3, 4), dtype=bool), TypeError, "integer dtype"),
    ],
)
def test_bad_token_arrays(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        conditional_entropy(bad)


def test_prefix_entropy_matches_brute_force():
    rng = np.random.default_rng(7)
    for trial in range(4):
        tokens = rng.integers(0, int(rng.integers(2, 6)), size=(int(rng.integers(2, 400)), int(rng.integers(1, 10))))
        if trial == 3:
            tokens = np.repeat(tokens, 2, axis=0)
        h = prefix_entropy(tokens)
        assert h.dtype == np.float64 and h.shape == (tokens.shape[1],)
        np.testing.assert_allclose(h, brute_force_joint(tokens), atol=1e-9)
        assert np.all(np.diff(h) >= -1e-12) and h[-1] <= math.log2(tokens.shape[0]) + 1e-12


@pytest.mark.parametrize("tolerance", [0.0, 0.25, 0.5, 1.0, 3.0])
def test_measured_transition_position_matches_brute_force(tolerance):
    rng = np.random.default_rng(8)
    for trial in range(6):
        n = int(rng.integers(2, 300))
        tokens = rng.integers(0, int(rng.integers(2, 5)), size=(n, int(rng.integers(1, 12))))
        if trial % 3 == 2:
            tokens[: n // 2] = tokens[0]  # many duplicates: may never reach log2 N
        assert measured_transition_position(tokens, tolerance) == brute_force_transition(tokens, tolerance)


def test_small_codebook_is_not_a_cliff():
    # The rule "first H(x_i | x_<i) < 0.5 bit" read a skewed K(0) = 2 position (0.29 bit) or a
    # collapsed one (0 bit) as the cliff. The prefix-entropy rule waits until the prefixes are unique.
    rng = np.random.default_rng(9)
    body = mixed_radix_rows([4, 4, 4, 4, 4], 6, 16, rng)          # 1024 unique rows after 5 positions
    n = body.shape[0]
    skewed = (rng.random(n) < 0.05).astype(np.int64)[:, None]     # K = 2, H ~ 0.29 bit
    collapsed = np.zeros((n, 1), dtype=np.int64)                  # K = 2, one code used: 0 bit
    for first in (skewed, collapsed):
        tokens = np.concatenate([first, body], axis=1)
        h = conditional_entropy(tokens)
        assert h[0] < 0.5                                          # the old rule's "cliff" at 0
        assert measured_transition_position(tokens) == 6 == brute_force_transition(tokens, 0.5)
    # log2 N = 10 bits: with 2-bit positions the prefix entropy is 2, 4, 6, 8, 10 (+ first column's bits)
    assert measured_transition_position(body, 0.5) == 5
    assert measured_transition_position(body, 2.0) == 4


def test_measured_transition_position_input_forms_and_errors():
    rng = np.random.default_rng(10)
    tokens = mixed_radix_rows([2, 3, 4], 2, 5, rng)
    prof = prefix_entropy_profile(tokens)
    assert measured_transition_position(prof) == measured_transition_position(tokens) == 3
    # Miller-Madow changes the reported entropies, not the measured i* (plug-in by definition)
    mm = prefix_entropy_profile(tokens, miller_madow=True)
    assert mm.joint[-1] > math.log2(24) and measured_transition_position(mm, 0.0) == 3
    np.testing.assert_allclose(mm.plugin_joint(), prof.joint, atol=1e-12)
    assert measured_transition_position(np.zeros((8, 4), dtype=np.int64)) is None   # all rows equal: never unique
    assert measured_transition_position(np.zeros((1, 4), dtype=np.int64)) == 1      # N = 1: log2 N = 0
    with pytest.raises(ValueError, match="tolerance must be a finite number of bits >= 0"):
        measured_transition_position(tokens, -0.1)
    with pytest.raises(TypeError, match="tolerance must be a number of bits"):
        measured_transition_position(tokens, True)


def test_codebook_usage_counts_codes_per_position():
    sched = CodebookSchedule.from_spec([2, 4, 8])
    tokens = np.array([[0, 0, 7], [1, 3, 7], [1, 3, 0], [0, 2, 7]], dtype=np.int16)
    used = codebook_usage(tokens, sched)
    assert used.dtype == np.int64 and used.tolist() == [2, 3, 2]
    np.testing.assert_allclose(codebook_utilisation(tokens, sched), [1.0, 0.75, 0.25])
