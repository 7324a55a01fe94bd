"""AwareCFGSampler: Eq. 4 scales, RAR's power-cosine convention, masks, filtering and errors."""
import ast
import math
from pathlib import Path

import pytest
import torch

from vcq_plugin.registry import create_sampler, list_samplers
from vcq_plugin.sampler import PAPER_GFID, PRESETS, AwareCFGSampler, guidance_scales
from vcq_plugin.schedule import CodebookSchedule

RAR_PY = Path(__file__).resolve().parents[1] / "third_party" / "1d-tokenizer" / "modeling" / "rar.py"
INF = float("inf")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add contention on a busy CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rar_scale(step: int, seq_len: int, w: float, p: float) -> float:
    """DESIGN.md Eq. 4, standard mode, evaluated as RAR does it (float32 tensor ops):
    s = (1 - cos(pi * (step / L) ** p)) / 2, scale = (w - 1) * s + 1."""
    pw = torch.ones(1) * p
    s = (1 - torch.cos(((step / seq_len) ** pw) * torch.pi)) * 1 / 2
    return float(((w - 1) * s + 1)[0])


def eq4_aware_reference(sizes, w: float, p: float) -> torch.Tensor:
    """Eq. 4 aware mode in float64 from the formula, for a non-constant schedule."""
    lo, hi = math.log2(min(sizes)), math.log2(max(sizes))
    out = []
    for k in sizes:
        t = (math.log2(k) - lo) / (hi - lo)
        out.append(1 + (w - 1) * (1 - math.cos(math.pi * t**p)) / 2)
    return torch.tensor(out, dtype=torch.float64)


SCHEDULES = {
    "cosine": CodebookSchedule("cosine", k_min=2, k_max=16384, seq_len=256),
    "linear": CodebookSchedule("linear", k_min=2, k_max=16384, seq_len=256),
    "power": CodebookSchedule("power", k_min=2, k_max=16384, seq_len=256, power=2.5),
    "cosine_l": CodebookSchedule("cosine", k_min=2, k_max=11264, seq_len=256),
    "explicit": CodebookSchedule.from_sizes([4, 4, 8, 8, 8, 32, 64, 64]),
}


# ---------------------------------------------------------------------- guidance scales
@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("w,p", [(10.0, 1.5), (3.0, 1.0), (4.0, 0.75), (14.0, 1.75)])
def test_aware_scale_is_one_at_kmin_and_w_at_kmax(name, w, p):
    sched = SCHEDULES[name]
    s = AwareCFGSampler(sched, guidance_scale=w, guidance_power=p, guidance="aware")
    scales, sizes = s.guidance_scales, sched.sizes
    assert scales.shape == (sched.seq_len,) and scales.dtype == torch.float32
    assert torch.all(scales[sizes == sched.k_min] == 1.0)
    assert torch.all(scales[sizes == sched.k_max] == w)
    torch.testing.assert_close(scales.double(), eq4_aware_reference(sizes.tolist(), w, p), atol=2e-5, rtol=2e-6)
    # monotone in K, and positions with K_min need no unconditional pass
    assert torch.all(scales[1:] >= scales[:-1])
    for i in range(sched.seq_len):
        assert s.needs_uncond(i) == (int(sizes[i]) != sched.k_min)


@pytest.mark.parametrize("k_max,w,p", [(16384, 20.0, 1.5), (8192, 20.0, 2.0), (16384, 10.0, 1.0), (64, 1.7, 0.6)])
@pytest.mark.parametrize("seq_len", [256, 33])
def test_constant_schedule_aware_equals_rar_power_cosine_exactly(k_max, w, p, seq_len):
    sched = CodebookSchedule("constant", k_max=k_max, seq_len=seq_len)
    ref = torch.tensor([rar_scale(i, seq_len, w, p) for i in range(seq_len)], dtype=torch.float32)
    for mode in ("aware", "cosine"):
        got = AwareCFGSampler(sched, guidance_scale=w, guidance_power=p, guidance=mode).guidance_scales
        assert torch.equal(got, ref), mode
    # and the float32 RAR formula is Eq. 4 itself
    exact = [1 + (w - 1) * (1 - math.cos(math.pi * (i / seq_len) ** p)) / 2 for i in range(seq_len)]
    torch.testing.assert_close(ref.double(), torch.tensor(exact, dtype=torch.float64), atol=1e-5, rtol=1e-6)


def test_standard_modes_use_i_over_L_regardless_of_schedule():
    sched = SCHEDULES["cosine"]
    L, w = sched.seq_len, 7.0
    cos = AwareCFGSampler(sched, guidance_scale=w, guidance_power=1.5, guidance="cosine").guidance_scales
    assert torch.equal(cos, torch.tensor([rar_scale(i, L, w, 1.5) for i in range(L)], dtype=torch.float32))
    lin = AwareCFGSampler(sched, guidance_scale=w, guidance="linear").guidance_scales
    torch.testing.assert_close(lin.double(), 1 + (w - 1) * torch.arange(L, dtype=torch.float64) / L)
    const = AwareCFGSampler(sched, guidance_scale=w, guidance="constant").guidance_scales
    assert torch.all(const == w)


@pytest.mark.parametrize("kwargs", [dict(guidance="none", guidance_scale=10.0), dict(guidance="aware", guidance_scale=0.0),
                                    dict(guidance="cosine", guidance_scale=0.0), dict(guidance="constant", guidance_scale=1.0)])
def test_no_guidance_never_asks_for_uncond(kwargs):
    sched = CodebookSchedule("cosine", k_min=2, k_max=16, seq_len=12)
    s = AwareCFGSampler(sched, **kwargs)
    assert not s.uses_guidance and torch.all(s.guidance_scales == 1.0)
    asked = []

    def step3(tokens, position, need_uncond):
        asked.append(need_uncond)
        assert tokens.shape == (3, position)
        return torch.randn(3, 16)

    assert s.sample(step3, 3).shape == (3, 12)
    assert asked == [False] * 12
    assert s.process(0, torch.randn(2, 16)).shape == (2, 16)  # no uncond needed anywhere


def test_guided_sampling_asks_for_uncond_exactly_where_scale_is_not_one():
    sched = CodebookSchedule.from_sizes([2, 2, 2, 4, 8, 16, 16, 16])
    s = AwareCFGSampler(sched, guidance_scale=5.0, guidance_power=1.5)
    asked = []

    def step(tokens, position, need_uncond):
        asked.append(need_uncond)
        c = torch.randn(2, 20)
        return (c, torch.randn(2, 20)) if need_uncond else c

    s.sample(step, 2)
    assert asked == [False, False, False, True, True, True, True, True]
    assert [s.needs_uncond(i) for i in range(8)] == asked


# ---------------------------------------------------------------------- masking
def _biased_logits(b, v, k_max, gen):
    """Random logits that strongly prefer the forbidden tail, so masking is what keeps tokens valid."""
    x = torch.randn(b, v, generator=gen)
    x[:, k_max // 2 :] += 30.0
    return x


@pytest.mark.parametrize(
    "sched",
    [
        CodebookSchedule("cosine", k_min=2, k_max=64, seq_len=256),
        CodebookSchedule("power", k_min=2, k_max=64, seq_len=256, power=2.5),
        CodebookSchedule("linear", k_min=3, k_max=50, seq_len=256),
    ],
    ids=["cosine", "power", "linear"],
)
def test_sampled_tokens_always_below_k_of_i(sched):
    b, extra = 136, 5  # 136 * 256 * 3 schedules = 104,448 tokens; 5 host-appended vocabulary entries
    v = sched.k_max + extra
    gen = torch.Generator().manual_seed(0)
    s = AwareCFGSampler(sched, guidance_scale=8.0, guidance_power=1.5, temperature=1.3)

    def step(tokens, position, need_uncond):
        c = _biased_logits(b, v, sched.k_max, gen)
        return (c, _biased_logits(b, v, sched.k_max, gen) - 5.0) if need_uncond else c

    tokens = s.sample(step, b, generator=gen)
    assert tokens.dtype == torch.int64 and tokens.shape == (b, sched.seq_len)
    assert tokens.numel() >= 100_000 // 3
    assert torch.all(tokens >= 0) and torch.all(tokens < sched.sizes[None, :])
    # the bias works: where K(i) is large, most tokens come from the favoured upper half
    big = sched.sizes == sched.k_max
    assert (tokens[:, big] >= sched.k_max // 2).float().mean() > 0.9


def test_whole_sequence_processing_matches_per_position_and_masks():
    sched = CodebookSchedule.from_sizes([2, 3, 5, 9, 17, 33, 33, 33])
    s = AwareCFGSampler(sched, guidance_scale=4.0, guidance_power=1.25, temperature=0.8, top_k=4, top_p=0.9)
    c, u = torch.randn(6, 8, 40), torch.randn(6, 8, 40)
    c0, u0 = c.clone(), u.clone()
    full = s.process(None, c, u)
    assert torch.equal(c, c0) and torch.equal(u, u0)  # inputs untouched
    per_pos = torch.stack([s.process(i, c[:, i], u[:, i]) for i in range(8)], dim=1)
    torch.testing.assert_close(full, per_pos)
    part = s.process(3, c[:, 3:6], u[:, 3:6])
    torch.testing.assert_close(part, per_pos[:, 3:6])
    allowed = s.vocab_mask(40)
    assert torch.all(torch.isneginf(full[:, ~allowed]))
    tok = s.sample_logits(full, torch.Generator().manual_seed(1))
    assert tok.shape == (6, 8) and torch.all(tok < sched.sizes)


def test_vocab_mask():
    sched = SCHEDULES["cosine"]
    m = AwareCFGSampler(sched).vocab_mask(16384 + 2)
    assert m.shape == (256, 16386) and m.dtype == torch.bool
    assert torch.equal(m.sum(1), sched.sizes)
    assert not m[:, 16384:].any()


def test_infinite_inputs_never_give_nan():
    sched = CodebookSchedule.from_sizes([8, 8])
    s = AwareCFGSampler(sched, guidance="constant", guidance_scale=3.0)
    c, u = torch.randn(2, 10), torch.randn(2, 10)
    c[:, 1] = -INF
    u[:, 1] = -INF  # both passes rule token 1 out: -inf - -inf would be NaN
    u[:, 2] = -INF  # only the unconditional pass rules it out
    c[:, 3] = -INF  # only the conditional pass rules it out
    out = s.process(0, c, u)
    assert not out.isnan().any()
    assert torch.all(torch.isneginf(out[:, [1, 2, 3, 8, 9]]))
    assert torch.all(torch.isfinite(out[:, [0, 4, 5, 6, 7]]))
    p = torch.softmax(out, -1)
    assert not p.isnan().any() and torch.allclose(p.sum(-1), torch.ones(2))


# ---------------------------------------------------------------------- filtering against a reference
def reference_process(c, u, scale, k, temperature, top_k, top_p):
    """Row by row in float64, as written in the formulas."""
    c = c.double()
    u = c if u is None else u.double()  # scale 1: the conditional logits
    out = []
    for row_c, row_u in zip(c, u):
        x = row_u + scale * (row_c - row_u)
        x[k:] = -INF
        x = x / temperature
        if 0 < top_k < len(x):
            kth = sorted(x.tolist(), reverse=True)[top_k - 1]
            x = torch.where(x < kth, torch.tensor(-INF, dtype=x.dtype), x)
        if top_p < 1:
            probs = torch.softmax(x, -1)
            order = sorted(range(len(x)), key=lambda j: -float(x[j]))
            keep, mass = set(), 0.0
            for j in order:
                if mass >= top_p:
                    break
                keep.add(j)
                mass += float(probs[j])
            x = torch.tensor([float(x[j]) if j in keep else -INF for j in range(len(x))], dtype=x.dtype)
        out.append(x)
    return torch.stack(out)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.8),
                                                     (1.4, 7, 0.6), (0.9, 1, 1.0), (1.0, 3, 0.05), (1.0, 500, 1.0)])
def test_processing_agrees_with_reference(temperature, top_k, top_p):
    sched = CodebookSchedule.from_sizes([4, 16, 60, 60])
    s = AwareCFGSampler(sched, guidance_scale=3.0, guidance_power=1.0, temperature=temperature, top_k=top_k, top_p=top_p)
    gen = torch.Generator().manual_seed(3)
    for i in range(4):
        c, u = 2 * torch.randn(5, 64, generator=gen), 2 * torch.randn(5, 64, generator=gen)
        got = s.process(i, c, u)
        ref = reference_process(c, u if s.needs_uncond(i) else None, s.scale_at(i), int(sched.sizes[i]), temperature, top_k, top_p)
        assert torch.equal(torch.isfinite(got), torch.isfinite(ref)), (i, temperature, top_k, top_p)
        fin = torch.isfinite(ref)
        torch.testing.assert_close(got[fin].double(), ref[fin], rtol=1e-5, atol=1e-5)
        if top_k == 1:
            assert torch.equal(s.sample_logits(got), ref.argmax(-1))  # greedy


def test_sample_logits_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]).expand(40_000, 4))
    tok = AwareCFGSampler.sample_logits(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=4).double() / tok.numel()
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64), atol=0.015, rtol=0)


def test_same_seed_same_tokens():
    sched = CodebookSchedule("cosine", k_min=2, k_max=64, seq_len=32)
    s = AwareCFGSampler(sched, guidance_scale=5.0, guidance_power=1.5, top_p=0.95)
    table = torch.randn(32, 2, 70, generator=torch.Generator().manual_seed(9))

    def step(tokens, position, need_uncond):
        c = table[position, 0].expand(8, 70) + tokens.sum(1, keepdim=True) % 3
        return (c, table[position, 1].expand(8, 70)) if need_uncond else c

    a = s.sample(step, 8, generator=torch.Generator().manual_seed(42))
    b = s.sample(step, 8, generator=torch.Generator().manual_seed(42))
    c = s.sample(step, 8, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------- registry and config
TABLE7 = {  # name: (guidance, w, p, no-CFG temperature, K_max, schedule kind)
    "constant_16k": ("cosine", 20, 1.5, 0.85, 16384, "constant"),
    "constant_8k": ("cosine", 20, 2.0, 0.85, 8192, "constant"),
    "vcq_linear": ("aware", 14, 1.75, 0.85, 16384, "linear"),
    "vcq_bb": ("aware", 10, 1.5, 0.85, 16384, "cosine"),
    "vcq_power": ("aware", 10, 1.75, 0.85, 16384, "power"),
    "vcq_bl": ("aware", 4, 0.75, 0.85, 16384, "cosine"),
    "vcq_bxl": ("aware", 5, 0.75, 0.85, 16384, "cosine"),
    "vcq_lb": ("aware", 4, 1.25, 0.90, 11264, "cosine"),
    "vcq_ll": ("aware", 4, 1.25, 0.90, 11264, "cosine"),
    "vcq_lxl": ("aware", 3, 1.0, 0.95, 11264, "cosine"),
}


@pytest.mark.parametrize("name", sorted(TABLE7))
def test_table7_presets(name):
    mode, w, p, t0, k_max, kind = TABLE7[name]
    s = create_sampler(name)
    assert (s.guidance, s.guidance_scale, s.guidance_power, s.temperature) == (mode, w, p, 1.0)
    assert s.schedule.k_max == k_max and s.schedule.kind == kind and s.schedule.seq_len == 256
    last = w if mode == "aware" else rar_scale(255, 256, w, p)  # constant rows: standard t = i / L
    assert float(s.guidance_scales[-1]) == last and float(s.guidance_scales[0]) == 1.0
    n = create_sampler(name + "_nocfg")
    assert (n.guidance, n.temperature, n.uses_guidance) == ("none", t0, False)
    # schedule and any field can be overridden
    small = CodebookSchedule("cosine", k_min=2, k_max=32, seq_len=16)
    o = create_sampler(name, schedule=small, top_k=10)
    assert o.schedule is small and o.top_k == 10 and o.guidance_scale == w


def test_mode_factories_and_names():
    names = set(list_samplers())
    assert {"aware_cfg", "cosine_cfg", "linear_cfg", "constant_cfg", "no_cfg", "vcq_bb", "vcq_lxl"} <= names
    sched = SCHEDULES["explicit"]
    for name, mode in [("aware_cfg", "aware"), ("cosine_cfg", "cosine"), ("linear_cfg", "linear"),
                       ("constant_cfg", "constant"), ("no_cfg", "none")]:
        assert create_sampler(name, schedule=sched, guidance_scale=2.0).guidance == mode
    assert create_sampler("aware_cfg", schedule="vcq_cosine", guidance_scale=2.0).schedule.k_max == 16384
    with pytest.raises(ValueError, match="schedule"):
        create_sampler("aware_cfg")
    with pytest.raises(ValueError, match="fixes guidance"):
        create_sampler("no_cfg", schedule=sched, guidance="aware")
    with pytest.raises(ValueError, match="Did you mean 'vcq_lxl'"):
        create_sampler("vcq_lxll")
    assert PRESETS["vcq_cosine"] == PRESETS["vcq_bb"]
    # the paper's gFID is metadata beside the arguments, not an argument
    assert all("paper_gfid" not in kw for kw in PRESETS.values())
    assert PAPER_GFID["vcq_bb"] == 4.79 and PAPER_GFID["vcq_lxl_nocfg"] == 2.29 and set(PAPER_GFID) == set(PRESETS)


def test_dict_round_trip_and_repr():
    s = AwareCFGSampler({"kind": "power", "k_min": 2, "k_max": 128, "seq_len": 20, "power": 2.5},
                        guidance_scale=10, guidance_power=1.75, temperature=0.9, top_k=5, top_p=0.5)
    d = s.to_dict()
    t = AwareCFGSampler.from_dict(d)
    assert t.to_dict() == d and t.schedule == s.schedule
    assert torch.equal(t.guidance_scales, s.guidance_scales)
    assert "guidance='aware'" in repr(s) and "top_k=5" in repr(s)


# ---------------------------------------------------------------------- errors
def test_errors():
    sched = CodebookSchedule("cosine", k_min=2, k_max=16, seq_len=8)
    s = AwareCFGSampler(sched, guidance_scale=3.0)
    c = torch.randn(2, 16)
    with pytest.raises(ValueError, match=r"position must be in \[0, 8\)"):
        s.process(8, c, c)
    with pytest.raises(ValueError, match="position"):
        s.process(-1, c, c)
    with pytest.raises(ValueError, match="position"):
        s.needs_uncond(8)
    with pytest.raises(ValueError, match="smaller than the schedule's K_max 16"):
        s.process(7, torch.randn(2, 15), torch.randn(2, 15))
    with pytest.raises(ValueError, match="smaller than"):
        s.vocab_mask(10)
    with pytest.raises(ValueError, match="uncond_logits are required at position 7"):
        s.process(7, c)
    with pytest.raises(ValueError, match="uncond_logits are required"):
        s.process(None, torch.randn(2, 8, 16))
    with pytest.raises(ValueError, match="shaped like cond_logits"):
        s.process(7, c, torch.randn(2, 17))
    with pytest.raises(ValueError, match="must lie in"):
        s.process(5, torch.randn(2, 4, 16), torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        s.process(0, torch.randn(16))
    with pytest.raises(TypeError, match="floating-point"):
        s.process(0, torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="need_uncond"):
        s.sample(lambda tokens, i, need: torch.randn(2, 16), 2)
    with pytest.raises(ValueError, match="batch_size=2"):
        s.sample(lambda tokens, i, need: torch.randn(3, 16), 2)
    for t in (0, -1.0):
        with pytest.raises(ValueError, match="top_k=1"):
            AwareCFGSampler(sched, temperature=t)
    for p in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            AwareCFGSampler(sched, top_p=p)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        AwareCFGSampler(sched, top_k=-1)
    with pytest.raises(TypeError, match="top_k must be an integer"):
        AwareCFGSampler(sched, top_k=2.5)
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        AwareCFGSampler(sched, guidance="cosin")
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        AwareCFGSampler(sched, guidance_scale=-2)
    with pytest.raises(ValueError, match="guidance_power must be > 0"):
        AwareCFGSampler(sched, guidance_scale=2, guidance_power=0)
    with pytest.raises(ValueError, match="finite"):
        AwareCFGSampler(sched, temperature=float("nan"))


# ---------------------------------------------------------------------- the real host code
def _rar_scale_statements():
    """The statements of RAR's generate() loop that compute cfg_scale, parsed from rar.py."""
    tree = ast.parse(RAR_PY.read_text())
    gen = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "generate")
    loop = next(n for n in ast.walk(gen) if isinstance(n, ast.For))
    wanted = {"scale_pow", "scale_step", "cfg_scale"}
    stmts = [s for s in loop.body if isinstance(s, ast.Assign) and {getattr(t, "id", None) for t in s.targets} & wanted]
    assert {s.targets[0].id for s in stmts} == wanted
    return compile(ast.Module(body=stmts, type_ignores=[]), str(RAR_PY), "exec")


@pytest.mark.upstream
@pytest.mark.skipif(not RAR_PY.is_file(), reason="third_party/1d-tokenizer submodule not checked out")
@pytest.mark.parametrize("w,p", [(20.0, 1.5), (20.0, 2.0), (3.0, 1.0)])
def test_matches_rar_generate_schedule(w, p):
    code = _rar_scale_statements()
    L = 256

    class Host:
        image_seq_len = L

    rar = []
    for step in range(L):
        ns = {"torch": torch, "self": Host, "step": step, "guidance_scale": w, "guidance_scale_pow": p, "device": "cpu"}
        exec(code, ns)
        rar.append(float(ns["cfg_scale"]))
    rar = torch.tensor(rar, dtype=torch.float32)
    sched = CodebookSchedule("constant", k_max=16384, seq_len=L)
    for mode in ("aware", "cosine"):
        assert torch.equal(AwareCFGSampler(sched, guidance_scale=w, guidance_power=p, guidance=mode).guidance_scales, rar)


# ---------------------------------------------------------------------- transformers adapter
def test_hf_logits_processor_adapter():
    from vcq_plugin.hf import VCQLogitsProcessor

    sched = CodebookSchedule.from_sizes([2, 4, 8, 16])
    s = AwareCFGSampler(sched, guidance_scale=3.0, top_k=3)
    c, u = torch.randn(2, 20), torch.randn(2, 20)
    ids = torch.zeros(2, 1 + 2, dtype=torch.long)  # 1 class token + 2 image tokens -> position 2
    proc = VCQLogitsProcessor(s, prompt_length=1)
    assert torch.equal(proc(ids, torch.cat([c, u])), s.process(2, c, u))  # doubled-batch CFG
    with pytest.raises(ValueError, match="uncond_logits are required at position 2"):
        proc(ids, c)
    calls = []
    with_fn = VCQLogitsProcessor(s, prompt_length=1, uncond_fn=lambda x: calls.append(x.shape) or u)
    assert torch.equal(with_fn(ids, c), s.process(2, c, u)) and calls == [(2, 3)]
    assert torch.equal(with_fn(ids[:, :1], c), s.process(0, c)) and len(calls) == 1  # scale 1: not called
    with pytest.raises(ValueError, match="outside"):
        proc(torch.zeros(2, 6, dtype=torch.long), c)
    with pytest.raises(ValueError, match="rows"):
        proc(ids, torch.randn(3, 20))


def test_hf_logits_processor_list():
    transformers = pytest.importorskip("transformers")
    from vcq_plugin.hf import VCQLogitsProcessor

    s = AwareCFGSampler(CodebookSchedule.from_sizes([2, 4, 8]), guidance="none")
    proc = VCQLogitsProcessor(s, prompt_length=1)
    assert isinstance(proc, transformers.LogitsProcessor)
    out = transformers.LogitsProcessorList([proc])(torch.zeros(2, 2, dtype=torch.long), torch.randn(2, 10))
    assert torch.all(torch.isneginf(out[:, 4:])) and torch.all(torch.isfinite(out[:, :4]))


# ---------------------------------------------------------------------- Eq. 4 in one function
def test_guidance_scales_is_eq4_and_what_the_sampler_uses():
    sched = SCHEDULES["cosine"]
    for mode in ("aware", "cosine", "linear", "constant", "none"):
        want = guidance_scales(sched, 10.0, 1.5, mode)
        assert want.dtype == torch.float32 and want.shape == (256,)
        assert torch.equal(AwareCFGSampler(sched, guidance_scale=10.0, guidance_power=1.5, guidance=mode).guidance_scales, want)
    torch.testing.assert_close(guidance_scales(sched, 10.0, 1.5).double(), eq4_aware_reference(sched.sizes.tolist(), 10.0, 1.5),
                               atol=2e-5, rtol=2e-6)
    constant = CodebookSchedule("constant", k_max=64, seq_len=40)
    assert torch.equal(guidance_scales(constant, 20.0, 2.0, "aware"),
                       torch.tensor([rar_scale(i, 40, 20.0, 2.0) for i in range(40)], dtype=torch.float32))
    assert torch.all(guidance_scales(sched, 0.0, 1.5) == 1.0)  # w = 0: no guidance (RAR's cfg=0)
    with pytest.raises(ValueError, match="Did you mean 'aware'"):
        guidance_scales(sched, 2.0, 1.0, "awre")


# ---------------------------------------------------------------------- sample() checks what process() checks
def test_sample_refuses_what_process_refuses():
    sched = CodebookSchedule("cosine", k_min=2, k_max=16, seq_len=6)
    s = AwareCFGSampler(sched, guidance_scale=3.0)
    with pytest.raises(ValueError, match="vocabulary size 12 is smaller than the schedule's K_max 16"):
        s.sample(lambda tokens, i, need: (torch.randn(2, 12), torch.randn(2, 12)) if need else torch.randn(2, 12), 2)
    with pytest.raises(ValueError, match="shaped like cond_logits"):
        s.sample(lambda tokens, i, need: (torch.randn(2, 16), torch.randn(1, 16)) if need else torch.randn(2, 16), 2)
    with pytest.raises(TypeError, match="floating-point"):
        s.sample(lambda tokens, i, need: (torch.ones(2, 16, dtype=torch.long),) * 2 if need else torch.ones(2, 16, dtype=torch.long), 2)


# ---------------------------------------------------------------------- non-finite logits
@pytest.mark.parametrize("bad", [float("nan"), INF])
def test_non_finite_logits_at_an_allowed_token_name_row_and_position(bad):
    sched = CodebookSchedule.from_sizes([4, 4, 8, 16])
    s = AwareCFGSampler(sched, guidance_scale=3.0)
    c, u = torch.randn(3, 4, 20), torch.randn(3, 4, 20)
    c[1, 2, 5] = bad  # position 2 allows tokens < 8
    with pytest.raises(ValueError, match="cond_logits has .* at batch row 1, position 2, token 5.*check_finite=False"):
        s.process(None, c, u)
    with pytest.raises(ValueError, match="batch row 1, position 2, token 5"):
        s.process(2, c[:, 2], u[:, 2])
    with pytest.raises(ValueError, match="batch row 1, position 3, token 5"):  # j = 1 of a run starting at 2
        s.process(2, c[:, 1:3], u[:, 1:3])
    with pytest.raises(ValueError, match="batch row 1, position 2, token 5"):
        s.sample(lambda tokens, i, need: (c[:, i], u[:, i]) if need else c[:, i], 3)
    u2 = torch.randn(3, 4, 20)
    u2[0, 3, 1] = bad
    with pytest.raises(ValueError, match="uncond_logits has .* at batch row 0, position 3, token 1"):
        s.process(None, torch.randn(3, 4, 20), u2)
    # opt-out: no scan (the value is then masked like a forbidden token)
    out = AwareCFGSampler(sched, guidance_scale=3.0, check_finite=False).process(None, c, u)
    assert not torch.isnan(out).any() and bool(torch.isneginf(out[1, 2, 5]))


def test_non_finite_logits_where_they_cannot_matter_pass():
    sched = CodebookSchedule.from_sizes([4, 4, 8, 16])
    s = AwareCFGSampler(sched, guidance_scale=3.0, guidance_power=1.0)
    assert s.scale_at(0) == 1.0 and s.scale_at(3) != 1.0
    c, u = torch.randn(2, 4, 20), torch.randn(2, 4, 20)
    c[0, 0, 4] = float("nan")  # position 0 allows tokens < 4 only
    c[1, 3, 18] = INF  # beyond K_max: host-appended vocabulary
    u[:, 0] = float("nan")  # position 0 has scale 1: its unconditional logits are not used
    c[:, 1, 0] = -INF  # -inf at an allowed token: the model rules it out
    out = s.process(None, c, u)
    assert torch.isfinite(out[:, 0, :4]).all() and torch.isneginf(out[:, 0, 4:]).all()
    assert torch.isneginf(out[:, 1, 0]).all() and not torch.isnan(out).any()


def test_plus_inf_never_becomes_token_zero_under_argmax():
    """+inf at an allowed token used to be mapped to -inf by the mix; greedy decoding then picked token 0."""
    s = AwareCFGSampler(CodebookSchedule.from_sizes([8, 8]), guidance="constant", guidance_scale=2.0, top_k=1)
    c, u = torch.zeros(1, 8), torch.zeros(1, 8)
    c[0, 5] = INF
    with pytest.raises(ValueError, match="position 1, token 5"):
        s.process(1, c, u)


@pytest.mark.slow
def test_hf_logits_processor_inside_real_generate():
    """VCQLogitsProcessor in transformers' own generate() loop (a tiny random GPT-2, no download):
    aware CFG through uncond_fn and top_k=1, so generate() must return exactly the tokens of our own
    sampling loop on the same model, every token below K(i)."""
    transformers = pytest.importorskip("transformers")
    from vcq_plugin.hf import VCQLogitsProcessor

    K, L, null = 16, 8, 19
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=K + 4, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # varied logits, so the tokens depend on the processing
    sched = CodebookSchedule.from_spec("vcq_cosine", k_max=K, seq_len=L)
    sampler = AwareCFGSampler(sched, guidance_scale=4.0, guidance_power=1.0, top_k=1)
    assert sampler.uses_guidance and not sampler.needs_uncond(0)

    def last_logits(ids):
        with torch.no_grad():
            return model(ids).logits[:, -1].float()

    def uncond_fn(input_ids):  # the same tokens after the null class
        return last_logits(torch.cat([torch.full_like(input_ids[:, :1], null), input_ids[:, 1:]], dim=1))

    classes = torch.tensor([[16], [17], [18]])
    proc = VCQLogitsProcessor(sampler, prompt_length=1, uncond_fn=uncond_fn)
    out = model.generate(classes, attention_mask=torch.ones_like(classes), max_new_tokens=L, min_new_tokens=L,
                         do_sample=False, logits_processor=transformers.LogitsProcessorList([proc]), pad_token_id=0)
    tokens = out[:, 1:]
    assert tokens.shape == (3, L) and bool((tokens < sched.sizes).all())

    def step_fn(prefix, position, need_uncond):
        ids = torch.cat([classes, prefix], dim=1)
        cond = last_logits(ids)
        return (cond, uncond_fn(ids)) if need_uncond else cond

    ours = sampler.sample(step_fn, 3)
    assert torch.equal(tokens, ours)
    unguided = AwareCFGSampler(sched, guidance="none", top_k=1).sample(step_fn, 3)
    assert not torch.equal(ours, unguided)  # guidance changed the tokens, so the check above has teeth
