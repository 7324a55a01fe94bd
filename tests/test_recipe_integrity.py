"""Stage integrity: a later stage reads an earlier stage's output only after checking it against the
sha256 and size recorded when it was written; damage names the file and the stage to redo."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recipes.pipeline.dispatch import run_recipe
from recipes.pipeline.rundir import CheckpointError, IntegrityError
from test_recipe_demo import copy_run, tiny_config

TOKENIZERS_ONLY = ["~variants.constant", "ar.train_on=[]"]
WITH_AR = ["~variants.constant", "ar.train_on=[vcq]"]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A run folder whose tokenizer, tokens and cliff stages are done (no AR stage yet)."""
    run_dir = tmp_path_factory.mktemp("integrity") / "run"
    run_recipe(tiny_config(run_dir, *TOKENIZERS_ONLY))
    return run_dir


def test_truncated_tokens_npy_is_named_with_the_stage_to_redo(tokenized, tmp_path):
    run_dir = copy_run(tokenized, tmp_path)
    p = run_dir / "tokens" / "vcq" / "tokens.npy"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=r"tokens/vcq/tokens.npy is \d+ bytes but stage 'tokens/vcq' wrote \d+ "
                                             r"bytes \(truncated since\); redo that stage: restart_from=tokens/vcq"):
        run_recipe(tiny_config(run_dir, *WITH_AR))
    assert not (run_dir / "ar_vcq" / "checkpoint.pt").exists()  # AR training never started


def test_zeroed_rows_are_detected(tokenized, tmp_path):
    run_dir = copy_run(tokenized, tmp_path)
    p = run_dir / "tokens" / "vcq" / "tokens.npy"
    t = np.load(p)
    t[:10] = 0  # still valid tokens (0 < K(i)), same size: only the checksum can tell
    np.save(p, t)
    with pytest.raises(IntegrityError, match=r"tokens.npy changed since stage 'tokens/vcq' wrote it \(sha256"):
        run_recipe(tiny_config(run_dir, *WITH_AR))


def test_token_outside_its_codebook_prefix_is_named_before_ar_training(tokenized, tmp_path):
    """A producer that wrote a token >= K(i) (here forged, checksum updated to match) is caught before the
    AR model trains, naming the file, the row and the position."""
    from vcq_plugin._io import atomic_write_npy

    run_dir = copy_run(tokenized, tmp_path)
    p = run_dir / "tokens" / "vcq" / "tokens.npy"
    t = np.load(p)
    t[5, 0] = 7  # K(0) = 2
    w = atomic_write_npy(p, t)
    rec_path = run_dir / "tokens" / "vcq" / "stage.json"
    rec = json.loads(rec_path.read_text())
    rec["outputs"]["tokens.npy"] = {"sha256": w.sha256, "bytes": w.size}
    rec_path.write_text(json.dumps(rec))
    cliff = json.loads((run_dir / "cliff" / "stage.json").read_text())
    cliff["inputs"]["tokens/vcq/tokens.npy"] = w.sha256  # so that only the K(i) check can object
    (run_dir / "cliff" / "stage.json").write_text(json.dumps(cliff))
    with pytest.raises(IntegrityError, match=r"tokens/vcq/tokens.npy: token 7 at row 5, position 0 .*K\(0\) = 2.*"
                                             r"restart_from=tokens/vcq"):
        run_recipe(tiny_config(run_dir, *WITH_AR))
    assert not (run_dir / "ar_vcq" / "checkpoint.pt").exists()


def test_truncated_final_checkpoint_read_by_a_later_stage_is_named(tokenized, tmp_path):
    run_dir = copy_run(tokenized, tmp_path)
    p = run_dir / "tokenizer_vcq" / "checkpoint.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(IntegrityError, match=r"tokenizer_vcq/checkpoint.pt is \d+ bytes .*truncated.*"
                                             r"restart_from=tokenizer_vcq"):
        run_recipe(tiny_config(run_dir, *WITH_AR))  # samples_vcq decodes with the tokenizer


def test_missing_output_is_named(tokenized, tmp_path):
    run_dir = copy_run(tokenized, tmp_path)
    (run_dir / "tokens" / "vcq" / "labels.npy").unlink()
    with pytest.raises(IntegrityError, match=r"labels.npy is missing \(written by stage 'tokens/vcq'\)"):
        run_recipe(tiny_config(run_dir, *WITH_AR))


def test_unreadable_stage_record_is_named(tokenized, tmp_path):
    run_dir = copy_run(tokenized, tmp_path)
    rec = run_dir / "cliff" / "stage.json"
    rec.write_text(rec.read_text()[:50])
    with pytest.raises(IntegrityError, match=r"cliff/stage.json is not readable JSON .*restart_from=cliff"):
        run_recipe(tiny_config(run_dir, *WITH_AR))


def test_truncated_checkpoint_mid_stage_resumes_from_the_previous_one(tmp_path, monkeypatch, caplog):
    from recipes.pipeline import rundir

    run_dir = tmp_path / "run"
    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_vcq:5")  # checkpoints at steps 2 and 4, crash after 5
    with pytest.raises(rundir.InjectedFailure):
        run_recipe(tiny_config(run_dir, *TOKENIZERS_ONLY))
    monkeypatch.delenv(rundir.FAIL_ENV)
    newest = run_dir / "tokenizer_vcq" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        result = run_recipe(tiny_config(run_dir, *TOKENIZERS_ONLY))
    assert f"checkpoint {newest} is unreadable or truncated" in caplog.text
    assert result["tokenizers"]["vcq"]["resumed_from"] == 2 and result["tokenizers"]["vcq"]["steps"] == 6


def test_no_readable_checkpoint_mid_stage_is_an_error_naming_the_files(tmp_path, monkeypatch):
    from recipes.pipeline import rundir

    run_dir = tmp_path / "run"
    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_vcq:3")  # one checkpoint (step 2), crash after 3
    with pytest.raises(rundir.InjectedFailure):
        run_recipe(tiny_config(run_dir, *TOKENIZERS_ONLY))
    monkeypatch.delenv(rundir.FAIL_ENV)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        p = run_dir / "tokenizer_vcq" / name
        if p.exists():
            p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint: .*tokenizer_vcq/checkpoint.pt.*restart_from=tokenizer_vcq"):
        run_recipe(tiny_config(run_dir, *TOKENIZERS_ONLY))
