"""Appendix A's tokenizer learning-rate schedule through 1d-tokenizer's own scheduler factory.

The checks run the host's ``utils.train_utils.create_optimizer`` / ``create_lr_scheduler`` (hooked by
``vcq_plugin.patches.lr_schedules.titok_1d_hooks``) on a tiny model on CPU, with the host config our
recipe builds from ``recipes/configs/titok_vcq_b.yaml``. A resumed run restores the scheduler's
``last_epoch`` (accelerate's ``load_state``); the checks load that state at each probe update and read
the learning rate the next update uses. Run in the host's own interpreter (see tests/conftest.py).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HOST = "1d-tokenizer"
CHECKS = ("paper_schedule_at_probe_steps", "host_schedule_unchanged", "drift", "run_entry_point_adds_the_scheduler")
# 1d-tokenizer's utils.train_utils imports these (the [titok] extra / the host's requirements.txt)
NEEDS = ("accelerate", "webdataset", "open_clip", "torchinfo", "diffusers", "transformers", "termcolor", "iopath")

# ====================================================================== pytest side
if __name__ != "__main__":
    import pytest
    from conftest import host_check_tests

    HOST_CHECKS = (HOST, CHECKS)  # started early by conftest.pytest_collection_finish
    pytestmark, results, test_host_check = host_check_tests(HOST, Path(__file__), CHECKS)
    _missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    pytestmark = pytestmark + [pytest.mark.skipif(bool(_missing), reason=f"1d-tokenizer's train_utils needs {_missing} "
                                                  "(pip install -r third_party/1d-tokenizer/requirements.txt)")]


# ====================================================================== host side (subprocess)
REPO = Path(__file__).resolve().parents[1]
PROBES = (0, 5_000, 10_000, 13_000, 50_000, 78_000, 500_000, 1_299_999, 1_300_000)


def _paper_lr(step: int) -> float:
    """Appendix A's tokenizer schedule written out from the config's numbers (not through lr_schedules):
    1e-4 peak, 13k warm-up, 65k at the peak, linear to 1e-5 at 1.3M."""
    peak, end, warm, hold, total = 1e-4, 1e-5, 13_000, 65_000, 1_300_000
    if step < warm:
        return peak * step / warm
    if step < warm + hold:
        return peak
    return peak + (end - peak) * min(1.0, (step - warm - hold) / (total - warm - hold))


def _train_utils():
    import vcq_plugin

    vcq_plugin.register(hosts=["1d-tokenizer"])  # the data export train_utils needs
    import utils.train_utils as tu

    return tu


def _host_config(*overrides: str):
    from recipes.hosts.titok_1d import host_config
    from recipes.pipeline.config import load_config

    return host_config(load_config(REPO / "recipes" / "configs" / "titok_vcq_b.yaml", list(overrides),
                                   check_paths=False).cfg)


class _Accelerator:  # create_lr_scheduler reads num_processes only
    def __init__(self, n: int) -> None:
        self.num_processes = n


def _logger():
    import logging

    return logging.getLogger("lr-check")


def _optimizer(tu, config):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer, _ = tu.create_optimizer(config, _logger(), model, None)
    return model, optimizer


def _lr_for_update(tu, config, n: int, update: int, saved: dict) -> float:
    """The learning rate update number ``update`` uses after resuming a scheduler saved at that point:
    ``last_epoch = update * n - 1`` restored, then the step that precedes the update."""
    _, optimizer = _optimizer(tu, config)
    scheduler, _ = tu.create_lr_scheduler(config, _logger(), _Accelerator(n), optimizer)
    scheduler.load_state_dict({**saved, "last_epoch": update * n - 1})
    scheduler.step()
    lrs = {g["lr"] for g in optimizer.param_groups}
    assert len(lrs) == 1, lrs
    return lrs.pop()


def check_paper_schedule_at_probe_steps():
    import pytest
    import torch
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import SCHEDULER_NAME, titok_1d_hooks
    from recipes.pipeline.config import load_config, titok1d_lr_schedule

    tu = _train_utils()
    config = _host_config()
    assert config.lr_scheduler.scheduler == SCHEDULER_NAME and config.lr_scheduler.params.hold_steps == 65_000
    schedule = titok1d_lr_schedule(load_config(REPO / "recipes" / "configs" / "titok_vcq_b.yaml", check_paths=False).cfg)
    with patched(titok_1d_hooks()):
        for n in (1, 8):  # accelerate steps a prepared scheduler once per process per update
            model, optimizer = _optimizer(tu, config)
            scheduler, disc = tu.create_lr_scheduler(config, _logger(), _Accelerator(n), optimizer)
            assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and disc is None
            for update in range(3):  # stepped as train_one_epoch + accelerate do
                assert optimizer.param_groups[0]["lr"] == schedule.lr_at(update)
                model(torch.ones(2, 4)).sum().backward()
                optimizer.step()
                for _ in range(n):
                    scheduler.step()
            saved = scheduler.state_dict()
            for update in PROBES:
                lr = _lr_for_update(tu, config, n, update, saved)
                assert lr == schedule.lr_at(update), (n, update, lr, schedule.lr_at(update))
                assert lr == pytest.approx(_paper_lr(update), rel=1e-12, abs=1e-20), (n, update)
        # the discriminator's (stage 2): same shape, stepped only from discriminator_start, as the host's
        config2 = _host_config("losses.discriminator_start=20000")
        _, opt_g = _optimizer(tu, config2)
        _, opt_d = _optimizer(tu, config2)
        _, disc = tu.create_lr_scheduler(config2, _logger(), _Accelerator(1), opt_g, opt_d)
        disc.load_state_dict({**disc.state_dict(), "last_epoch": 1_279_999})
        disc.step()
        assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-5, rel=1e-12)  # ends where the generator's does
    import utils.train_utils as tu2

    assert not hasattr(tu2.create_lr_scheduler, "__vcq_original__")  # undone after the block


def check_host_schedule_unchanged():
    """lr_schedule: host gives the YAML's cosine section to the host unchanged, and the hook (installed or
    not) returns upstream's scheduler: the same learning rates at every probe update."""
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import titok_1d_hooks

    tu = _train_utils()
    config = _host_config("lr_schedule=host")
    assert config.lr_scheduler.scheduler == "cosine" and "hold_steps" not in config.lr_scheduler.params
    assert dict(config.lr_scheduler.params) == {"learning_rate": 1e-4, "warmup_steps": 13_000, "end_lr": 1e-5}
    for n in (1, 8):
        _, optimizer = _optimizer(tu, config)
        upstream_sched, _ = tu.create_lr_scheduler(config, _logger(), _Accelerator(n), optimizer)
        saved = upstream_sched.state_dict()
        upstream = [_lr_for_update(tu, config, n, u, saved) for u in PROBES]
        with patched(titok_1d_hooks()):
            hooked = [_lr_for_update(tu, config, n, u, saved) for u in PROBES]
        assert hooked == upstream, (n, hooked, upstream)
        assert upstream[PROBES.index(78_000)] != _paper_lr(78_000)  # cosine, not the paper's shape
    # the schedule the host computes is its cosine: upstream's own function, evaluated directly
    import math

    lr = _lr_for_update(tu, config, 1, 500_000, saved)
    progress = (500_000 - 13_000) / (1_300_000 - 13_000)
    assert math.isclose(lr, 1e-5 + (1e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * progress)), rel_tol=1e-12)


def check_drift():
    """An edit in the replaced factory, or in code the schedule relies on (the host's warm-up rule, the
    loop that steps the scheduler), makes the hook refuse, naming the symbol; nothing is patched."""
    import utils.lr_schedulers as ls
    from _host_checks import assert_edit_refused
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import titok_1d_hooks

    tu = _train_utils()
    edits = [(tu, "create_lr_scheduler", "warmup_steps * accelerator.num_processes", "warmup_steps"),
             (ls, "get_cosine_schedule_with_warmup", "float(current_step) / float(max(1, num_warmup_steps))",
              "float(current_step + 1) / float(max(1, num_warmup_steps))"),
             (tu, "train_one_epoch", "lr_scheduler.step()", "pass")]
    for module, name, old, new in edits:
        assert_edit_refused(module, name, old, new, titok_1d_hooks(), "942a96fbdd873780179d1b78d5462911528bf8c8",
                            untouched=lambda: tu.create_lr_scheduler)
    with patched(titok_1d_hooks()) as hooked:  # the pinned code passes
        assert hooked == ["utils.train_utils.create_lr_scheduler"]


def check_run_entry_point_adds_the_scheduler():
    """``python -m vcq_plugin.patches.run SCRIPT`` (how a host's own training script is run with VCQ): while
    SCRIPT runs, the host's create_lr_scheduler knows vcq_warmup_hold_linear; afterwards it is upstream's."""
    import tempfile

    import vcq_plugin
    from vcq_plugin.patches import run

    script = Path(tempfile.mkdtemp()) / "script.py"
    script.write_text("import utils.train_utils as tu\n"
                      "RESULT.append(getattr(tu.create_lr_scheduler, '__vcq_hooked__', False))\n")
    result = []
    import builtins

    builtins.RESULT = result  # the script's only way out (runpy gives it a fresh namespace)
    old_argv = sys.argv
    try:
        run.main([str(script)])
    finally:
        sys.argv = old_argv
        del builtins.RESULT
        vcq_plugin.unregister()
    assert result == [True], result
    import utils.train_utils as tu

    assert not hasattr(tu.create_lr_scheduler, "__vcq_original__")


def _main(names):
    sys.path.insert(1, str(REPO))  # recipes/ (the config our recipe builds)
    from _host_checks import run_checks  # tests/ is sys.path[0] when this file runs as a script

    try:  # imported once, before the timed checks (registering + train_utils take seconds)
        _train_utils()
    except ModuleNotFoundError:
        pass  # the pytest side skips without the host's requirements; a check run by hand then says what is missing
    run_checks(globals(), names, ("modeling.titok", "utils.lr_schedulers"), extra="titok")


if __name__ == "__main__":
    _main(sys.argv[1:] or CHECKS)
