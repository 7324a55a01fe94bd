"""VariableCodebookQuantizer and the prefix search against brute-force references."""
import itertools
from pathlib import Path
import math

import pytest
import torch
import torch.nn.functional as F

from vcq_plugin import prefix_search
from vcq_plugin.prefix_search import (_argmax_dim0, brute_force_prefix_argmin, plan_groups, prefix_argmin, segment_argmin,
                                      tiled_prefix_argmin)
from vcq_plugin.quantizer import VariableCodebookQuantizer
from vcq_plugin.registry import QUANTIZERS, create_quantizer
from vcq_plugin.schedule import CodebookSchedule

L, KMAX = 24, 96


def schedules(seq_len=L, k_max=KMAX):
    return {
        "cosine": CodebookSchedule("cosine", k_min=2, k_max=k_max, seq_len=seq_len),
        "linear": CodebookSchedule("linear", k_min=2, k_max=k_max, seq_len=seq_len),
        "power": CodebookSchedule("power", k_min=2, k_max=k_max, seq_len=seq_len, power=2.5),
        "constant": CodebookSchedule("constant", k_max=k_max, seq_len=seq_len),
        # long runs of equal sizes, a jump, K(0) = 1
        "explicit": CodebookSchedule.from_sizes([1] * 3 + [5] * 7 + [6] + [40] * 5 + [k_max] * (seq_len - 16)),
    }


def masked_argmin_cdist(z, codebook, sizes):
    """Independent check: the minimal allowed Euclidean distance via torch.cdist (float64)."""
    b, l, d = z.shape
    dist = torch.cdist(z.double().reshape(b * l, d), codebook.double())
    dist[torch.arange(codebook.shape[0]) >= sizes.repeat(b).unsqueeze(1)] = math.inf
    return dist.min(1).values.view(b, l)


# ---------------------------------------------------------------------- search = the reference
@pytest.mark.parametrize("name", ["cosine", "linear", "power", "constant", "explicit"])
@pytest.mark.parametrize("dim", [8, 12, 256])
def test_reference_search_equals_brute_force_and_is_optimal(name, dim):
    """The segment-by-segment reference (the oracle below) against the full masked matrix, with ties."""
    g = torch.Generator().manual_seed(100 * dim + len(name))
    sched = schedules()[name]
    z = torch.randint(-2, 3, (5, L, dim), generator=g).float()
    codebook = torch.randint(-2, 3, (KMAX, dim), generator=g).float()
    codebook[7] = codebook[3]  # duplicate codes: a guaranteed tie
    for chunk in (None, 1, 300):
        got = segment_argmin(z, codebook, sched.sizes.tolist(), chunk_size=chunk)
        assert torch.equal(got, brute_force_prefix_argmin(z, codebook, sched.sizes))
    zr = torch.randn(5, L, dim, generator=g)
    best = (zr.double() - codebook.double()[segment_argmin(zr, codebook, sched.sizes.tolist())]).norm(dim=-1)
    torch.testing.assert_close(best, masked_argmin_cdist(zr, codebook, sched.sizes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cosine", "linear", "power", "constant", "explicit"])
@pytest.mark.parametrize("dim", [8, 12, 256])
@pytest.mark.parametrize("chunk_size", [None, 37, 700])
@pytest.mark.parametrize("scripted", [True, False], ids=["torchscript", "python"])
def test_tiled_search_equals_reference_with_ties(name, dim, chunk_size, scripted, monkeypatch):
    """Small integer data: every distance is exact, ties are frequent, so the lowest index must win;
    the tile loop run by TorchScript or by Python (``VCQ_SCRIPTED_TILES=0``) alike."""
    monkeypatch.setattr(prefix_search, "_SCRIPTED", scripted)
    seed = 1000 * ["cosine", "linear", "power", "constant", "explicit"].index(name) + 10 * dim + (chunk_size or 0) % 7
    g = torch.Generator().manual_seed(seed)  # a fixed number per case, the same in every process
    sched = schedules()[name]
    z = torch.randint(-2, 3, (5, L, dim), generator=g).float()
    codebook = torch.randint(-2, 3, (KMAX, dim), generator=g).float()
    codebook[7] = codebook[3]  # duplicate codes: a guaranteed tie
    got = tiled_prefix_argmin(z, codebook, tuple(sched.sizes.tolist()), chunk_size)
    want = segment_argmin(z, codebook, sched.sizes.tolist())
    assert got.dtype == torch.int64 and got.shape == (5, L)
    assert torch.equal(got, want)
    assert bool((got < sched.sizes).all()) and bool((got >= 0).all())


def test_the_tile_loop_is_scripted_unless_turned_off_or_compiling(monkeypatch):
    assert isinstance(prefix_search._tile_loop(), torch.jit.ScriptFunction)
    monkeypatch.setattr(prefix_search, "_SCRIPTED", False)  # VCQ_SCRIPTED_TILES=0
    assert prefix_search._tile_loop() is prefix_search._unit_argmax
    monkeypatch.setattr(prefix_search, "_SCRIPTED", True)
    monkeypatch.setattr(prefix_search, "compiling", lambda: True)  # torch.compile traces the Python function
    assert prefix_search._tile_loop() is prefix_search._unit_argmax


def test_the_tile_loop_runs_in_python_with_a_warning_where_torchscript_cannot_compile_it(monkeypatch):
    def refuse(fn):
        raise RuntimeError("TorchScript is not available")

    prefix_search._scripted_unit_argmax.cache_clear()
    monkeypatch.setattr(torch.jit, "script", refuse)
    try:
        with pytest.warns(RuntimeWarning, match="TorchScript could not compile the CPU search's tile loop"):
            assert prefix_search._tile_loop() is prefix_search._unit_argmax
        g = torch.Generator().manual_seed(5)
        sizes = tuple(schedules()["cosine"].sizes.tolist())
        z, codebook = torch.randint(-2, 3, (3, L, 8), generator=g).float(), torch.randint(-2, 3, (KMAX, 8), generator=g).float()
        assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, 37), segment_argmin(z, codebook, sizes))
    finally:
        prefix_search._scripted_unit_argmax.cache_clear()  # compiled again by the next search


@pytest.mark.parametrize("dim", [1, 8, 12, 256])
def test_blockwise_squared_norms_equal_the_hosts_bit_for_bit(dim):
    e = torch.randn(3 * 1000 + 7, dim, generator=torch.Generator().manual_seed(dim))
    assert torch.equal(prefix_search._sq_norms(e, rows_at_once=1000), torch.sum(e**2, dim=1))


def test_prefix_argmin_dispatch_switch(monkeypatch):
    """timm's use_fused_attn pattern: tiled on CPU by default, the reference elsewhere, one switch."""
    assert prefix_search.use_tiled_search("cpu") and not prefix_search.use_tiled_search("cuda")
    calls = []
    monkeypatch.setattr(prefix_search, "segment_argmin", lambda *a, **k: calls.append("reference") or segment_argmin(*a, **k))
    monkeypatch.setattr(prefix_search, "tiled_prefix_argmin", lambda *a, **k: calls.append("tiled") or tiled_prefix_argmin(*a, **k))
    z, cb, sizes = torch.randn(2, 4, 3), torch.randn(9, 3), [2, 3, 9, 9]
    prefix_argmin(z, cb, sizes)
    with prefix_search.tiled_search(False):
        assert not prefix_search.use_tiled_search("cpu")
        prefix_argmin(z, cb, sizes)
    assert prefix_search.use_tiled_search("cpu")
    prefix_search.set_tiled_search(False)
    try:
        prefix_argmin(z, cb, sizes)
    finally:
        prefix_search.set_tiled_search(None)
    assert calls == ["tiled", "reference", "reference"]


@pytest.mark.parametrize("name", ["cosine", "linear", "power", "constant", "explicit"])
@pytest.mark.parametrize("dim", [8, 12, 256])
@pytest.mark.parametrize("use_l2_norm", [False, True])
def test_quantizer_equals_brute_force_random(name, dim, use_l2_norm):
    torch.manual_seed(dim + 7 * use_l2_norm)
    sched = schedules()[name]
    # a small chunk puts tile boundaries inside groups (and inside positions for dim 8)
    q = VariableCodebookQuantizer(sched, dim, use_l2_norm=use_l2_norm, chunk_size=53 if dim == 8 else 500)
    q.embedding.weight.data.normal_()
    z = torch.randn(6, L, dim)
    z_q, info = q(z)
    idx = info["indices"]
    zr, cb = (F.normalize(z, dim=-1), F.normalize(q.embedding.weight, dim=-1)) if use_l2_norm else (z, q.embedding.weight)
    assert torch.equal(idx, segment_argmin(zr, cb, sched.sizes.tolist()))
    assert torch.equal(idx, q.nearest_indices(z))
    assert bool((idx < sched.sizes).all())
    # optimal among the allowed codes, checked with an independent distance (cdist, float64)
    chosen = (zr.double() - cb.double()[idx]).norm(dim=-1)
    assert torch.allclose(chosen, masked_argmin_cdist(zr, cb.detach(), sched.sizes), rtol=1e-5, atol=1e-5)
    # z_q is the chosen code (normalised with use_l2_norm), fp32
    assert z_q.dtype == torch.float32
    assert torch.allclose(z_q, cb.detach()[idx], atol=1e-6)
    assert torch.allclose(q.get_codebook_entry(idx), cb.detach()[idx])


def test_chunk_boundaries_split_positions():
    """chunk_size smaller than one position's batch forces tiles inside a position."""
    torch.manual_seed(0)
    sched = schedules()["cosine"]
    z, cb = torch.randn(9, L, 8), torch.randn(KMAX, 8)
    want = segment_argmin(z, cb, sched.sizes.tolist())
    for chunk in (1, 2, KMAX, KMAX * 3 + 1, 10**9):
        assert torch.equal(prefix_argmin(z, cb, sched.sizes.tolist(), chunk_size=chunk), want)


@pytest.mark.parametrize("batch", [5, 70])
def test_codebooks_larger_than_a_chunk_are_split_into_row_blocks(batch):
    """chunk // K < MIN_COLUMNS: tiles keep MIN_COLUMNS columns (a max-pool over one column is a scalar
    loop) and split the rows into blocks whose maxima are merged, first block on ties."""
    sizes = tuple(CodebookSchedule("cosine", k_min=2, k_max=3000, seq_len=6).sizes.tolist())
    chunk = 64 * 48
    tiles = prefix_search.plan_tiles(sizes, batch, chunk)
    assert any(t.r0 > 0 for t in tiles)
    # never a narrow tile, except the last piece of a position
    assert all(t.c1 - t.c0 >= min(prefix_search.MIN_COLUMNS, batch) or t.c1 % batch == 0 for t in tiles)
    g = torch.Generator().manual_seed(batch)
    z = torch.randint(-2, 3, (batch, 6, 4), generator=g).float()
    codebook = torch.randint(-2, 3, (3000, 4), generator=g).float()  # 625 distinct codes: ties across blocks
    assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, chunk), segment_argmin(z, codebook, sizes))


@pytest.mark.parametrize("batch, cols_fit, widths", [(128, 95, [64, 64]), (128, 70, [64, 64]),
                                                     (200, 70, [67, 67, 66]), (100, 64, [64, 36])])
def test_a_position_split_over_tiles_is_split_evenly(batch, cols_fit, widths):
    """When one position's queries do not fit a chunk, its columns are split evenly (a multiple of 16
    when that still fits the chunk), not into a chunk-wide part and a narrow rest; same indices."""
    k = 256
    sizes = (k, k)
    chunk = k * cols_fit
    tiles = prefix_search.plan_tiles(sizes, batch, chunk)
    assert [t.c1 - t.c0 for t in tiles] == widths * 2
    assert max((t.c1 - t.c0) * (t.r1 - t.r0) for t in tiles) <= chunk
    g = torch.Generator().manual_seed(batch + cols_fit)
    z, codebook = torch.randn(batch, 2, 4, generator=g), torch.randn(k, 4, generator=g)
    assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, chunk), segment_argmin(z, codebook, sizes))


@pytest.mark.parametrize("k", [1, 2, 6, 63, 64, 65, 128, 300])
def test_pooled_argmax_equals_argmax_first_on_ties(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 4, (k, 11), generator=g).float()  # many ties
    x[-1, 0] = 9.0  # maximum in the last row
    x[:, 1] = 2.0  # a column that is one tie
    want = x.argmax(0)
    for split in [s for s in (1, 2, 3, 4, 6) if k % s == 0]:
        out, values = torch.full((11,), -1, dtype=torch.long), torch.empty(11)
        assert torch.equal(_argmax_dim0(x, out, split), want), split
        assert out[1] == 0
        assert torch.equal(_argmax_dim0(x, out, split, values=values), want) and torch.equal(values, x.amax(0))
    with pytest.raises(ValueError, match="split"):
        _argmax_dim0(torch.zeros(5, 3), torch.empty(3, dtype=torch.long), 2)


def test_masks_built_per_tile_when_too_large_to_cache(monkeypatch):
    """Past the cache limit, the per-position masks are built tile by tile: same indices."""
    g = torch.Generator().manual_seed(3)
    sizes = CodebookSchedule("cosine", k_min=2, k_max=300, seq_len=24).sizes.tolist()
    z, cb = torch.randint(-2, 3, (5, 24, 4), generator=g).float(), torch.randint(-2, 3, (300, 4), generator=g).float()
    want = segment_argmin(z, cb, sizes)
    monkeypatch.setattr(prefix_search, "_MASK_CACHE_LIMIT", 0)
    prefix_search._tile_masks.cache_clear()
    for chunk in (64, 1000, 10**6):
        assert prefix_search._tile_masks(tuple(sizes), 5, chunk, z.device).per_unit is None
        assert torch.equal(prefix_argmin(z, cb, sizes, chunk_size=chunk), want)
    prefix_search._tile_masks.cache_clear()


@pytest.mark.parametrize("chunk", [10**9, 100, 300, 2000])
def test_plan_groups_is_an_optimal_partition(chunk):
    """The DP's plan costs no more than every partition into contiguous runs (enumerated)."""
    sizes = (2, 2, 3, 9, 9, 10, 30, 31, 64, 64)
    runs = [(0, 2, 2), (2, 3, 3), (3, 5, 9), (5, 6, 10), (6, 7, 30), (7, 8, 31), (8, 10, 64)]
    rows, overhead = 4, 50

    def tiles(n_pos, k):  # the search's tile count (whole positions, part of one, or row blocks)
        return prefix_search._tiles(n_pos, rows, k, chunk)

    def cost(groups):
        return sum(rows * (b - a) * k + overhead * tiles(b - a, k) for a, b, k in groups)

    best = math.inf
    for mask in itertools.product([0, 1], repeat=len(runs) - 1):
        groups, start = [], 0
        for j, cut in enumerate(list(mask) + [1]):
            if cut:
                groups.append((runs[start][0], runs[j][1], runs[j][2]))
                start = j + 1
        best = min(best, cost(groups))
    plan = plan_groups(sizes, rows, chunk, overhead)
    assert plan[0][0] == 0 and plan[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    assert all(k == max(sizes[a:b]) for a, b, k in plan)
    assert cost(plan) == best


# ---------------------------------------------------------------------- losses and gradients
def host_vq(z, weight, beta, use_l2_norm):
    """The hosts' VectorQuantizer arithmetic (TiTok modeling/quantizer/quantizer.py, LlamaGen vq_model.py)."""
    zf = z.reshape(-1, z.shape[-1])
    if use_l2_norm:
        zf = F.normalize(zf, dim=-1)
        emb = F.normalize(weight, dim=-1)
    else:
        emb = weight
    d = torch.sum(zf**2, dim=1, keepdim=True) + torch.sum(emb**2, dim=1) - 2 * torch.einsum("bd,dn->bn", zf, emb.t())
    idx = d.argmin(1)
    zq = emb[idx].view(z.shape)
    zz = zf.view(z.shape)
    commitment = beta * torch.mean((zq.detach() - zz) ** 2)
    codebook = torch.mean((zq - zz.detach()) ** 2)
    return zz + (zq - zz).detach(), idx.view(z.shape[:2]), commitment, codebook


@pytest.mark.parametrize("use_l2_norm", [False, True])
def test_constant_schedule_reproduces_host_quantizer_and_gradients(use_l2_norm):
    torch.manual_seed(1)
    q = create_quantizer("constant", dim=12, k_max=KMAX, seq_len=L, commitment_cost=0.3, use_l2_norm=use_l2_norm)
    w_host = q.embedding.weight.detach().clone().requires_grad_(True)
    z = torch.randn(3, L, 12, requires_grad=True)
    z_host = z.detach().clone().requires_grad_(True)
    z_q, info = q(z)
    hz, hidx, hcommit, hcb = host_vq(z_host, w_host, 0.3, use_l2_norm)
    assert torch.equal(info["indices"], hidx)
    assert torch.allclose(z_q, hz)
    assert torch.allclose(info["commitment_loss"], hcommit) and torch.allclose(info["codebook_loss"], hcb)
    (info["loss"] + z_q.square().sum()).backward()
    (hcommit + hcb + hz.square().sum()).backward()
    assert z.grad is not None and q.embedding.weight.grad is not None
    assert z.grad.abs().sum() > 0 and q.embedding.weight.grad.abs().sum() > 0
    assert torch.allclose(z.grad, z_host.grad, atol=1e-6)
    assert torch.allclose(q.embedding.weight.grad, w_host.grad, atol=1e-6)
    with torch.no_grad():  # no graph: the two equal losses are computed once, bit for bit the host's values
        z_q, info = q.eval()(z)
        hz, _, hcommit, hcb = host_vq(z_host, w_host, 0.3, use_l2_norm)
    assert torch.equal(z_q, hz) and torch.equal(info["commitment_loss"], hcommit) and torch.equal(info["codebook_loss"], hcb)


def test_gradients_reach_input_and_only_allowed_codes():
    torch.manual_seed(2)
    sched = schedules()["power"]
    q = VariableCodebookQuantizer(sched, 8)
    q.embedding.weight.data.normal_()
    z = torch.randn(4, L, 8, requires_grad=True)
    z_q, info = q(z)
    (info["loss"] + z_q.sum()).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # straight-through: d(sum z_q)/dz = 1 plus the commitment term
    z2 = z.detach().clone().requires_grad_(True)
    q(z2)[0].sum().backward()
    assert torch.equal(z2.grad, torch.ones_like(z2))
    used = torch.zeros(KMAX, dtype=torch.bool)
    used[info["indices"].unique()] = True
    grad_rows = q.embedding.weight.grad.abs().sum(1) > 0
    assert torch.equal(grad_rows, used)  # the codebook loss moves exactly the chosen codes
    assert int(info["indices"].max()) < KMAX


def llamagen_entropy_loss(affinity, temperature):
    """LlamaGen tokenizer/tokenizer_image/vq_model.py compute_entropy_loss (softmax), -inf = disallowed."""
    flat = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = F.softmax(flat, dim=-1)
    log_probs = F.log_softmax(flat + 1e-5, dim=-1)
    avg_probs = probs.mean(0)
    avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + 1e-5))
    sample_entropy = -torch.mean(torch.sum(torch.where(probs > 0, probs * log_probs, 0.0), dim=-1))
    return sample_entropy - avg_entropy


@pytest.mark.parametrize("name", ["constant", "cosine", "explicit"])
def test_entropy_loss_matches_llamagen_over_allowed_codes(name):
    torch.manual_seed(3)
    sched = schedules()[name]
    q = VariableCodebookQuantizer(sched, 8, entropy_loss_ratio=0.5, entropy_temperature=0.5)
    q.embedding.weight.data.normal_()
    z = torch.randn(3, L, 8, requires_grad=True)
    _, info = q(z)
    zf, w = z.detach().reshape(-1, 8), q.embedding.weight.detach()
    d = torch.sum(zf**2, 1, keepdim=True) + torch.sum(w**2, 1) - 2 * zf @ w.t()
    d[torch.arange(KMAX) >= sched.sizes.repeat(3).unsqueeze(1)] = math.inf
    want = 0.5 * llamagen_entropy_loss(-d, 0.5)
    assert torch.allclose(info["entropy_loss"], want, atol=1e-5)
    assert torch.allclose(info["loss"], info["codebook_loss"] + info["commitment_loss"] + info["entropy_loss"])
    info["loss"].backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(q.embedding.weight.grad).all()
    q.eval()
    assert float(q(z)[1]["entropy_loss"]) == 0.0  # training-only, as in LlamaGen


def test_autocast_bfloat16_keeps_fp32_distances():
    torch.manual_seed(4)
    q = VariableCodebookQuantizer(schedules()["cosine"], 12)
    q.embedding.weight.data.normal_()
    z = torch.randn(4, L, 12)
    want = q.nearest_indices(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, info = q(z)
        idx_bf = q.nearest_indices(z)
    assert torch.equal(info["indices"], want) and torch.equal(idx_bf, want)
    assert z_q.dtype == torch.float32 and info["loss"].dtype == torch.float32
    # a bf16 input is upcast, not searched in bf16
    zb = z.bfloat16()
    assert torch.equal(q(zb)[1]["indices"], segment_argmin(zb.float(), q.embedding.weight, q.schedule.sizes.tolist()))


# ---------------------------------------------------------------------- lookup
def test_get_codebook_entry_rejects_indices_beyond_k_i():
    q = VariableCodebookQuantizer(schedules()["linear"], 8)
    idx = torch.zeros(2, L, dtype=torch.long)
    assert q.get_codebook_entry(idx).shape == (2, L, 8)
    k5 = q.schedule.size_at(5)
    idx[1, 5] = k5
    with pytest.raises(ValueError, match=rf"batch 1, position 5 has index {k5} but K\(5\)={k5}"):
        q.get_codebook_entry(idx)
    idx[1, 5] = -1
    with pytest.raises(ValueError, match="position 5"):
        q.get_codebook_entry(idx)
    with pytest.raises(TypeError, match="integer"):
        q.get_codebook_entry(torch.zeros(2, L))
    with pytest.raises(ValueError, match="shape"):
        q.get_codebook_entry(torch.zeros(2, L + 1, dtype=torch.long))


# ---------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(5)
    q = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    q.embedding.weight.data.normal_()
    path = tmp_path / "q.pt"
    torch.save(q.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert set(sd) == {"embedding.weight", "codebook_sizes"}
    q2 = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    q2.load_state_dict(sd)
    assert torch.equal(q2.embedding.weight, q.embedding.weight)
    z = torch.randn(2, L, 8)
    assert torch.equal(q2(z)[1]["indices"], q(z)[1]["indices"])
    # nested in a host model, under the hosts' attribute name
    host = torch.nn.Module()
    host.quantize = q
    host2 = torch.nn.Module()
    host2.quantize = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    host2.load_state_dict(host.state_dict())
    assert torch.equal(host2.quantize.embedding.weight, q.embedding.weight)


def test_schedule_mismatch_error_shows_both():
    a = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    b = create_quantizer("vcq_linear", dim=8, k_max=KMAX, seq_len=L)
    with pytest.raises(ValueError) as err:
        b.load_state_dict(a.state_dict())
    msg = str(err.value)
    assert "kind='cosine'" in msg and "kind='linear'" in msg and "codebook_sizes" in msg
    explicit = VariableCodebookQuantizer(schedules()["explicit"], 8)
    with pytest.raises(ValueError, match=r"explicit sizes \(L=24\) \[1, 1, 1, 5"):
        a.load_state_dict(explicit.state_dict())
    with pytest.raises(ValueError, match="another codebook schedule"):  # also when not strict
        b.load_state_dict(a.state_dict(), strict=False)


def test_host_checkpoint_without_schedule_loads():
    host_weight = torch.randn(KMAX, 8)
    q = create_quantizer("vcq_power", dim=8, k_max=KMAX, seq_len=L)
    result = q.load_state_dict({"embedding.weight": host_weight}, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(q.embedding.weight, host_weight)
    assert torch.equal(q.codebook_sizes, q.schedule.sizes)
    parent = torch.nn.Module()
    parent.quantize = create_quantizer("vcq_power", dim=8, k_max=KMAX, seq_len=L)
    parent.load_state_dict({"quantize.embedding.weight": host_weight})
    assert torch.equal(parent.quantize.embedding.weight, host_weight)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a different K_max is still caught
        q.load_state_dict({"embedding.weight": torch.randn(KMAX * 2, 8)})


def test_codebook_init_matches_hosts():
    q = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    w = q.embedding.weight
    assert w.shape == (KMAX, 8) and float(w.detach().abs().max()) <= 1.0 / KMAX
    assert q.k_max == KMAX and q.seq_len == L and q.dim == 8 and q.commitment_cost == 0.25


# ---------------------------------------------------------------------- errors
def test_input_errors():
    q = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L)
    with pytest.raises(ValueError, match="rank 3"):
        q(torch.randn(L, 8))
    with pytest.raises(ValueError, match=f"seq_len={L}, got {L + 1}"):
        q(torch.randn(2, L + 1, 8))
    with pytest.raises(ValueError, match="dim=8, got 12"):
        q(torch.randn(2, L, 12))
    for bad in (float("nan"), float("inf"), -float("inf")):
        z = torch.randn(2, L, 8)
        z[1, 3, 2] = bad
        with pytest.raises(ValueError, match=r"finite.*\(1, 3, 2\)"):
            q(z)
        with pytest.raises(ValueError, match="finite"):
            q.nearest_indices(z)
    with pytest.raises(TypeError, match="floating"):
        q(torch.zeros(2, L, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        q([[0.0] * 8] * L)


def test_constructor_errors():
    with pytest.raises(ValueError, match="Did you mean 'vcq_cosine'"):
        create_quantizer("vcq_cosin", dim=8)
    with pytest.raises(ValueError, match="k_min must be <= k_max"):
        create_quantizer("vcq_cosine", dim=8, k_min=100, k_max=10)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        create_quantizer("vcq_cosine", dim=0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        VariableCodebookQuantizer(CodebookSchedule.from_spec("vcq_cosine"), 8.0)
    with pytest.raises(ValueError, match="commitment_cost"):
        create_quantizer("vcq_cosine", dim=8, commitment_cost=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        create_quantizer("vcq_cosine", dim=8, chunk_size=0)
    with pytest.raises(TypeError, match="schedule must be a CodebookSchedule.*from_spec"):
        VariableCodebookQuantizer(3, 8)
    with pytest.raises(TypeError, match="schedule must be a CodebookSchedule.*create_quantizer"):
        VariableCodebookQuantizer("vcq_cosine", 8)  # names are resolved by the registry / from_spec, not here


# ---------------------------------------------------------------------- registry
@pytest.mark.parametrize(
    "name,kind,power", [("vcq_cosine", "cosine", None), ("vcq_linear", "linear", None), ("vcq_power", "power", 2.5), ("vcq_power2.5", "power", 2.5), ("constant", "constant", None)]
)
def test_registry_names(name, kind, power):
    q = create_quantizer(name, dim=12, k_max=KMAX, seq_len=L, use_l2_norm=True)
    assert isinstance(q, VariableCodebookQuantizer) and q.use_l2_norm and q.dim == 12
    kw = {"power": power} if power else {}
    expect = CodebookSchedule(kind, k_min=2, k_max=KMAX, seq_len=L, **kw)
    assert q.schedule == expect and q.schedule.kind == kind
    assert name in QUANTIZERS


def test_registry_defaults_and_errors():
    q = create_quantizer("vcq_cosine", dim=8)
    assert q.k_max == 16384 and q.seq_len == 256 and q.schedule.k_min == 2
    assert create_quantizer("vcq_power", dim=8, k_max=KMAX, seq_len=L, power=3.0).schedule.power == 3.0
    with pytest.raises(ValueError, match="Did you mean 'vcq_linear'"):
        create_quantizer("vcq_lnear", dim=8)
    with pytest.raises(ValueError, match="power"):
        create_quantizer("vcq_cosine", dim=8, power=2.0)


# ---------------------------------------------------------------------- usage statistics
def test_usage_statistics():
    torch.manual_seed(6)
    sched = schedules()["cosine"]
    q = VariableCodebookQuantizer(sched, 8)
    q.embedding.weight.data.normal_()
    assert torch.equal(q.codes_used(), torch.zeros(L, dtype=torch.long))
    seen = [set() for _ in range(L)]
    for _ in range(3):
        idx = q(torch.randn(5, L, 8))[1]["indices"]
        for i in range(L):
            seen[i].update(idx[:, i].tolist())
    want = torch.tensor([len(s) for s in seen])
    assert torch.equal(q.codes_used(), want)
    assert torch.allclose(q.position_usage(), want.float() / sched.sizes.float())
    assert float(q.position_usage().max()) <= 1.0
    q.eval()
    q(torch.randn(5, L, 8))  # eval forwards do not count
    assert torch.equal(q.codes_used(), want)
    q.update_usage(torch.zeros(1, L, dtype=torch.long))  # explicit collection in eval mode
    assert torch.equal(q.codes_used(), want + torch.tensor([0 not in s for s in seen]).long())
    q.reset_usage()
    assert int(q.codes_used().sum()) == 0
    assert "usage" not in q.state_dict()


def test_prefix_argmin_argument_errors():
    z, cb = torch.randn(2, 4, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="one entry per position"):
        prefix_argmin(z, cb, [2, 3, 4])
    with pytest.raises(ValueError, match="non-decreasing"):
        prefix_argmin(z, cb, [2, 5, 4, 6])
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        prefix_argmin(z, cb, [2, 3, 4, 11])
    with pytest.raises(ValueError, match="same D"):
        prefix_argmin(z, torch.randn(10, 12), [2, 3, 4, 5])


def test_save_schedule_false_keeps_host_keys_but_still_checks_the_schedule():
    vq = create_quantizer("vcq_cosine", dim=4, k_max=64, seq_len=8, save_schedule=False)
    sd = vq.state_dict()
    assert list(sd) == ["embedding.weight"]  # exactly the hosts' key
    vq.load_state_dict(sd)  # host checkpoint
    vq.load_state_dict(create_quantizer("vcq_cosine", dim=4, k_max=64, seq_len=8).state_dict())
    other = create_quantizer("vcq_linear", dim=4, k_max=64, seq_len=8).state_dict()
    with pytest.raises(ValueError, match="another codebook schedule"):
        vq.load_state_dict(other)


def test_used_codes_per_position_matches_indices():
    vq = create_quantizer("vcq_cosine", dim=4, k_max=32, seq_len=6)
    idx = torch.tensor([[0, 1, 3, 5, 9, 31], [1, 1, 2, 5, 0, 7]])
    vq.update_usage(idx)
    for i in range(6):
        used = vq.used_codes(i, sync=False)
        assert used.shape == (vq.schedule.size_at(i),)
        assert set(used.nonzero()[:, 0].tolist()) == set(idx[:, i].tolist())
    with pytest.raises(ValueError, match="position must be in"):
        vq.used_codes(6)


def test_usage_record_equals_sets_at_word_boundaries():
    """The bit record against Python sets: sizes around multiples of 64, many duplicates, bit 63."""
    sched = CodebookSchedule.from_sizes([1, 2, 63, 64, 65, 127, 128, 129, 200, 200])
    q = VariableCodebookQuantizer(sched, 4)
    g = torch.Generator().manual_seed(11)
    seen = [set() for _ in range(sched.seq_len)]
    for batch in (1, 7, 40, 40):
        idx = (torch.rand(batch, sched.seq_len, generator=g) * sched.sizes).long()
        idx[0] = sched.sizes - 1  # the last code of every position (bit 63 of a word for K = 64, 128)
        q.update_usage(idx)
        for i in range(sched.seq_len):
            seen[i].update(idx[:, i].tolist())
    assert q.codes_used(sync=False).tolist() == [len(s) for s in seen]
    for i, k in enumerate(sched.sizes.tolist()):
        used = q.used_codes(i, sync=False)
        assert used.dtype == torch.bool and used.shape == (k,)
        assert set(used.nonzero()[:, 0].tolist()) == seen[i]
    assert torch.equal(q.usage.sum(1), q.codes_used())  # the dense view of small codebooks agrees
    assert torch.equal(q.codes_used(sync=True), q.codes_used(sync=False))  # no process group: the same


def test_update_usage_validates_indices_like_get_codebook_entry():
    q = create_quantizer("vcq_linear", dim=4, k_max=KMAX, seq_len=L)
    idx = torch.zeros(2, L, dtype=torch.long)
    k5 = q.schedule.size_at(5)
    for bad in (k5, -1):
        idx[1, 5] = bad
        with pytest.raises(ValueError, match=rf"batch 1, position 5 has index {bad} but K\(5\)={k5}"):
            q.update_usage(idx)
    with pytest.raises(TypeError, match="integer"):
        q.update_usage(torch.zeros(2, L))
    with pytest.raises(ValueError, match="shape"):
        q.update_usage(torch.zeros(2, L + 1, dtype=torch.long))
    assert int(q.codes_used().sum()) == 0  # nothing recorded by a refused call


def _vm_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read resident memory")
def test_usage_memory_is_proportional_to_sum_of_sizes():
    """At K_max 2**20, L 256 a dense bool [L, K_max] record would take 256 MiB; the bit record takes
    8 * sum_i ceil(K(i) / 64) bytes (12 MiB for the cosine schedule)."""
    sched = CodebookSchedule.from_spec("vcq_cosine", k_max=2**20, seq_len=256)
    q = VariableCodebookQuantizer(sched, 1)
    idx = torch.zeros(4, 256, dtype=torch.long)
    before = _vm_kib("VmRSS")
    q.update_usage(idx)
    grown_mib = (_vm_kib("VmRSS") - before) / 1024
    record = q._usage.words
    assert record.numel() * 8 == 8 * int(((sched.sizes + 63) // 64).sum()) < sched.seq_len * sched.k_max // 16
    assert grown_mib < 64, grown_mib
    assert q.codes_used().tolist() == [1] * 256


def test_codebook_larger_than_memory_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"K_max=4398046511104 x dim=8 needs .* GiB .* machine's .* GiB of memory"):
        VariableCodebookQuantizer(CodebookSchedule.from_spec("constant", k_max=2**42, seq_len=4), 8)


class _NoHostSync(torch.overrides.TorchFunctionMode):
    """Fails on every tensor operation that would wait for a CUDA device (reads a value on the host)."""

    SYNCING = {"__bool__", "item", "__int__", "__float__", "__index__", "tolist", "numpy", "nonzero", "unique",
               "unique_consecutive", "masked_select", "repeat_interleave", "cpu", "equal", "allclose"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCING:
            raise AssertionError(f"host sync in the forward pass: {name}")
        if name in ("__getitem__", "__setitem__") and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:2])):  # the index
            raise AssertionError(f"host sync in the forward pass: boolean-mask {name}")
        return func(*args, **(kwargs or {}))


def _flat(items):
    for a in items:
        if isinstance(a, (tuple, list)):
            yield from _flat(a)
        else:
            yield a


@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_forward_reads_nothing_on_the_host_on_an_accelerator(monkeypatch, tiled, training):
    """What the forward does for a CUDA tensor, checked on CPU: with the host-side checks switched to
    their accelerator form, no operation in forward() reads a tensor value on the host."""
    from vcq_plugin import quantizer as qmod

    monkeypatch.setattr(qmod, "_host_checks", lambda t: False)
    q = create_quantizer("vcq_cosine", dim=8, k_max=KMAX, seq_len=L, entropy_loss_ratio=0.1)
    q.train(training)
    z = torch.randn(3, L, 8, requires_grad=True)
    with prefix_search.tiled_search(tiled), _NoHostSync():
        z_q, info = q(z)
        (info["loss"] + z_q.sum()).backward()
    assert bool((info["indices"] < q.schedule.sizes).all())
    distinct = sum(len(set(info["indices"][:, i].tolist())) for i in range(L))
    assert int(q.codes_used().sum()) == (distinct if training else 0)  # recorded in training mode only


def test_no_host_sync_mode_catches_the_checks_it_must():
    with pytest.raises(AssertionError, match="__bool__"), _NoHostSync():
        bool(torch.isfinite(torch.ones(2)).all())
    with pytest.raises(AssertionError, match="boolean-mask"), _NoHostSync():
        torch.ones(3)[torch.ones(3, dtype=torch.bool)]


@pytest.mark.slow
def test_usage_collectives_two_processes(tmp_path):
    """2 gloo processes: rank 0 alone reads its own statistics with sync=False (and returns while
    rank 1 waits elsewhere); sync=True on both ranks gives the union."""
    import json

    from _dist_checks import spawn_gloo, usage_worker

    spawn_gloo(usage_worker, 2, str(tmp_path))
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    idx = [torch.tensor(r["indices"]) for r in results]
    local0 = [len(set(idx[0][:, i].tolist())) for i in range(idx[0].shape[1])]
    union = [len(set(idx[0][:, i].tolist()) | set(idx[1][:, i].tolist())) for i in range(idx[0].shape[1])]
    assert results[0]["local_alone"] == local0 and results[0]["local_alone"] != union
    for r in results:
        assert r["synced"] == union
        assert r["synced_used3"] == sorted(set(idx[0][:, 3].tolist()) | set(idx[1][:, 3].tolist()))
