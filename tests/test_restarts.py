"""Per-position dead-code restarts (vcq_plugin.restarts): the home-group rule, training mode only,
deterministic draws, and identical codebooks across DDP ranks (2-process gloo)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from _dist_checks import spawn_gloo

from vcq_plugin.quantizer import VariableCodebookQuantizer
from vcq_plugin.restarts import CodebookRestarts, codes_to_restart, home_groups, restart_plan
from vcq_plugin.schedule import CodebookSchedule

SIZES = [2, 3, 8, 8, 14]


def make_vq(sizes=SIZES, dim=4, l2=True, seed=0):
    torch.manual_seed(seed)
    return VariableCodebookQuantizer(CodebookSchedule.from_sizes(sizes), dim, use_l2_norm=l2).train()


def test_home_groups():
    assert home_groups(torch.tensor(SIZES)) == [(0, 1, 0, 2), (1, 2, 2, 3), (2, 4, 3, 8), (4, 5, 8, 14)]
    assert home_groups(torch.tensor([4, 4, 4])) == [(0, 3, 0, 4)]
    with pytest.raises(ValueError, match="non-decreasing"):
        home_groups(torch.tensor([3, 2]))


def test_rule_restarts_codes_unused_at_home_even_if_used_later():
    usage = torch.zeros(5, 14, dtype=torch.bool)
    usage[0, 0] = True          # position 0 (K=2) collapsed onto code 0 ...
    usage[1:, 1] = True         # ... while code 1 is busy at every later position
    usage[1, 2] = True          # position 1 uses its home code 2
    usage[3, 3:8] = True        # codes 3..7 live at position 3 (same group as position 2)
    usage[4, 8:13] = True       # position 4 leaves code 13 dead
    got = [(a, b, c.tolist()) for a, b, c in codes_to_restart(usage, torch.tensor(SIZES))]
    assert got == [(0, 1, [1]), (4, 5, [13])]


def plan_of(usage, sizes):
    return [(a, b, c.tolist()) for a, b, c in restart_plan(usage, torch.tensor(sizes))]


def test_starved_positions_of_a_tie_group_take_a_code_earliest_first():
    # power-2.5 like start: K = 2, 2, 4. Position 0 took only code 0, position 1 only code 1: both codes
    # are in use inside their home group, so rule 1 restarts nothing, yet both positions carry 0 bits
    usage = torch.zeros(3, 4, dtype=torch.bool)
    usage[0, 0] = usage[1, 1] = True
    usage[2, :4] = True
    assert codes_to_restart(usage, torch.tensor([2, 2, 4])) == []
    # rule 2: position 0 takes code 1 (position 1 keeps trying later); position 1 may not take code 0
    # from the earlier position 0, so the two never trade codes back and forth
    assert plan_of(usage, [2, 2, 4]) == [(0, 1, [1])]


def test_starved_position_prefers_the_code_used_at_fewest_later_positions():
    usage = torch.zeros(4, 6, dtype=torch.bool)
    usage[0, 0] = True                 # K = 6 everywhere (constant): position 0 took one code
    usage[1, 1:6] = True
    usage[2, 1:3] = True
    usage[3, 1] = True
    # every code is used somewhere, so rule 1 (codes no position used) restarts nothing; codes 3..5
    # are used at one later position each: the largest of them goes
    assert plan_of(usage, [6, 6, 6, 6]) == [(0, 1, [5])]
    usage[0, 2] = True                 # two codes: position 0 carries bits, nothing to do
    assert plan_of(usage, [6, 6, 6, 6]) == []


def test_rule_one_serves_a_position_before_rule_two():
    usage = torch.zeros(5, 14, dtype=torch.bool)
    usage[0, 0] = True
    usage[1:, 1] = True
    # position 0: rule 1 restarts code 1 there; position 1 (K=3) used only code 1 and has its home code
    # 2 restarted by rule 1; positions 2..4 get their unused home codes: rule 2 has nothing left to do
    plan = plan_of(usage, SIZES)
    assert plan[:2] == [(0, 1, [1]), (1, 2, [2])]
    assert plan[2:] == [(2, 4, list(range(3, 8))), (4, 5, list(range(8, 14)))]


def global_dead_rule(usage, sizes):
    """The older rule (recipes/pipeline/tokenizer.py): codes no position used."""
    allowed = torch.arange(usage.shape[1])[None] < torch.as_tensor(sizes)[:, None]
    return sorted((~(usage & allowed).any(0)).nonzero()[:, 0].tolist())


def test_constant_schedule_reduces_to_the_global_dead_rule_and_vcq_does_not():
    g = torch.Generator().manual_seed(0)
    usage = torch.rand(6, 10, generator=g) < 0.15
    rule = codes_to_restart(usage, torch.full((6,), 10))
    assert sorted(torch.cat([c for *_, c in rule]).tolist()) == global_dead_rule(usage, [10] * 6)
    # the collapse of the issue (seed 1 of the demo): position 0 uses one code, the other lives later
    usage = torch.zeros(5, 14, dtype=torch.bool)
    usage[:, 0] = True
    usage[1:, 1] = True
    usage[1:, 2:] = True
    assert global_dead_rule(usage, SIZES) == []                         # the old rule restarts nothing
    assert [c.tolist() for *_, c in codes_to_restart(usage, torch.tensor(SIZES))] == [[1]]


def test_restart_moves_dead_codes_onto_outputs_of_their_home_position():
    vq = make_vq()
    r = CodebookRestarts(vq, every=2, seed=3)
    before = vq.embedding.weight.detach().clone()
    cb = F.normalize(before, dim=-1)
    z = cb[torch.zeros(16, 5, dtype=torch.long)] + 0.01 * torch.randn(16, 5, 4)  # everything near code 0
    vq(z)
    assert vq.used_codes(0).tolist() == [True, False]
    assert r(0) == 0                                   # step 0: not a restart step
    n = r(1)
    res = r.last
    assert n == len(res) and 1 in res.codes.tolist()
    zn = F.normalize(z, dim=-1)
    for code, pos in zip(res.codes.tolist(), res.positions.tolist()):
        lo, hi = [(a, b) for a, b, lo_, hi_ in home_groups(torch.tensor(SIZES)) if lo_ <= code < hi_][0]
        assert lo <= pos < hi                          # placed at its home group
        new = vq.embedding.weight[code].detach()
        assert torch.isclose(zn[:, pos], new[None], atol=1e-6).all(1).any()   # an actual encoder output
    untouched = [k for k in range(14) if k not in res.codes.tolist()]
    assert torch.equal(vq.embedding.weight.detach()[untouched], before[untouched])
    assert 0 in untouched                              # used at home: kept
    assert not vq.used_codes(0).any()                  # usage reset after the restart
    assert res.per_position(5)[0] == 1


def test_eval_mode_never_restarts_and_draws_are_deterministic():
    vq = make_vq()
    r = CodebookRestarts(vq, every=1)
    vq.eval()
    vq(torch.randn(4, 5, 4))
    before = vq.embedding.weight.detach().clone()
    assert r(0) == 0 and torch.equal(vq.embedding.weight, before)
    weights = []
    for _ in range(2):
        vq = make_vq(seed=1)
        r = CodebookRestarts(vq, every=1, seed=7)
        vq(torch.randn(8, 5, 4, generator=torch.Generator().manual_seed(0)))
        r(4)
        weights.append(vq.embedding.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    with pytest.raises(ValueError, match=">= 1"):
        CodebookRestarts(vq, every=0)
    with pytest.raises(TypeError, match="VCQ quantizer"):
        CodebookRestarts(torch.nn.Linear(2, 2), every=1)


# ------------------------------------------------------------------------------- checkpoints
def _train(vq, restarts, proj, opt, steps, x):
    moved = 0
    for step in steps:
        idx = torch.randint(0, x.shape[0], (3,), generator=torch.Generator().manual_seed(step))  # few lookups
        z_q, info = vq(proj(x[idx]))
        loss = ((z_q - x[idx]) ** 2).mean() + info["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved += restarts(step)
    return moved


def _fresh(every=4):
    vq = make_vq(sizes=[2, 3, 8, 8, 14], seed=0)
    torch.manual_seed(1)
    proj = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(list(vq.parameters()) + list(proj.parameters()), lr=0.05)
    return vq, CodebookRestarts(vq, every=every, seed=11), proj, opt


def test_resume_between_restarts_gives_the_same_codebook_bit_for_bit(tmp_path):
    """Restarts every 4 steps; a run stopped after step 6 (not a multiple of 4: usage of steps 4-6 pending)
    and resumed from a checkpoint (torch.save round trip) ends with exactly the codebook of a run that never
    stopped. Without the restarts' state the resumed run restarts other codes."""
    x = torch.randn(32, 5, 4, generator=torch.Generator().manual_seed(0))
    vq, r, proj, opt = _fresh()
    moved = _train(vq, r, proj, opt, range(12), x)
    assert moved > 0
    reference = vq.embedding.weight.detach().clone()

    def resumed(with_state: bool) -> torch.Tensor:
        vq, r, proj, opt = _fresh()
        _train(vq, r, proj, opt, range(7), x)
        torch.save({"vq": vq.state_dict(), "proj": proj.state_dict(), "opt": opt.state_dict(),
                    "restarts": r.state_dict()}, tmp_path / "ckpt.pt")
        ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
        vq2, r2, proj2, opt2 = _fresh()
        vq2.load_state_dict(ckpt["vq"])
        proj2.load_state_dict(ckpt["proj"])
        opt2.load_state_dict(ckpt["opt"])
        if with_state:
            r2.load_state_dict(ckpt["restarts"])
        _train(vq2, r2, proj2, opt2, range(7, 12), x)
        return vq2.embedding.weight.detach()

    assert torch.equal(resumed(True), reference)
    assert not torch.equal(resumed(False), reference)  # the state is what makes it identical


def test_usage_state_round_trip_and_validation():
    vq = make_vq()
    vq(torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(0)))
    state = vq.usage_state()
    assert state["words"].dtype == torch.long and state["sizes"] == SIZES
    other = make_vq()
    other.load_usage_state(state)
    assert torch.equal(other.codes_used(sync=False), vq.codes_used(sync=False))
    for i in range(len(SIZES)):
        assert torch.equal(other.used_codes(i, sync=False), vq.used_codes(i, sync=False))
    with pytest.raises(ValueError, match="another codebook schedule"):
        make_vq(sizes=[2, 4, 8, 8, 14]).load_usage_state(state)
    with pytest.raises(ValueError, match="int64"):
        other.load_usage_state({**state, "words": state["words"][:-1]})
    bad = state["words"].clone()
    bad[0] |= 1 << 5  # code 5 at position 0, where K(0) = 2
    with pytest.raises(ValueError, match="K\\(0\\) = 2"):
        other.load_usage_state({**state, "words": bad})
    r = CodebookRestarts(other, every=3, seed=1)
    with pytest.raises(ValueError, match="every=2"):
        r.load_state_dict({**CodebookRestarts(vq, every=2, seed=1).state_dict()})
    r.load_state_dict({})
    assert int(other.codes_used(sync=False).sum()) == 0


# ------------------------------------------------------------------------------- DDP (gloo)
def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    torch.manual_seed(0)  # same initial codebook on both ranks, as DDP starts
    vq = VariableCodebookQuantizer(CodebookSchedule.from_sizes([2, 4, 8]), 4, use_l2_norm=True).train()
    r = CodebookRestarts(vq, every=1, seed=5)
    cb = F.normalize(vq.embedding.weight.detach(), dim=-1)
    idx = torch.zeros(6 + rank, 3, dtype=torch.long)   # unequal batches per rank
    if rank == 1:
        idx[:, 2] = 7   # code 7 is used only on rank 1: global usage must keep it
    g = torch.Generator().manual_seed(100 + rank)      # different data per rank
    z = cb[idx] + 0.01 * torch.randn(idx.shape[0], 3, 4, generator=g)
    vq(z)
    r(0)
    torch.save({"weight": vq.embedding.weight.detach(), "codes": r.last.codes, "positions": r.last.positions,
                "z": F.normalize(z, dim=-1)}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_codebooks(tmp_path):
    world = 2
    spawn_gloo(_ddp_worker, world, str(tmp_path))
    outs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert torch.equal(outs[0]["weight"], outs[1]["weight"])
    codes = outs[0]["codes"].tolist()
    assert codes == outs[1]["codes"].tolist()
    assert 1 in codes and 0 not in codes            # position 0 collapsed onto code 0 on both ranks
    assert 7 not in codes                           # used on rank 1 only: alive globally
    assert sorted(codes) == [1, 2, 3, 4, 5, 6]      # 2, 3 (home 1) and 4..6 (home 2; 7 used) restarted
    z_all = torch.cat([o["z"] for o in outs])       # replacement vectors come from either rank's outputs
    for code, pos in zip(codes, outs[0]["positions"].tolist()):
        assert torch.isclose(z_all[:, pos], outs[0]["weight"][code][None], atol=1e-6).all(1).any()
