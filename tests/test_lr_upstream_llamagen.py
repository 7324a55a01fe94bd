"""Appendix A's AR learning-rate schedules on the AdamW that LlamaGen's train_c2i.py builds.

train_c2i.py as a whole needs CUDA (NCCL, ``torch.cuda.set_device``); these checks run the pieces the
hook wraps on CPU: the script's own ``creat_optimizer`` (hooked by
``vcq_plugin.patches.lr_schedules.llamagen_hooks``) on a tiny model, stepped and resumed as ``main()``
does (``optimizer.load_state_dict(checkpoint["optimizer"])`` of a checkpoint it saved), and the
script's own ``__main__`` block run by our launcher. Run in the host's interpreter (tests/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

HOST = "LlamaGen"
CHECKS = ("paper_schedules_at_probe_steps", "host_constant_lr_unchanged", "launcher_runs_the_script_block", "drift")

# ====================================================================== pytest side
if __name__ != "__main__":
    from conftest import host_check_tests

    HOST_CHECKS = (HOST, CHECKS)  # started early by conftest.pytest_collection_finish
    pytestmark, results, test_host_check = host_check_tests(HOST, Path(__file__), CHECKS)


# ====================================================================== host side (subprocess)
REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"


def _paper_lr(group: str, step: int) -> float:
    """Appendix A's AR schedules written out from the configs' numbers (not through lr_schedules):
    Base: 10k warm-up, at the peak until update 50k, linear to 1e-5 at 1.0M; Large: 62.5k warm-up,
    linear to 1e-5 at 500k. Peak 1e-4 (LlamaGen's default lr)."""
    peak, end = 1e-4, 1e-5
    warm, decay_start, total = {"base": (10_000, 50_000, 1_000_000), "large": (62_500, 62_500, 500_000)}[group]
    if step < warm:
        return peak * step / warm
    if step < decay_start:
        return peak
    return peak + (end - peak) * min(1.0, (step - decay_start) / (total - decay_start))


def _schedule(config: str):
    from recipes.pipeline.config import llamagen_lr_schedule, load_config

    return llamagen_lr_schedule(load_config(CONFIGS / config).cfg)


def _model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))


def _step(model, optimizer):
    import torch

    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _lrs(optimizer):
    lrs = {g["lr"] for g in optimizer.param_groups}
    assert len(lrs) == 1, lrs
    return lrs.pop()


def _checkpoint_at(state: dict, updates: int) -> dict:
    """train_c2i's checkpoint of a run ``updates`` optimizer steps in (its AdamW state says so)."""
    import copy

    import torch

    state = copy.deepcopy(state)
    for s in state["state"].values():
        s["step"] = torch.tensor(float(updates))
    return {"optimizer": state, "steps": updates}


def check_paper_schedules_at_probe_steps():
    import logging

    import pytest
    import autoregressive.train.train_c2i as train_c2i
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import llamagen_hooks

    log = logging.getLogger("lr-check")
    for config, group, last in (("llamagen_ar_b.yaml", "base", 1_000_000), ("llamagen_ar_xl.yaml", "large", 500_000)):
        schedule = _schedule(config)
        with patched(llamagen_hooks(schedule)):
            model = _model()
            optimizer = train_c2i.creat_optimizer(model, 0.05, schedule.peak_lr, (0.9, 0.95), log)
            assert len(optimizer.param_groups) == 2  # LlamaGen's decay / no-decay groups, both scheduled
            for update in range(3):  # main(): one optimizer step per training step
                assert _lrs(optimizer) == schedule.lr_at(update)
                _step(model, optimizer)
            saved = optimizer.state_dict()
            for update in (0, 5_000, 10_000, 50_000, 62_500, 500_000, last - 1, last):
                # main() resuming: creat_optimizer, then load_state_dict(checkpoint["optimizer"])
                resumed = train_c2i.creat_optimizer(model, 0.05, schedule.peak_lr, (0.9, 0.95), log)
                resumed.load_state_dict(_checkpoint_at(saved, update)["optimizer"])
                lr = _lrs(resumed)
                assert lr == schedule.lr_at(update), (config, update, lr)
                assert lr == pytest.approx(_paper_lr(group, update), rel=1e-12, abs=1e-20), (config, update)
                _step(model, resumed)
                assert _lrs(resumed) == schedule.lr_at(update + 1)
            # the optimizer's own state_dict round trip (as a checkpoint saves it) resumes at the same update
            again = train_c2i.creat_optimizer(model, 0.05, schedule.peak_lr, (0.9, 0.95), log)
            again.load_state_dict(saved)
            assert _lrs(again) == schedule.lr_at(3)
    assert not hasattr(train_c2i.creat_optimizer, "__vcq_original__")  # undone after the block


def check_host_constant_lr_unchanged():
    """lr_schedule: host: the launcher gets no schedule and runs the script as upstream; upstream's
    creat_optimizer keeps --lr at every step and after a resume."""
    import logging

    import torch
    import autoregressive.train.train_c2i as train_c2i
    from recipes.hosts.llamagen import launch_args, train_c2i_args
    from recipes.hosts.llamagen_launch import SCHEDULE_FLAG
    from recipes.pipeline.config import load_config

    cfg = load_config(CONFIGS / "llamagen_ar_b.yaml", ["lr_schedule=host"]).cfg
    assert launch_args(cfg) == train_c2i_args(cfg) and SCHEDULE_FLAG not in launch_args(cfg)
    assert SCHEDULE_FLAG == launch_args(load_config(CONFIGS / "llamagen_ar_b.yaml").cfg)[0]
    model = _model()
    optimizer = train_c2i.creat_optimizer(model, 0.05, 1e-4, (0.9, 0.95), logging.getLogger("lr-check"))
    assert not hasattr(optimizer, "vcq_lr_scheduler")
    for _ in range(3):
        assert _lrs(optimizer) == 1e-4
        _step(model, optimizer)
    resumed = train_c2i.creat_optimizer(model, 0.05, 1e-4, (0.9, 0.95), logging.getLogger("lr-check"))
    resumed.load_state_dict(_checkpoint_at(optimizer.state_dict(), 500_000)["optimizer"])
    _step(model, resumed)
    assert _lrs(resumed) == 1e-4 and torch.is_tensor(resumed.state[model[0].weight]["step"])


def check_launcher_runs_the_script_block():
    """recipes.hosts.llamagen_launch with a schedule imports train_c2i.py after register() and runs the
    script's own ``__main__`` block in that module: its parser lists GPT-VCQ-XL (GPT_models hook), and
    main() looks up the hooked creat_optimizer."""
    import contextlib
    import io

    import vcq_plugin
    from recipes.hosts import llamagen_launch
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import TRAIN_C2I_MODULE, llamagen_hooks

    schedule = _schedule("llamagen_ar_b.yaml")
    argv = llamagen_launch.launcher_args(schedule.to_dict(), ["--help"])
    assert llamagen_launch.split_args(argv) == (schedule.to_dict(), ["--help"])
    sys.modules.pop(TRAIN_C2I_MODULE, None)  # the launcher imports it after register(), as in a run
    out, old_argv = io.StringIO(), sys.argv
    try:
        with contextlib.redirect_stdout(out):
            try:
                llamagen_launch.main(argv)
                raise AssertionError("--help did not exit")
            except SystemExit as e:
                assert e.code == 0
        train_c2i = sys.modules[TRAIN_C2I_MODULE]
        assert not hasattr(train_c2i.creat_optimizer, "__vcq_original__")  # undone when the block ends
        with patched(llamagen_hooks(schedule)):
            assert train_c2i.main.__globals__["creat_optimizer"].__vcq_hooked__
    finally:
        sys.argv = old_argv
        vcq_plugin.unregister()
    assert "GPT-VCQ-XL" in out.getvalue() and "--gpt-ckpt" in out.getvalue(), out.getvalue()[-500:]


def check_drift():
    """An edit in creat_optimizer or in main() (the resume and step order the schedule relies on) makes the
    hook refuse, naming the symbol and the pin; nothing is patched."""
    import autoregressive.train.train_c2i as train_c2i
    from _host_checks import assert_edit_refused
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import llamagen_hooks

    schedule = _schedule("llamagen_ar_xl.yaml")
    edits = [("creat_optimizer", "lr=learning_rate", "lr=learning_rate * 2"),
             ("main", 'optimizer.load_state_dict(checkpoint["optimizer"])', "pass")]
    for name, old, new in edits:
        assert_edit_refused(train_c2i, name, old, new, llamagen_hooks(schedule), "ce98ec41",
                            untouched=lambda: train_c2i.creat_optimizer)
    with patched(llamagen_hooks(schedule)) as hooked:  # the pinned code passes
        assert hooked == ["autoregressive.train.train_c2i.creat_optimizer"]


def _main(names):
    sys.path.insert(1, str(REPO))  # recipes/ (the configs and the launcher)
    from _host_checks import run_checks  # tests/ is sys.path[0] when this file runs as a script

    run_checks(globals(), names, ("autoregressive.train.train_c2i", "recipes.hosts.llamagen"), extra="llamagen")


if __name__ == "__main__":
    _main(sys.argv[1:] or CHECKS)
