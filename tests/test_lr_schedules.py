"""The learning-rate shape of Appendix A (``vcq_plugin.patches.lr_schedules``) and the config keys that
choose it (``lr_schedule: paper | host``). No host codebase needed: the hosts' own code runs in
tests/test_lr_upstream_*.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.pipeline.config import ConfigError, llamagen_lr_schedule, load_config, titok1d_lr_schedule
from vcq_plugin.patches.lr_schedules import LinearLRSchedule, attach_schedule, lr_factor, updates_applied

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
SMALL = LinearLRSchedule(peak_lr=1e-3, end_lr=1e-4, warmup_steps=4, hold_steps=3, total_steps=17)


def _reference(step: int, s: LinearLRSchedule) -> float:
    """The shape, read off the piecewise definition point by point (the test oracle)."""
    if step < s.warmup_steps:
        return s.peak_lr * step / s.warmup_steps
    if step < s.warmup_steps + s.hold_steps:
        return s.peak_lr
    if step >= s.total_steps:
        return s.end_lr
    t = (step - s.warmup_steps - s.hold_steps) / (s.total_steps - s.warmup_steps - s.hold_steps)
    return (1 - t) * s.peak_lr + t * s.end_lr


def test_shape_matches_the_piecewise_definition():
    got = [SMALL.lr_at(i) for i in range(25)]
    assert got == pytest.approx([_reference(i, SMALL) for i in range(25)], rel=1e-12, abs=1e-18)
    assert got[0] == 0.0 and got[4] == got[6] == 1e-3 and got[7] == 1e-3 and got[17] == got[24] == 1e-4
    assert all(a < b for a, b in zip(got[:4], got[1:5]))  # warm-up rises
    assert all(a > b for a, b in zip(got[7:17], got[8:18]))  # decay falls to the end


def test_no_warmup_and_no_hold():
    s = LinearLRSchedule(peak_lr=2.0, end_lr=0.0, warmup_steps=0, hold_steps=0, total_steps=4)
    assert [s.lr_at(i) for i in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]


@pytest.mark.parametrize("n", [1, 2, 8, 32])
def test_scaled_schedule_is_exactly_the_same_per_update(n):
    """accelerate steps a scheduler n times per update: scaled(n) at update*n is lr_at(update), exactly."""
    s = LinearLRSchedule(peak_lr=1e-4, end_lr=1e-5, warmup_steps=13_000, hold_steps=65_000, total_steps=1_300_000)
    for update in (0, 1, 5_000, 12_999, 13_000, 77_999, 78_000, 500_000, 1_299_999, 1_300_000):
        assert s.scaled(n).lr_at(update * n) == s.lr_at(update)


@pytest.mark.parametrize("kwargs, match", [
    (dict(peak_lr=0.0), "peak_lr=0.0: must be > 0"),
    (dict(end_lr=2e-3), "end_lr=0.002: must be >= 0 and <= peak_lr"),
    (dict(warmup_steps=-1), "warmup_steps=-1: must be an integer >= 0"),
    (dict(hold_steps=2.5), "hold_steps=2.5: must be an integer"),
    (dict(hold_steps=13), r"warmup_steps=4 \+ hold_steps=13 = 17 must be < total_steps=17"),
])
def test_bad_schedules_are_refused(kwargs, match):
    args = dict(peak_lr=1e-3, end_lr=1e-4, warmup_steps=4, hold_steps=3, total_steps=17) | kwargs
    with pytest.raises(ValueError, match=match):
        LinearLRSchedule(**args)


def test_negative_step_is_refused():
    with pytest.raises(ValueError, match="step=-1"):
        lr_factor(-1, warmup_steps=1, hold_steps=0, total_steps=2, end_factor=0.0)


def _model_and_adamw(lr: float):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "weight_decay": 0.05},
                             {"params": [model.bias], "weight_decay": 0.0}], lr=lr)
    return model, opt


def _step(model, opt):
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_attached_schedule_drives_every_update_and_resumes():
    model, opt = _model_and_adamw(SMALL.peak_lr)
    attach_schedule(opt, SMALL)
    used = []
    for _ in range(20):
        used.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[1]["lr"] == used[-1]
        _step(model, opt)
    assert used == [SMALL.lr_at(i) for i in range(20)]
    assert updates_applied(opt) == 20
    saved = opt.state_dict()
    model2, fresh = _model_and_adamw(SMALL.peak_lr)
    attach_schedule(fresh, SMALL)
    fresh.load_state_dict(saved)  # a resumed run: the schedule follows the updates the AdamW state applied
    assert fresh.param_groups[0]["lr"] == SMALL.lr_at(20) == SMALL.end_lr
    partial = opt.state_dict()
    for s in partial["state"].values():
        s["step"] = torch.tensor(9.0)
    model3, third = _model_and_adamw(SMALL.peak_lr)
    attach_schedule(third, SMALL)
    third.load_state_dict(partial)
    assert third.param_groups[0]["lr"] == SMALL.lr_at(9)
    _step(model3, third)
    assert third.param_groups[0]["lr"] == SMALL.lr_at(10)


def test_attach_refuses_an_optimizer_whose_lr_is_not_the_peak():
    _, opt = _model_and_adamw(5e-4)
    with pytest.raises(ValueError, match="lr=0.0005, the schedule's peak is 0.001"):
        attach_schedule(opt, SMALL)


# ---------------------------------------------------------------------- config keys
def test_full_scale_configs_choose_the_paper_schedule():
    for name in ("titok_vcq_b.yaml", "titok_vcq_l.yaml", "titok_constant_b.yaml"):
        s = titok1d_lr_schedule(load_config(CONFIGS / name, check_paths=False).cfg)
        assert s == LinearLRSchedule(peak_lr=1e-4, end_lr=1e-5, warmup_steps=13_000, hold_steps=65_000,
                                     total_steps=1_300_000), name
    base = LinearLRSchedule(peak_lr=1e-4, end_lr=1e-5, warmup_steps=10_000, hold_steps=40_000, total_steps=1_000_000)
    large = LinearLRSchedule(peak_lr=1e-4, end_lr=1e-5, warmup_steps=62_500, hold_steps=0, total_steps=500_000)
    for name, expected in (("llamagen_ar_b.yaml", base), ("llamagen_ar_l.yaml", base), ("llamagen_ar_xl.yaml", large)):
        assert llamagen_lr_schedule(load_config(CONFIGS / name).cfg) == expected, name


def test_the_other_reading_is_one_line():
    """"reaches its peak at 50k steps" read as 50k updates at the peak: one key."""
    s = llamagen_lr_schedule(load_config(CONFIGS / "llamagen_ar_b.yaml", ["train.hold_steps=50000"]).cfg)
    assert s.decay_start == 60_000 and s.lr_at(59_999) == 1e-4 and s.lr_at(60_001) < 1e-4


def test_host_schedule_is_the_hosts_section_unchanged():
    from recipes.hosts.llamagen import launch_args, train_c2i_args
    from recipes.hosts.titok_1d import host_config

    cfg = load_config(CONFIGS / "titok_vcq_b.yaml", ["lr_schedule=host"], check_paths=False).cfg
    assert titok1d_lr_schedule(cfg) is None
    host = host_config(cfg)
    assert host.lr_scheduler.scheduler == "cosine" and "hold_steps" not in host.lr_scheduler.params
    assert "lr_schedule" not in host
    cfg = load_config(CONFIGS / "llamagen_ar_b.yaml", ["lr_schedule=host"]).cfg
    assert llamagen_lr_schedule(cfg) is None and launch_args(cfg) == train_c2i_args(cfg)


@pytest.mark.parametrize("config, override, match", [
    ("titok_vcq_b.yaml", "lr_schedule=cosine", r"lr_schedule.*(paper|host)"),
    ("titok_vcq_b.yaml", "lr_scheduler.params.hold_steps=null", "lr_schedule: paper needs lr_scheduler.params.hold_steps"),
    ("titok_vcq_b.yaml", "lr_scheduler.params.hold_steps=1300000", "the decay would never start"),
    ("titok_vcq_b.yaml", "lr_scheduler.params.hold_steps=-1", r"hold_steps=-1: must be >= 0"),
    ("llamagen_ar_b.yaml", "train.total_steps=null", r"lr_schedule: paper needs train.total_steps"),
    ("llamagen_ar_b.yaml", "train.end_lr=0.01", r"end_lr=0.01: must be >= 0 and <= peak_lr"),
    ("llamagen_ar_xl.yaml", "train.warmup_steps=500000", "the decay would never start"),
])
def test_bad_schedule_keys_are_refused(config, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIGS / config, [override], check_paths=False)


def test_paper_name_without_paper_key_is_refused():
    with pytest.raises(ConfigError, match="set lr_schedule: paper"):
        load_config(CONFIGS / "titok_vcq_b.yaml", ["lr_schedule=host", "lr_scheduler.scheduler=vcq_warmup_hold_linear"],
                    check_paths=False)


def test_lr_plot_draws_the_configs_schedules(tmp_path):
    from recipes.hosts.lr_plot import PANELS, curves, plot

    out = plot(tmp_path / "lr.png", points=20)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name, _ in PANELS:
        paper, lr, host_lr, _ = curves(name)
        assert lr(paper.decay_start) == paper.peak_lr and lr(paper.total_steps) == paper.end_lr
        if name.startswith("llamagen"):
            assert host_lr(paper.total_steps) == paper.peak_lr  # LlamaGen's constant learning rate


def test_lr_hooks_declare_pinned_hashes():
    import re

    from vcq_plugin.patches import llamagen, lr_schedules, titok_1d

    for hook, patch in [(h, titok_1d) for h in lr_schedules.titok_1d_hooks()] + \
                       [(h, llamagen) for h in lr_schedules.llamagen_hooks(SMALL)]:
        assert hook.checks and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in hook.checks.values()), hook.symbol
        assert hook.host == patch.HOST and patch.COMMIT in hook.pin and hook.how_to_fix == patch.HOW_TO_FIX
    assert "create_lr_scheduler" in lr_schedules.titok_1d_hooks()[0].checks
    assert {"creat_optimizer", "main"} <= set(lr_schedules.llamagen_hooks(SMALL)[0].checks)
