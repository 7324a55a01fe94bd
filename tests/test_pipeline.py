"""Recipe building blocks: the one atomic writer (vcq_plugin._io), checkpoints that survive damage,
the resumable training loop, demo data, the AR model, codebook restarts."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from vcq_plugin import _io
from recipes.pipeline import rundir
from recipes.pipeline.ar import ClassConditionalAR
from recipes.pipeline.data import batch_indices, holdout_split, make_digits, make_shapes
from recipes.pipeline.train import train_loop
from vcq_plugin.schedule import CodebookSchedule


# ---------------------------------------------------------------------- atomic writes (vcq_plugin._io)
def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    p = tmp_path / "x.json"
    _io.atomic_write_json(p, {"a": 1})

    def boom(f):
        f.write(b"{partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        _io.atomic_write(p, boom)
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]  # no temp file left behind
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~_io._UMASK  # not mkstemp's 0600


def test_writers_return_the_sha256_of_what_they_wrote(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    w = _io.atomic_write_npy(tmp_path / "a.npy", a)
    b = np.load(w)
    assert b.dtype == np.int32 and np.array_equal(a, b)
    assert w.sha256 == _io.sha256_file(tmp_path / "a.npy") and w.size == (tmp_path / "a.npy").stat().st_size
    w = _io.atomic_write_torch(tmp_path / "t.pt", {"w": torch.ones(2)})
    assert torch.equal(torch.load(w)["w"], torch.ones(2)) and w.sha256 == _io.sha256_file(w)
    w = _io.atomic_write_text(tmp_path / "t.txt", "héllo")
    assert f"{w}" == str(tmp_path / "t.txt") and w.size == len("héllo".encode())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan")])
def test_json_is_strict_and_names_the_key(tmp_path, bad):
    with pytest.raises(ValueError, match=r"scores\[1\] = (nan|inf)"):
        _io.atomic_write_json(tmp_path / "r.json", {"scores": [1.0, bad]})
    assert not (tmp_path / "r.json").exists()
    _io.atomic_write_json(tmp_path / "r.json", {"fid": None, "reason": "too few samples", "n": np.int64(3)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"fid": None, "reason": "too few samples", "n": 3}


def test_maybe_fail_only_on_its_stage_and_step(monkeypatch):
    monkeypatch.setenv(rundir.FAIL_ENV, "tokenizer_vcq:3")
    rundir.maybe_fail("tokenizer_vcq", 2)
    rundir.maybe_fail("ar_vcq", 3)
    with pytest.raises(rundir.InjectedFailure):
        rundir.maybe_fail("tokenizer_vcq", 3)


# ---------------------------------------------------------------------- checkpoints
def test_checkpoints_keep_newest_and_previous(tmp_path):
    ck = rundir.Checkpoints(tmp_path / "checkpoint.pt")
    assert ck.load() is None
    for step in (1, 2, 3):
        ck.save({"step": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
    state, path = ck.load()
    assert state["step"] == 3 and path == ck.path


def test_truncated_checkpoint_warns_and_resumes_from_previous(tmp_path, caplog):
    ck = rundir.Checkpoints(tmp_path / "checkpoint.pt")
    ck.save({"step": 2, "w": torch.arange(1000)})
    ck.save({"step": 4, "w": torch.arange(1000)})
    data = ck.path.read_bytes()
    ck.path.write_bytes(data[: len(data) // 2])  # killed while copying, disk full, ...
    with caplog.at_level("WARNING"):
        state, path = ck.load()
    assert state["step"] == 2 and path == ck.prev
    assert str(ck.path) in caplog.text and "truncated" in caplog.text
    assert (tmp_path / "checkpoint.pt.corrupt").exists()  # kept aside, never rotated over the good one
    ck.save({"step": 6})
    assert ck.load()[0]["step"] == 6 and torch.load(ck.prev)["step"] == 2


def test_no_readable_checkpoint_is_an_error_naming_the_files(tmp_path):
    ck = rundir.Checkpoints(tmp_path / "checkpoint.pt")
    ck.path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(rundir.CheckpointError, match="checkpoint.pt"):
        ck.load()


def test_check_tokens_names_file_row_and_position(tmp_path):
    sizes = [2, 4, 8]
    ok = np.array([[1, 3, 7], [0, 0, 0]])
    rundir.check_tokens(ok, sizes, tmp_path / "tokens.npy", "tokens/vcq")
    bad = ok.copy()
    bad[1, 1] = 4  # K(1) = 4
    with pytest.raises(rundir.IntegrityError, match=r"tokens.npy: token 4 at row 1, position 1 .*K\(1\) = 4.*restart_from=tokens/vcq"):
        rundir.check_tokens(bad, sizes, tmp_path / "tokens.npy", "tokens/vcq")
    with pytest.raises(rundir.IntegrityError, match="shape"):
        rundir.check_tokens(ok[:, :2], sizes, tmp_path / "tokens.npy", "tokens/vcq")


def test_truncated_npy_is_named(tmp_path):
    p = tmp_path / "tokens.npy"
    _io.atomic_write_npy(p, np.zeros((100, 16), np.int32))
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(rundir.IntegrityError, match=r"tokens.npy is not a readable .npy.*restart_from=tokens/vcq"):
        rundir.load_npy(p, "tokens/vcq")


# ---------------------------------------------------------------------- resumable loop
def _tiny_training(tmp_path, name, steps=10):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)

    def loss_fn(step):
        idx = torch.from_numpy(batch_indices(64, 16, 0, step))
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    def run():
        return train_loop(name=name, model=model, optimizer=opt, loss_fn=loss_fn, total_steps=steps,
                          ckpt_path=tmp_path / f"{name}.pt", ckpt_every=3, lr=1e-2, warmup_steps=2, seed=0)

    return model, run


def test_train_loop_resume_is_identical_to_uninterrupted(tmp_path, monkeypatch):
    ref_model, run_ref = _tiny_training(tmp_path, "ref")
    ref = run_ref()
    assert ref["step"] == 10 and ref["resumed_from"] == 0

    monkeypatch.setenv(rundir.FAIL_ENV, "crash:7")
    _, run_crash = _tiny_training(tmp_path, "crash")
    with pytest.raises(rundir.InjectedFailure):
        run_crash()
    assert torch.load(tmp_path / "crash.pt", weights_only=False)["step"] == 6  # last checkpoint before the crash
    assert torch.load(tmp_path / "crash.prev.pt", weights_only=False)["step"] == 3  # and the one before it
    monkeypatch.delenv(rundir.FAIL_ENV)

    model, run_again = _tiny_training(tmp_path, "crash")  # fresh process-like start: new model, same command
    res = run_again()
    assert res["resumed_from"] == 6 and res["step"] == 10
    assert len(res["losses"]) == 4
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    assert run_again()["losses"] == []  # a finished stage trains nothing more


# ---------------------------------------------------------------------- data
def test_shapes_deterministic_balanced_and_in_range():
    x1, y1 = make_shapes(64, 16, num_classes=8, seed=3)
    x2, y2 = make_shapes(64, 16, num_classes=8, seed=3)
    assert x1.shape == (64, 3, 16, 16) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.min() >= 0 and x1.max() <= 1
    assert torch.bincount(y1, minlength=8).tolist() == [8] * 8
    assert len({im.numpy().tobytes() for im in x1}) == 64  # every image distinct
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes(8, 16, num_classes=99)


def test_digits_resized_with_labels():
    x, y = make_digits(200, image_size=16, seed=0)
    assert x.shape == (200, 3, 16, 16) and y.shape == (200,)
    assert set(y.tolist()) <= set(range(10))


def test_holdout_split_partitions():
    tr, he = holdout_split(101, 0.1, seed=0)
    assert len(he) == 10 and len(tr) == 91
    assert sorted(np.concatenate([tr, he]).tolist()) == list(range(101))
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_split(10, 1.5)


# ---------------------------------------------------------------------- AR model
@pytest.fixture(scope="module")
def ar_model():
    torch.manual_seed(0)
    return ClassConditionalAR(k_max=32, num_classes=4, seq_len=8, dim=32, depth=2, heads=2, dropout=0.1,
                              emb_dropout=0.1, class_dropout=0.1).eval()


@pytest.mark.parametrize("scale", [0.0, 3.0])
def test_kv_cache_sampling_equals_full_recompute(ar_model, scale):
    from vcq_plugin.sampler import AwareCFGSampler

    sched = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=32, seq_len=8)
    sampler = AwareCFGSampler(sched, guidance_scale=scale, guidance_power=1.0)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    a = ar_model.generate(y, sampler, generator=torch.Generator().manual_seed(1), use_cache=True)
    b = ar_model.generate(y, sampler, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(a, b)
    assert a.shape == (6, 8) and a.dtype == torch.int64
    assert bool((a < sched.sizes[None]).all())


def test_teacher_forced_logits_match_incremental(ar_model):
    t = torch.randint(0, 32, (3, 8))
    y = torch.tensor([0, 2, 3])
    full = ar_model(t, y)  # (B, L, V)
    x = torch.cat([ar_model.class_tokens(y)[:, None], t[:, :-1]], 1)
    for j in range(8):
        step = ar_model.net(x[:, : j + 1])[:, -1]
        assert torch.allclose(full[:, j], step, atol=1e-5)


def test_class_tokens_and_null(ar_model):
    ids = ar_model.class_tokens(torch.tensor([0, 3, -1]))
    assert ids.tolist() == [32, 35, 36] and ar_model.null_class == 36 and ar_model.vocab_size == 37
    with pytest.raises(ValueError, match="labels"):
        ar_model.class_tokens(torch.tensor([4]))


def test_vocab_too_small_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        ClassConditionalAR(k_max=32, num_classes=4, seq_len=8, dim=32, depth=1, heads=2, dropout=0.0,
                           emb_dropout=0.0, class_dropout=0.1, vocab_size=36)


def test_nll_is_consistent(ar_model):
    t = torch.randint(0, 32, (5, 8))
    y = torch.zeros(5, dtype=torch.long)
    r = ar_model.nll(t, y)
    assert r["bits_per_token"] == pytest.approx(r["nats_per_token"] / np.log(2))
    assert r["bits_per_image"] == pytest.approx(sum(r["bits_per_position"]))
    logits = ar_model(t, y)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1)).detach()
    assert r["nats_per_token"] == pytest.approx(float(ce), rel=1e-5)


# ---------------------------------------------------------------------- codebook restarts
def test_codebook_restarts_move_dead_codes_to_allowed_encoder_outputs():
    from recipes.pipeline import tokenizer
    from vcq_plugin.quantizer import VariableCodebookQuantizer
    from vcq_plugin.restarts import CodebookRestarts

    assert tokenizer.CodebookRestarts is CodebookRestarts  # one implementation: the library's
    torch.manual_seed(0)
    sched = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=16, seq_len=4)
    vq = VariableCodebookQuantizer(schedule=sched, dim=4).train()
    restarts = CodebookRestarts(vq, every=2)
    z = torch.randn(3, 4, 4)
    vq(z)
    never_used = ~torch.stack([torch.nn.functional.pad(vq.used_codes(i, sync=False), (0, 16 - int(sched.sizes[i])))
                               for i in range(4)]).any(0)
    before = vq.embedding.weight.detach().clone()
    assert restarts(0) == 0 and torch.equal(vq.embedding.weight, before)  # not a restart step
    n = restarts(1)
    moved = restarts.last.codes
    assert n == moved.numel() > 0
    assert set(never_used.nonzero()[:, 0].tolist()) <= set(moved.tolist())  # every code no position used moves
    w = vq.embedding.weight.detach()
    kept = [k for k in range(16) if k not in moved.tolist()]
    assert torch.equal(w[kept], before[kept])  # the others are untouched
    for k in moved.tolist():
        hits = [(b, i) for b in range(3) for i in range(4) if torch.equal(w[k], z[b, i])]
        assert hits and all(int(sched.sizes[i]) > k for _, i in hits)  # only from positions that may use k
    assert int(vq.codes_used(sync=False).sum()) == 0  # statistics start again
    with pytest.raises(ValueError):
        CodebookRestarts(vq, every=0)


def test_codebook_restarts_resume_at_any_checkpoint_step(tmp_path, monkeypatch):
    """Restarts every 3 steps, checkpoints every 2: a run killed after step 5 (checkpoint at 4, between two
    restarts) resumes with the usage statistics it had and ends identical to an uninterrupted run. (The
    recipe used to demand ckpt_every % restart_dead_codes_every == 0 instead.)"""
    from vcq_plugin.quantizer import VariableCodebookQuantizer
    from vcq_plugin.restarts import CodebookRestarts

    sched = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=4)
    x = torch.randn(64, 4, 4)

    def make(name):
        torch.manual_seed(0)
        vq = VariableCodebookQuantizer(schedule=sched, dim=4).train()
        proj = torch.nn.Linear(4, 4)
        model = torch.nn.ModuleDict({"vq": vq, "proj": proj})
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        restarts = CodebookRestarts(vq, every=3)

        def loss_fn(step):
            idx = torch.from_numpy(batch_indices(64, 2, 0, step))  # few lookups: each step's usage matters
            z = proj(x[idx])
            z_q, info = vq(z)
            return ((z_q - x[idx]) ** 2).mean() + info["loss"]

        return model, lambda: train_loop(name=name, model=model, optimizer=opt, loss_fn=loss_fn, total_steps=9,
                                         ckpt_path=tmp_path / f"{name}.pt", ckpt_every=2, lr=0.1, seed=0,
                                         after_step=restarts)

    ref_model, run_ref = make("ref")
    run_ref()
    monkeypatch.setenv(rundir.FAIL_ENV, "crash:5")
    _, run_crash = make("crash")
    with pytest.raises(rundir.InjectedFailure):
        run_crash()
    monkeypatch.delenv(rundir.FAIL_ENV)
    model, run_again = make("crash")
    assert run_again()["resumed_from"] == 4
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
