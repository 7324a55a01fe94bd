"""Appendix A's schedule in a 2-process accelerate launch (CPU, gloo) of 1d-tokenizer's own
``scripts/train_titok.py`` through ``python -m vcq_plugin.patches.run``: accelerate steps a prepared
scheduler once per process per update, and the hooked ``create_lr_scheduler`` counts in those units,
so the learning rates the host logs after each update are the paper's per update (an unscaled
schedule would run twice as fast). Reuses tests/test_distributed_titok_1d.py's tiny setup.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / "third_party" / "1d-tokenizer"

from conftest import host_missing_reason  # noqa: E402

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.slow,  # one 2-rank launch of the host's trainer: ~1-2 min on the shared 2-core machine
    pytest.mark.skipif(host_missing_reason("1d-tokenizer") is not None, reason=str(host_missing_reason("1d-tokenizer"))),
]


def test_two_rank_host_loop_follows_the_paper_schedule_per_update(tmp_path):
    from omegaconf import OmegaConf
    from test_distributed_titok_1d import _config, _launch, prepared_run
    from test_recipe_upstream_1d import MISSING, _write_shards
    from vcq_plugin.patches.lr_schedules import SCHEDULER_NAME, LinearLRSchedule

    if MISSING:
        pytest.skip(f"1d-tokenizer's training needs {MISSING} (pip install -e '.[titok]')")
    run, env = prepared_run(tmp_path)
    config = _config(run, _write_shards(tmp_path / "shards"), max_steps=4)
    cfg = OmegaConf.load(config)
    OmegaConf.update(cfg, "lr_scheduler.scheduler", SCHEDULER_NAME)
    OmegaConf.update(cfg, "lr_scheduler.params", {"warmup_steps": 1, "hold_steps": 1}, merge=True)
    OmegaConf.save(cfg, config)
    done = _launch(run, config, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    log = (run / "out" / "log0.txt").read_text()
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log  # 2 ranks
    assert f"lr schedule {SCHEDULER_NAME}" in log and "(x 2 scheduler steps per update)" in log
    peak, end = float(cfg.optimizer.params.learning_rate), float(cfg.lr_scheduler.params.end_lr)
    schedule = LinearLRSchedule(peak_lr=peak, end_lr=end, warmup_steps=1, hold_steps=1, total_steps=4)
    logged = re.findall(r"LR: (\d+\.\d+)", log)
    # train_one_epoch logs get_last_lr() after update k: the LR of update k + 1
    assert logged == [f"{schedule.lr_at(k):0.6f}" for k in (1, 2, 3, 4)], logged
