"""Run provenance: a rerun whose config would change a finished stage stops before any work, naming the
stage and the changed keys, and says the two ways on; restart_from redoes a stage and what follows it;
config.yaml is never replaced; the summary shows the config its stages were made with."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recipes.pipeline.config import ConfigError
from recipes.pipeline.dispatch import run_recipe
from recipes.pipeline.rundir import ProvenanceError
from test_recipe_demo import REPO, TINY, copy_run, tiny_config

ONE = ["~variants.constant", "ar.train_on=[vcq]"]  # one tokenizer, one AR model: the quickest full chain


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("prov") / "run"
    run_recipe(tiny_config(run_dir, *ONE))
    return run_dir


def _mtimes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_changed_config_stops_naming_stage_keys_and_ways_on(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    before = _mtimes(run_dir)
    with pytest.raises(ProvenanceError) as e:
        run_recipe(tiny_config(run_dir, *ONE, "tokenizer.steps=7", "tokenizer.lr=0.001"))
    msg = str(e.value)
    assert "stage 'tokenizer_vcq'" in msg and "tokenizer.steps: 6 -> 7" in msg and "tokenizer.lr: 0.003 -> 0.001" in msg
    assert "stage 'tokens/vcq'" in msg  # every affected stage is listed
    assert f"run_dir={run_dir}_2" in msg and "restart_from=tokenizer_vcq" in msg
    assert _mtimes(run_dir) == before  # nothing was run, nothing rewritten (config.yaml included)


def test_changed_config_through_the_entry_script_exits_fast(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(REPO / "recipes" / "run_titok_vcq.py"), *TINY, *ONE,
                        f"run_dir={run_dir}", "ar.lr=0.01"], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "stage 'ar_vcq'" in p.stderr and "ar.lr: 0.002 -> 0.01" in p.stderr and "restart_from=ar_vcq" in p.stderr


def test_restart_from_redoes_that_stage_and_everything_after(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    before = _mtimes(run_dir)
    first_config = (run_dir / "config.yaml").read_bytes()
    result = run_recipe(tiny_config(run_dir, *ONE, "ar.steps=5", "restart_from=ar_vcq"))
    after = _mtimes(run_dir)
    redone = {k for k in before if k in after and after[k] != before[k]}
    assert {"ar_vcq/checkpoint.pt", "ar_vcq/stage.json", "samples_vcq/grid.png", "samples_vcq/stage.json"} <= redone
    assert not [k for k in redone if k.startswith(("tokenizer_vcq/", "tokens/", "cliff/"))]
    assert result["ar"]["vcq"]["steps"] == 5
    assert json.loads((run_dir / "ar_vcq" / "stage.json").read_text())["invocation"] == 2
    assert json.loads((run_dir / "tokenizer_vcq" / "stage.json").read_text())["invocation"] == 1
    # config.yaml is the config the folder was started with; each command has its own history entry
    assert (run_dir / "config.yaml").read_bytes() == first_config
    second = yaml.safe_load((run_dir / "config_history" / "002.yaml").read_text())
    assert "ar.steps=5" in second["overrides"] and second["config"]["ar"]["steps"] == 5
    # the summary shows the values the stages were made with, and which command made which stage
    text = (run_dir / "summary.md").read_text()
    assert "ar.steps: 5" in text and "tokenizer.steps: 6" in text
    assert "| `ar_vcq` | done | #2" in text and "| `tokenizer_vcq` | done | #1" in text

    # the same command again is a resume of command #2: nothing is redone
    again = _mtimes(run_dir)
    run_recipe(tiny_config(run_dir, *ONE, "ar.steps=5", "restart_from=ar_vcq"))
    assert {k: v for k, v in _mtimes(run_dir).items() if k.endswith(".pt")} == \
        {k: v for k, v in again.items() if k.endswith(".pt")}
    # and without restart_from the finished stages stand (their recorded values match)
    run_recipe(tiny_config(run_dir, *ONE, "ar.steps=5"))
    with pytest.raises(ProvenanceError, match="ar.steps: 5 -> 4"):
        run_recipe(tiny_config(run_dir, *ONE))


def test_restart_from_names_unknown_stage(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    with pytest.raises(ConfigError, match=r"restart_from='ar_vq' is not a stage of this run \(did you mean 'ar_vcq'\?\)"):
        run_recipe(tiny_config(run_dir, *ONE, "restart_from=ar_vq"))


def test_changed_input_of_a_finished_stage_is_refused(finished, tmp_path):
    """A stage whose producer was remade (its outputs' sha256 changed) no longer matches what it was made from."""
    run_dir = copy_run(finished, tmp_path)
    rec_path = run_dir / "tokens" / "vcq" / "stage.json"
    rec = json.loads(rec_path.read_text())
    rec["outputs"]["tokens.npy"]["sha256"] = "0" * 64  # as if tokens/vcq had been remade by other means
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(ProvenanceError, match=r"stage 'cliff'.*\n.*input tokens/vcq/tokens.npy"):
        run_recipe(tiny_config(run_dir, *ONE))


def test_adding_a_variant_keeps_finished_stages_but_the_cliff_needs_a_restart(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    with pytest.raises(ProvenanceError, match=r"stage 'cliff'.*\n.*variants: \['vcq'\] -> \['vcq', 'constant'\]"):
        run_recipe(tiny_config(run_dir, "ar.train_on=[vcq]"))
    before = (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns
    run_recipe(tiny_config(run_dir, "ar.train_on=[vcq]", "restart_from=cliff"))
    assert (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns == before
    assert (run_dir / "tokens" / "constant" / "tokens.npy").is_file()


def test_operational_keys_are_not_provenance(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    run_recipe(tiny_config(run_dir, *ONE, "parallel=auto", "threads=2"))  # no ProvenanceError


def test_a_change_shared_by_two_chains_names_both_restart_points(finished, tmp_path):
    run_dir = tmp_path / "run2"
    run_recipe(tiny_config(run_dir, "ar.train_on=[vcq,constant]"))
    with pytest.raises(ProvenanceError, match=r"restart_from=ar_vcq,ar_constant"):
        run_recipe(tiny_config(run_dir, "ar.steps=5"))
    before = (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns
    result = run_recipe(tiny_config(run_dir, "ar.steps=5", "restart_from=ar_*"))
    assert result["ar"]["vcq"]["steps"] == result["ar"]["constant"]["steps"] == 5
    assert (run_dir / "tokenizer_vcq" / "checkpoint.pt").stat().st_mtime_ns == before
