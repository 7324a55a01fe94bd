"""gFID / IS / precision / recall / KID on torch-fidelity with a random-weight Inception (offline)."""
import json
import socket

import numpy as np
import pytest
import torch

import vcq_plugin.metrics.fidelity as fid_mod
from vcq_plugin.metrics import MissingWeightsError, compute_generation_metrics, write_adm_npz
from vcq_plugin.metrics.weights import INCEPTION_FILENAME

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FAST = dict(random_weights=True, device="cpu", feature_layer="64", batch_size=64)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here runs with downloads and sockets disabled."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", refuse)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (64, 1, 1, 3))
    return np.clip(base + rng.normal(0, 30, (64, 32, 32, 3)), 0, 255).astype(np.uint8)


def test_identical_sets(images, tmp_path):
    with pytest.warns(UserWarning, match="NOT comparable"):
        r = compute_generation_metrics(images, images, "fid,prc,kid", cache_dir=tmp_path, kid_subsets=5, **FAST)
    assert abs(r["fid"]) < 1e-6
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    shifted = np.clip(images.astype(np.int16) + 48, 0, 255).astype(np.uint8)
    r_shift = compute_generation_metrics(shifted, images, "kid", cache_dir=tmp_path, kid_subsets=5, **FAST)
    assert abs(r["kid_mean"]) < 0.1 * r_shift["kid_mean"]
    assert r["comparable"] is False and r["num_samples"] == r["num_reference"] == 64
    assert any("50,000" in w for w in r["warnings"])


def test_fid_grows_with_shift_and_cache_is_reused(images, tmp_path, monkeypatch):
    ref = write_adm_npz(images, tmp_path / "ref.npz")
    calls = []
    real_extract = fid_mod.extract_features
    monkeypatch.setattr(fid_mod, "extract_features", lambda s, *a, **k: calls.append(s.kind) or real_extract(s, *a, **k))
    cache = tmp_path / "cache"
    fids, caches = [], []
    for shift in (0, 12, 24, 48):
        shifted = np.clip(images.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        r = compute_generation_metrics(shifted, ref, "fid,prc", cache_dir=cache, **FAST)
        fids.append(r["fid"])
        caches.append(r["reference_cache"])
        assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        if shift == 0:
            assert r["precision"] == r["recall"] == 1.0   # npz round trip: reference == samples
            files = list(cache.iterdir())
            mtime = files[0].stat().st_mtime_ns
    assert abs(fids[0]) < 1e-6
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert caches == ["miss", "hit", "hit", "hit"]
    assert calls == ["npz", "array", "array", "array", "array"]   # reference extracted once
    assert list(cache.iterdir()) == files and files[0].stat().st_mtime_ns == mtime
    # a rewritten reference file is a different cache entry
    write_adm_npz(images[:40], ref)
    r = compute_generation_metrics(images, ref, "fid", cache_dir=cache, **FAST)
    assert r["reference_cache"] == "miss" and r["num_reference"] == 40 and len(list(cache.iterdir())) == 2


def test_inception_score_of_constant_set_is_one():
    const = np.full((10, 32, 32, 3), 90, np.uint8)
    r = compute_generation_metrics(const, None, "is", isc_splits=2, random_weights=True, device="cpu")
    assert r["is_mean"] == pytest.approx(1.0, abs=1e-6) and r["is_std"] == pytest.approx(0.0, abs=1e-6)
    assert r["comparable"] is False and "fid" not in r


def test_bad_arguments(images):
    with pytest.raises(ValueError, match="Did you mean 'fid'"):
        compute_generation_metrics(images, images, "fdi", **FAST)
    with pytest.raises(ValueError, match="reference is required"):
        compute_generation_metrics(images, None, "fid", **FAST)
    with pytest.raises(ValueError, match="real Inception"):
        compute_generation_metrics(images, images, "fid", reference_stats="npz", **FAST)


def test_mu_sigma_only_reference_needs_images_when_features_differ(images, tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match="no 'arr_0'"):   # random weights: stored stats are not usable
        compute_generation_metrics(images, tmp_path / "stats.npz", "fid", cache_dir=False, **FAST)


def test_missing_inception_weights_error(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VCQ_INCEPTION_WEIGHTS", str(tmp_path / "none.pth"))
    with pytest.raises(MissingWeightsError, match=INCEPTION_FILENAME):
        compute_generation_metrics(images, images, "fid", device="cpu")


@pytest.fixture
def fake_real_weights(tmp_path, monkeypatch):
    """A weights file in an empty torch hub cache (random values, real file format)."""
    fe_random, _ = fid_mod.build_extractor(["64"], random_weights=True, device="cpu")
    state = {k: v.clone() for k, v in fe_random.state_dict().items()}
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(state, hub / INCEPTION_FILENAME)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("VCQ_INCEPTION_WEIGHTS", raising=False)
    return state


def test_real_weights_path_loads_local_file(fake_real_weights):
    """The non-random branch loads torch-fidelity's extractor from the hub-cache file, offline."""
    fe, ident = fid_mod.build_extractor(["64"], device="cpu")
    assert ident["name"] == "inception-v3-compat" and ident["weights"].endswith(INCEPTION_FILENAME)
    assert type(fe).__name__ == "FeatureExtractorInceptionV3"
    for k, v in fe.state_dict().items():
        assert torch.equal(v, fake_real_weights[k]), k


def test_auto_uses_stored_adm_statistics(fake_real_weights, images, tmp_path, monkeypatch):
    """ADM reference with mu/sigma + real weights: FID uses the stored statistics, arr_0 is not read."""
    rng = np.random.default_rng(2)
    mu, a = rng.normal(size=2048), rng.normal(size=(2048, 8))
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=images, mu=mu, sigma=a @ a.T)
    feats = torch.randn(len(images), 2048)
    seen, used = [], {}
    monkeypatch.setattr(fid_mod, "extract_features", lambda s, fe, bs: seen.append(s.kind) or {"2048": feats})
    monkeypatch.setattr(fid_mod, "fid_statistics_to_metric",
                        lambda s1, s2, verbose: used.update(s1=s1, s2=s2) or {"frechet_inception_distance": 7.0})
    r = compute_generation_metrics(images, tmp_path / "VIRTUAL_ref.npz", "fid", device="cpu", cache_dir=tmp_path / "c")
    assert r["fid"] == 7.0 and r["reference_stats"] == "npz" and r["comparable"] is True
    assert seen == ["array"] and "num_reference" not in r            # reference images untouched
    assert np.array_equal(used["s2"]["mu"], mu) and np.array_equal(used["s2"]["sigma"], a @ a.T)
    assert np.allclose(used["s1"]["mu"], feats.double().mean(0).numpy())
    r = compute_generation_metrics(images, tmp_path / "VIRTUAL_ref.npz", "fid", device="cpu",
                                   cache_dir=tmp_path / "c", reference_stats="compute")
    assert r["reference_stats"] == "computed" and seen == ["array", "npz", "array"]


def test_cli_eval_writes_json(images, tmp_path):
    from vcq_plugin.cli import main

    s = write_adm_npz(images[:32], tmp_path / "s.npz")
    ref = write_adm_npz(images, tmp_path / "r.npz")
    out = tmp_path / "res" / "eval.json"
    rc = main(["eval", "--samples", str(s), "--ref", str(ref), "--metrics", "fid,prc", "--out", str(out),
               "--random-weights", "--feature-layer", "64", "--device", "cpu", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["comparable"] is False and res["fid"] > 0 and 0 <= res["precision"] <= 1
    assert res["num_samples"] == 32 and res["reference_cache"] == "miss"


def test_too_few_images_say_so_before_any_network(images, monkeypatch):
    monkeypatch.setattr(fid_mod, "build_extractor", lambda *a, **k: pytest.fail("network built"))
    with pytest.raises(ValueError, match=r"samples \(an in-memory array\): only 1 image; FID needs at least 2"):
        compute_generation_metrics(images[:1], images, "fid", **FAST)
    with pytest.raises(ValueError, match=r"reference .*only 1 image; FID needs at least 2"):
        compute_generation_metrics(images, images[:1], "fid", **FAST)
    with pytest.raises(ValueError, match=r"only 3 images; precision/recall needs at least 4 \(the k=3-th"):
        compute_generation_metrics(images[:3], images, "prc", **FAST)
    with pytest.raises(ValueError, match=r"only 1 image; KID needs at least 2"):
        compute_generation_metrics(images[:1], images, "kid", **FAST)


def test_cli_eval_bad_files_and_counts_exit_2(images, tmp_path, capsys):
    from vcq_plugin.cli import main

    s = write_adm_npz(images[:8], tmp_path / "s.npz")
    one = write_adm_npz(images[:1], tmp_path / "one.npz")
    ref = write_adm_npz(images, tmp_path / "r.npz")
    raw = s.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) - 100])
    np.savez(tmp_path / "other.npz", tokens=np.zeros((4, 16), np.int64))
    common = ["--metrics", "fid", "--random-weights", "--feature-layer", "64", "--device", "cpu", "--no-cache"]
    cases = [
        (["--samples", str(tmp_path / "trunc.npz"), "--ref", str(ref)], "trunc.npz' is not a readable .npz archive"),
        (["--samples", str(s), "--ref", str(tmp_path / "trunc.npz")], "trunc.npz' is not a readable .npz archive"),
        (["--samples", str(tmp_path / "other.npz"), "--ref", str(ref)],
         "has no 'arr_0' image array, so it is not an ADM sample or reference batch (arrays in it: ['tokens'])"),
        (["--samples", str(one), "--ref", str(ref)], "only 1 image; FID needs at least 2"),
        (["--samples", str(s), "--ref", str(ref), "--out", str(tmp_path)], "is an existing folder"),
    ]
    for args, msg in cases:
        assert main(["eval", *args, *common]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("vcq eval: error: ") and msg in err and "Traceback" not in err, err


def test_non_finite_metric_becomes_null_with_reason(images, monkeypatch):
    monkeypatch.setattr(fid_mod, "fid_statistics_to_metric", lambda *a, **k: {"frechet_inception_distance": np.nan})
    r = compute_generation_metrics(images, images, "fid", cache_dir=False, **FAST)
    assert r["fid"] is None and "nan" in r["not_computed"]["fid"]
    json.dumps(r, allow_nan=False)
