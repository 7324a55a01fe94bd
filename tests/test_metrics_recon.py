"""PSNR / LPIPS (lpips package, VGG trunk from a local file) / rFID, offline."""
import numpy as np
import pytest
import torch

from vcq_plugin.metrics import MissingWeightsError, build_lpips, compute_reconstruction_metrics, psnr, write_adm_npz
from vcq_plugin.metrics.weights import VGG16_FILENAME

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("download attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse, raising=False)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(1)
    orig = rng.integers(0, 256, (12, 24, 24, 3), dtype=np.uint8)
    noisy = [np.clip(orig + rng.normal(0, s, orig.shape), 0, 255).astype(np.uint8) for s in (8, 32)]
    return orig, noisy


def test_recon_metrics_random_weights(pair, tmp_path):
    orig, (small, large) = pair
    kw = dict(random_weights=True, device="cpu", feature_layer="64", cache_dir=tmp_path, batch_size=6)
    same = compute_reconstruction_metrics(orig, orig, **kw)
    # identical pairs have PSNR +inf: strict JSON gets null plus the reason
    assert same["psnr"] is None and same["psnr_identical_pairs"] == 12
    assert same["not_computed"]["psnr"].startswith("identical images: 12 of 12 pairs are identical")
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert abs(same["rfid"]) < 1e-6 and same["comparable"] is False
    a = compute_reconstruction_metrics(small, orig, **kw)
    b = compute_reconstruction_metrics(large, orig, **kw)
    assert a["psnr"] == pytest.approx(psnr(small, orig).item(), abs=1e-9)   # per-image mean, peak 255
    assert a["psnr"] > b["psnr"] and 0 < a["lpips"] < b["lpips"] and 0 < a["rfid"] < b["rfid"]
    ra = write_adm_npz(small, tmp_path / "rec.npz")
    ro = write_adm_npz(orig, tmp_path / "org.npz")
    c = compute_reconstruction_metrics(ra, ro, "psnr,lpips", random_weights=True, device="cpu", batch_size=5)
    assert c["psnr"] == pytest.approx(a["psnr"], abs=1e-9) and c["lpips"] == pytest.approx(a["lpips"], rel=1e-5)
    with pytest.raises(ValueError, match="pair up"):
        compute_reconstruction_metrics(orig[:5], orig, "psnr")


def test_lpips_trunk_loaded_from_local_file(pair, tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(3)
    trunk = make_layers(cfgs["D"])        # torchvision's vgg16().features
    feats = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(feats, hub / VGG16_FILENAME)
    model = build_lpips(hub / VGG16_FILENAME, device="cpu")
    for i, k in ((0, 1), (5, 2), (28, 5)):
        assert torch.equal(model.net.state_dict()[f"slice{k}.{i}.weight"], trunk[i].weight)
    # the same file is found through the torch hub cache, without an argument
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("VCQ_VGG16_WEIGHTS", raising=False)
    orig, (small, _) = pair
    r = compute_reconstruction_metrics(small[:4], orig[:4], "lpips", device="cpu")
    x, y = (torch.from_numpy(v[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1 for v in (small, orig))
    assert r["lpips"] == pytest.approx(model(x, y).mean().item(), rel=1e-5) and r["comparable"] is True


def test_missing_vgg_weights_error(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VCQ_VGG16_WEIGHTS", str(tmp_path / "none.pth"))
    orig, _ = pair
    with pytest.raises(MissingWeightsError, match=VGG16_FILENAME) as e:
        compute_reconstruction_metrics(orig, orig, "lpips", device="cpu")
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / VGG16_FILENAME) in str(e.value)


def test_cli_recon_eval(pair, tmp_path):
    import json

    from vcq_plugin.cli import main

    orig, (small, _) = pair
    rec, org = write_adm_npz(small, tmp_path / "rec.npz"), write_adm_npz(orig, tmp_path / "org.npz")
    out = tmp_path / "recon.json"
    assert main(["recon-eval", "--recon", str(rec), "--orig", str(org), "--metrics", "psnr", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["psnr"] == pytest.approx(psnr(small, orig).item(), abs=1e-9) and res["num_images"] == len(orig)
    assert main(["recon-eval", "--recon", str(rec), "--orig", str(org), "--metrics", "ssim"]) == 2


def test_partly_identical_pairs_give_null_psnr_and_the_mean_of_the_rest(pair):
    orig, (small, _) = pair
    mixed = small.copy()
    mixed[:3] = orig[:3]
    r = compute_reconstruction_metrics(mixed, orig, "psnr")
    rest = psnr(small[3:], orig[3:]).item()
    assert r["psnr"] is None and r["psnr_identical_pairs"] == 3 and r["num_images"] == 12
    assert "3 of 12 pairs are identical" in r["not_computed"]["psnr"]
    assert f"mean PSNR of the other 9: {rest:.4f} dB" in r["not_computed"]["psnr"]
    assert compute_reconstruction_metrics(small, orig, "psnr")["psnr_identical_pairs"] == 0


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VCQ_VGG16_WEIGHTS", str(tmp_path / "none.pth"))
    monkeypatch.setenv("VCQ_INCEPTION_WEIGHTS", str(tmp_path / "none-inception.pth"))


def test_cli_recon_eval_computes_psnr_without_network_weights(pair, tmp_path, no_weights, capsys):
    import json

    from vcq_plugin.cli import main
    from vcq_plugin.metrics.weights import INCEPTION_FILENAME

    orig, (small, _) = pair
    rec, org = write_adm_npz(small, tmp_path / "rec.npz"), write_adm_npz(orig, tmp_path / "org.npz")
    out = tmp_path / "recon.json"
    assert main(["recon-eval", "--recon", str(rec), "--orig", str(org), "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert res["psnr"] == pytest.approx(psnr(small, orig).item(), abs=1e-9)
    assert res["lpips"] is None and res["rfid"] is None
    assert res["not_computed"]["lpips"].startswith("not computed: LPIPS VGG16 backbone weights not found")
    assert VGG16_FILENAME in res["not_computed"]["lpips"] and INCEPTION_FILENAME in res["not_computed"]["rfid"]
    printed = capsys.readouterr().out
    assert "psnr=" in printed and "lpips: not computed" in printed
    # identical images: null + reason, never Infinity
    assert main(["recon-eval", "--recon", str(org), "--orig", str(org), "--metrics", "psnr", "--out", str(out)]) == 0
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert res["psnr"] is None and "identical images" in res["not_computed"]["psnr"]
    # nothing computable: exit 2 with the missing files named; --out a folder: exit 2 before any work
    assert main(["recon-eval", "--recon", str(rec), "--orig", str(org), "--metrics", "lpips,rfid"]) == 2
    err = capsys.readouterr().err
    assert VGG16_FILENAME in err and INCEPTION_FILENAME in err and "Traceback" not in err
    assert main(["recon-eval", "--recon", str(rec), "--orig", str(org), "--out", str(tmp_path)]) == 2
    assert "is an existing folder" in capsys.readouterr().err
