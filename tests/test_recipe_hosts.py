"""Full-scale recipe paths: host selection never silent, GPU stages refuse without CUDA, configs."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from recipes.pipeline.config import ConfigError, load_config, titok1d_schedule
from recipes.hosts.llamagen import HostMissingError, train_c2i_args

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
LLAMAGEN = REPO / "third_party" / "LlamaGen"


def _shards(tmp_path):
    d = tmp_path / "shards"
    d.mkdir(exist_ok=True)
    return [f"dataset.params.train_shards_path_or_url={d}/train-{{0000..0001}}.tar",
            f"dataset.params.eval_shards_path_or_url={d}/val-{{0000..0001}}.tar"]


@pytest.mark.parametrize("name, kind, k_max, dec", [
    ("titok_vcq_b.yaml", "cosine", 16384, "base"),
    ("titok_vcq_l.yaml", "cosine", 11264, "large"),
    ("titok_constant_b.yaml", "constant", 16384, "base"),
])
def test_full_scale_tokenizer_configs_match_the_paper(tmp_path, name, kind, k_max, dec):
    cfg = load_config(CONFIGS / name, _shards(tmp_path), check_paths=False).cfg
    assert cfg.host == "1d-tokenizer"
    vq = cfg.model.vq_model
    assert vq.vit_enc_model_size == "base" and vq.vit_dec_model_size == dec
    sched = titok1d_schedule(cfg)
    assert sched.kind == kind and sched.k_max == k_max and sched.seq_len == 256
    expected_mean = {16384: 5963.7, 11264: 4100.4}[k_max] if kind == "cosine" else 16384
    assert sched.mean_size == pytest.approx(expected_mean, abs=0.05)
    assert cfg.training.max_train_steps == 1_300_000 and cfg.lr_scheduler.params.warmup_steps == 13_000


def test_missing_1d_tokenizer_host_is_refused_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("VCQ_1D_TOKENIZER_ROOT", str(tmp_path / "empty"))
    with pytest.raises(HostMissingError, match="git submodule update --init third_party/1d-tokenizer"):
        load_config(CONFIGS / "titok_vcq_b.yaml", _shards(tmp_path))


def test_full_scale_checks_the_submodule_before_the_data(tmp_path, monkeypatch):
    """Missing submodule AND missing shards: the submodule is named first (it is needed first)."""
    monkeypatch.setenv("VCQ_1D_TOKENIZER_ROOT", str(tmp_path / "empty"))
    with pytest.raises(HostMissingError, match="third_party/1d-tokenizer"):
        load_config(CONFIGS / "titok_vcq_b.yaml", [f"dataset.params.train_shards_path_or_url={tmp_path}/no/x.tar"])


def test_1d_tokenizer_needs_local_proxy_weights(tmp_path):
    if not (REPO / "third_party" / "1d-tokenizer" / "modeling" / "titok.py").is_file():
        pytest.skip("third_party/1d-tokenizer is not checked out (git submodule update --init third_party/1d-tokenizer)")
    with pytest.raises(ConfigError, match="downloads nothing"):
        load_config(CONFIGS / "titok_vcq_b.yaml",
                    _shards(tmp_path) + [f"model.vq_model.pretrained_tokenizer_weight={tmp_path / 'nope.bin'}"])


@pytest.mark.parametrize("override, match", [
    ("model.vq_model.quantizer=vcq_cosinus", "unknown schedule name"),
    ("model.vq_model.vcq.seq_len=128", r"unknown key 'model.vq_model.vcq.seq_len'"),
    ("model.vq_model.vcq.kmin=2", r"unknown key 'model.vq_model.vcq.kmin': did you mean 'model.vq_model.vcq.k_min'"),
    ("model.vq_model.codebook_size=many", r"model.vq_model.codebook_size: .*expected an integer"),
    ("training.max_train_steps=0", r"training.max_train_steps=0: must be >= 1"),
    ("training.per_gpu_batch_size=0", r"training.per_gpu_batch_size=0: must be >= 1"),
    ("experiment.save_every=0", r"experiment.save_every=0: must be >= 1"),
    ("recipe.evaluat=false", r"unknown key 'recipe.evaluat': did you mean 'recipe.evaluate'"),
    ("ar.vocab_size=8192", r"unknown key 'ar'"),
])
def test_1d_tokenizer_bad_config(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIGS / "titok_vcq_b.yaml", _shards(tmp_path) + [override], check_paths=False)


def test_1d_tokenizer_host_keys_pass_through_typed_keys_checked(tmp_path):
    cfg = load_config(CONFIGS / "titok_vcq_b.yaml", _shards(tmp_path) + ["model.vq_model.token_size=16",
                                                                         "losses.new_host_loss=1.0"],
                      check_paths=False).cfg
    assert cfg.model.vq_model.token_size == 16 and cfg.losses.new_host_loss == 1.0


def test_1d_tokenizer_missing_shards_folder(tmp_path):
    if not (REPO / "third_party" / "1d-tokenizer" / "modeling" / "titok.py").is_file():
        pytest.skip("third_party/1d-tokenizer is not checked out: the submodule is checked before the shards")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(CONFIGS / "titok_vcq_b.yaml",
                    [f"dataset.params.train_shards_path_or_url={tmp_path}/nowhere/train-{{0..1}}.tar"])


def test_1d_tokenizer_host_config_leaves_unset_vcq_options_out(tmp_path):
    from recipes.hosts.titok_1d import host_config

    cfg = load_config(CONFIGS / "titok_constant_b.yaml", _shards(tmp_path), check_paths=False).cfg
    host = host_config(cfg)
    assert "host" not in host and "recipe" not in host and dict(host.model.vq_model.vcq) == {}
    cfg = load_config(CONFIGS / "titok_vcq_b.yaml", _shards(tmp_path), check_paths=False).cfg
    assert dict(host_config(cfg).model.vq_model.vcq) == {"k_min": 2}


def test_train_titok_drift_is_refused_naming_the_script(tmp_path):
    from recipes.hosts.titok_1d import HostScriptDriftError, check_train_titok_main

    script = tmp_path / "scripts" / "train_titok.py"
    script.parent.mkdir()
    script.write_text("def main():\n    print('a different training script')\n")
    with pytest.raises(HostScriptDriftError, match=r"train_titok.py: main\(\) differs from the one run_titok_1d "
                                                   r"reproduces.*942a96f"):
        check_train_titok_main(tmp_path)
    script.write_text("def train():\n    pass\n")
    with pytest.raises(HostScriptDriftError, match=r"has no top-level main\(\)"):
        check_train_titok_main(tmp_path)


def test_train_titok_pin_matches_the_checked_out_host(tmp_path):
    from recipes.hosts.titok_1d import check_train_titok_main

    root = REPO / "third_party" / "1d-tokenizer"
    if not (root / "scripts" / "train_titok.py").is_file():
        pytest.skip("third_party/1d-tokenizer is not checked out (git submodule update --init third_party/1d-tokenizer)")
    check_train_titok_main(root)  # the pinned commit passes
    copy = tmp_path / "host"
    (copy / "scripts").mkdir(parents=True)
    text = (root / "scripts" / "train_titok.py").read_text()
    (copy / "scripts" / "train_titok.py").write_text(text.replace("split_batches=False", "split_batches=True"))
    with pytest.raises(RuntimeError, match="differs"):
        check_train_titok_main(copy)


# ---------------------------------------------------------------------- LlamaGen
def _llamagen_main():
    spec = importlib.util.spec_from_file_location("run_llamagen_vcq", REPO / "recipes" / "run_llamagen_vcq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("name, model, layers", [("llamagen_ar_b.yaml", "GPT-B", 12), ("llamagen_ar_l.yaml", "GPT-L", 24),
                                                 ("llamagen_ar_xl.yaml", "GPT-VCQ-XL", 32)])
def test_llamagen_configs_validate(name, model, layers):
    from recipes.hosts.llamagen import EXTRA_GPT_MODELS
    from vcq_plugin.registry import SAMPLERS

    cfg = load_config(CONFIGS / name).cfg
    assert cfg.gpt.model == model and cfg.sampling.preset in SAMPLERS
    if model in EXTRA_GPT_MODELS:
        assert EXTRA_GPT_MODELS[model] == dict(n_layer=layers, n_head=20, dim=1280)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("stage", ["train", "sample"])
def test_llamagen_gpu_stages_refuse_without_cuda(tmp_path, capsys, stage):
    rc = _llamagen_main()([stage, "--config", str(CONFIGS / "llamagen_ar_b.yaml"), f"run_dir={tmp_path}"])
    assert rc == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_llamagen_vocab_smaller_than_kmax(tmp_path, capsys):
    rc = _llamagen_main()(["extract", "--config", str(CONFIGS / "llamagen_ar_b.yaml"), "gpt.vocab_size=1024"])
    assert rc == 2
    assert "K_max=16384" in capsys.readouterr().err


def test_llamagen_code_path_must_select_a_view():
    with pytest.raises(ConfigError, match="flip"):
        load_config(CONFIGS / "llamagen_ar_b.yaml", ["data.code_path=runs/codes"])


@pytest.mark.parametrize("override, match", [
    ("gpt.modle=GPT-B", r"unknown key 'gpt.modle': did you mean 'gpt.model'"),
    ("sampling.top_p=0", r"sampling.top_p=0.0: must be > 0 and <= 1"),
    ("sampling.preset=vcq_b", r"sampling.preset='vcq_b' is not a sampler"),
    ("train.global_batch_size=0", r"train.global_batch_size=0: must be >= 1"),
])
def test_llamagen_schema(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIGS / "llamagen_ar_b.yaml", [override])


def test_llamagen_extract_checks_hosts_then_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VCQ_1D_TOKENIZER_ROOT", str(tmp_path / "empty"))
    rc = _llamagen_main()(["extract", "--config", str(CONFIGS / "llamagen_ar_b.yaml"), f"run_dir={tmp_path}"])
    assert rc == 2 and "third_party/1d-tokenizer" in capsys.readouterr().err


def test_train_c2i_arguments_exist_upstream():
    script = LLAMAGEN / "autoregressive" / "train" / "train_c2i.py"
    if not script.is_file():
        pytest.skip("third_party/LlamaGen is not checked out (git submodule update --init third_party/LlamaGen)")
    known = set(re.findall(r'add_argument\("(--[a-z0-9-]+)"', script.read_text()))
    cfg = load_config(CONFIGS / "llamagen_ar_b.yaml", ["train.ema=true", "train.resume_from=x.pt"]).cfg
    flags = [a for a in train_c2i_args(cfg) if a.startswith("--")]
    assert flags and set(flags) <= known, sorted(set(flags) - known)
