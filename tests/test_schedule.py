"""CodebookSchedule against the paper's Tables 1 and 2 (DESIGN.md) and its error contract."""
import math

import numpy as np
import pytest
import torch

from vcq_plugin.schedule import MAX_CODEBOOK_SIZE, CodebookSchedule, coerce_schedule, uniform_transition_position

# Paper Table 2: (kind, K_max, power) -> (mean K as printed, mean K to 0.1, BPP)
TABLE2 = [
    ("constant", 16384, None, 16384, 16384.0, 0.055),
    ("constant", 8192, None, 8192, 8192.0, 0.051),
    ("linear", 16384, None, 8193, 8193.0, 0.049),
    ("cosine", 16384, None, 5964, 5963.7, 0.044),
    ("power", 16384, 2.5, 4696, 4696.3, 0.041),
    ("cosine", 11264, None, 4100, 4100.4, 0.042),
]


@pytest.mark.parametrize("kind,k_max,power,mean_int,mean_1dp,bpp", TABLE2)
def test_table2_mean_size_and_bpp(kind, k_max, power, mean_int, mean_1dp, bpp):
    kw = {"power": power} if power else {}
    s = CodebookSchedule(kind, k_min=2, k_max=k_max, seq_len=256, **kw)
    assert round(s.mean_size) == mean_int
    assert round(s.mean_size, 1) == mean_1dp
    assert round(s.bits_per_pixel(256), 3) == bpp
    assert s.sizes.dtype == torch.int64 and s.sizes.shape == (256,)
    assert int(s.sizes[-1]) == k_max


@pytest.mark.parametrize("kind,power,istar", [("linear", None, 4), ("cosine", None, 9), ("power", 2.5, 12)])
def test_computed_transition_position_for_imagenet(kind, power, istar):
    # DESIGN.md: with 100 % codebook use, Eq. 2 gives 4/9/12 (and 9 for cosine-11264) at N = 1.28M.
    kw = {"power": power} if power else {}
    assert CodebookSchedule(kind, k_max=16384, **kw).transition_position(1_281_167) == istar
    assert CodebookSchedule("cosine", k_max=11264).transition_position(1_281_167) == 9


TABLE1 = [("CIFAR", 50_000, 15.6, 2), ("COCO", 118_287, 16.9, 2), ("ImageNet-1K", 1_281_167, 20.3, 2),
          ("CC12M", 12_000_000, 23.5, 2), ("LAION-400M", 400_000_000, 28.6, 3), ("LAION-5B", 5_000_000_000, 32.2, 3)]


@pytest.mark.parametrize("name,n,log2n,istar", TABLE1)
def test_table1_uniform_istar(name, n, log2n, istar):
    assert round(math.log2(n), 1) == log2n
    assert uniform_transition_position(n, 16384) == istar
    assert CodebookSchedule("constant", k_max=16384).transition_position(n) == istar


def test_table1_thresholds():
    # Pushing i* one step further needs 14, 28, 42, 56 bits; 28 bits = 209 x ImageNet, 42 = 3.4M x.
    sched = CodebookSchedule("constant", k_max=16384)
    for steps, bits in enumerate([14, 28, 42, 56], start=1):
        assert sched.transition_position(2.0**bits) == steps
        assert sched.transition_position(2.0**bits * 1.0001) == steps + 1
    assert int(2**28 / 1_281_167) == 209
    assert round(2**42 / 1_281_167 / 1e6, 1) == 3.4


def test_capacity_and_remaining_budget():
    s = CodebookSchedule("cosine", k_max=1024, seq_len=16)
    c = s.capacity_bits()
    assert c.dtype == torch.float64
    np.testing.assert_allclose(c.numpy(), np.cumsum(np.log2(s.sizes.numpy().astype(float))))
    r = s.remaining_budget(1000)
    assert r[0] == pytest.approx(math.log2(1000))
    np.testing.assert_allclose(r[1:].numpy(), math.log2(1000) - c[:-1].numpy())


def test_schedule_is_monotone_with_ends_pinned():
    for kind in ["linear", "cosine", "power"]:
        s = CodebookSchedule(kind, k_min=3, k_max=777, seq_len=50)
        assert int(s.sizes[0]) == 3 and int(s.sizes[-1]) == 777
        assert bool((s.sizes[1:] >= s.sizes[:-1]).all())


def test_from_spec_names_and_dict_round_trip():
    assert CodebookSchedule.from_spec("vcq_cosine") == CodebookSchedule("cosine")
    assert CodebookSchedule.from_spec("vcq_power2.5") == CodebookSchedule("power", power=2.5)
    assert CodebookSchedule.from_spec("vcq_power", power=3.0) == CodebookSchedule("power", power=3.0)
    assert CodebookSchedule.from_spec("constant", k_max=8192).mean_size == 8192
    for s in [CodebookSchedule("power", 4, 999, 33, 1.7), CodebookSchedule.from_sizes([1, 2, 2, 8])]:
        assert CodebookSchedule.from_spec(s.to_dict()) == s
    assert "cosine" in repr(CodebookSchedule("cosine"))


def test_deprecated_aliases_are_thin_calls_of_from_spec():
    """from_name / from_dict / coerce_schedule remain for callers outside the library; they warn and
    apply from_spec's rules (a constant schedule refuses k_min, where from_name used to drop it)."""
    with pytest.warns(DeprecationWarning, match="from_spec"):
        assert CodebookSchedule.from_name("vcq_linear", k_max=64, seq_len=8) == CodebookSchedule("linear", k_max=64, seq_len=8)
    with pytest.warns(DeprecationWarning, match="from_spec"):
        assert CodebookSchedule.from_dict({"kind": "cosine", "k_max": 64, "seq_len": 8}) == CodebookSchedule("cosine", k_max=64, seq_len=8)
    with pytest.warns(DeprecationWarning, match="from_spec"):
        assert coerce_schedule("vcq_linear", k_max=64, seq_len=8) == CodebookSchedule("linear", k_max=64, seq_len=8)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="constant schedule has no k_min"):
        CodebookSchedule.from_name("constant", k_min=2, k_max=64)


def test_segments_cover_sequence():
    s = CodebookSchedule("cosine", k_max=64, seq_len=100)
    segs = s.segments()
    assert segs[0][0] == 0 and segs[-1][1] == 100
    for (a, b, k) in segs:
        assert bool((s.sizes[a:b] == k).all())


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(kind="cosine", k_min=0), ValueError, "k_min must be >= 1"),
    (dict(kind="cosine", k_min=100, k_max=10), ValueError, "k_min must be <= k_max"),
    (dict(kind="cosin"), ValueError, "Did you mean 'cosine'"),
    (dict(kind="cosine", k_max=2.5), TypeError, "k_max must be an integer"),
    (dict(kind="power", power=-1.0), ValueError, "power must be"),
    (dict(kind="cosine", seq_len=0), ValueError, "seq_len must be >= 1"),
])
def test_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        CodebookSchedule(**kwargs)


def test_bad_explicit_and_names():
    with pytest.raises(ValueError, match="non-decreasing"):
        CodebookSchedule.from_sizes([4, 8, 2])
    with pytest.raises(ValueError, match=">= 1"):
        CodebookSchedule.from_sizes([0, 8])
    with pytest.raises(ValueError, match="Did you mean 'vcq_cosine'"):
        CodebookSchedule.from_spec("vcq_cosin")
    with pytest.raises(ValueError, match="num_samples"):
        CodebookSchedule("cosine").transition_position(0)


# ---------------------------------------------------------------------- from_spec: the one builder
from vcq_plugin.schedule import ScheduleConfig  # noqa: E402


@pytest.mark.parametrize("spec", [
    "vcq_cosine", "vcq_linear", "vcq_power", "vcq_power3", "constant",
])
def test_from_spec_name_dict_and_sizes_agree(spec):
    s = CodebookSchedule.from_spec(spec, k_max=64, seq_len=12)
    assert CodebookSchedule.from_spec(s.to_dict()) == s                      # checkpoint / YAML layout
    assert CodebookSchedule.from_spec(s.sizes.tolist()) == s                 # explicit sizes
    assert CodebookSchedule.from_spec(s.sizes) == s and CodebookSchedule.from_spec(s.sizes.numpy()) == s
    assert CodebookSchedule.from_spec({"name": spec, "k_max": 64, "seq_len": 12}) == s
    assert CodebookSchedule.from_spec(s) is s
    assert ScheduleConfig(name=spec, k_max=64, seq_len=12).build() == s


def test_from_spec_defaults_are_the_papers():
    s = CodebookSchedule.from_spec("vcq_cosine")
    assert (s.k_min, s.k_max, s.seq_len) == (2, 16384, 256) and round(s.mean_size, 1) == 5963.7
    assert CodebookSchedule.from_spec("vcq_power").power == 2.5


@pytest.mark.parametrize("call,match", [
    (lambda: CodebookSchedule.from_spec("constant", k_min=2), "constant schedule has no k_min"),
    (lambda: CodebookSchedule.from_spec("vcq_cosine", power=2.0), "power applies only to vcq_power"),
    (lambda: CodebookSchedule.from_spec("constant", power=2.0), "power applies only to vcq_power"),
    (lambda: CodebookSchedule.from_spec("vcq_power3", power=2.0), "fixes power=3"),
    (lambda: CodebookSchedule.from_spec("vcq_cosin"), "Did you mean 'vcq_cosine'"),
    (lambda: CodebookSchedule.from_spec({"name": "vcq_cosine", "k_mn": 2}), "unknown schedule key"),
    (lambda: CodebookSchedule.from_spec({"k_max": 2}), "needs a 'kind'"),
    (lambda: CodebookSchedule.from_spec({"name": "vcq_cosine", "k_max": 8}, k_max=16), "k_max=8 in the description"),
    (lambda: CodebookSchedule.from_spec(CodebookSchedule("cosine", k_max=64, seq_len=4), seq_len=5), "disagrees"),
    (lambda: CodebookSchedule.from_spec([4, 2]), "non-decreasing"),
    (lambda: CodebookSchedule.from_spec(3.5), "is described by"),
])
def test_from_spec_refuses_what_cannot_apply(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_constant_to_dict_has_no_k_min_and_old_dicts_still_load():
    s = CodebookSchedule("constant", k_max=256, seq_len=16)
    assert "k_min" not in s.to_dict()
    legacy = {"kind": "constant", "k_min": 2, "k_max": 256, "seq_len": 16}  # written by version 0.1.0
    assert CodebookSchedule.from_spec(legacy) == s


# ---------------------------------------------------------------------- sizes beyond exact arithmetic
@pytest.mark.parametrize("sizes,match", [
    ([2**63 + 5], r"<= 2\*\*53 .* got 9223372036854775813 at position 0"),  # a uint64 array: used to wrap negative
    ([2**62, 2**63 - 1], r"got 9223372036854775807 at position 1"),
    ([1, 2**64], r"got 18446744073709551616 at position 1"),  # beyond uint64: an object array
    (np.array([1.0, 1e30]), r"<= 2\*\*53"),
    ([MAX_CODEBOOK_SIZE + 1], r"<= 2\*\*53"),
])
def test_from_sizes_refuses_sizes_beyond_exact_int64_and_float64(sizes, match):
    with pytest.raises(ValueError, match=match):
        CodebookSchedule.from_sizes(sizes)


def test_from_sizes_type_messages_name_the_values():
    with pytest.raises(TypeError, match=r"integers, got dtype float64: \[3.5\]"):
        CodebookSchedule.from_sizes([3.5])
    with pytest.raises(TypeError, match="integers, got dtype bool"):
        CodebookSchedule.from_sizes([True, True])
    assert CodebookSchedule.from_sizes([MAX_CODEBOOK_SIZE]).k_max == 2**53
    assert CodebookSchedule.from_sizes(np.array([2.0, 4.0])).sizes.tolist() == [2, 4]


def test_k_max_limit_names_the_limit():
    with pytest.raises(ValueError, match=r"k_max must be <= 2\*\*53 = 9007199254740992"):
        CodebookSchedule("cosine", k_max=2**62)
    with pytest.raises(ValueError, match=r"k_max must be <= 2\*\*53"):
        CodebookSchedule.from_spec("constant", k_max=2**63 - 1)
    s = CodebookSchedule("cosine", k_max=2**53, seq_len=4)
    assert int(s.sizes[-1]) == 2**53 and s.k_max == 2**53
