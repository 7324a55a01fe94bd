"""The typed config schema (recipes/pipeline/config.py): unknown keys, types and ranges stop a run before
any work, naming the key; defaults have one home; validation runs once."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recipes.pipeline.config import SCHEMAS, ConfigError, Schema, load_config
from recipes.pipeline.dispatch import run_recipe

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "configs" / "demo_cpu.yaml"
ENTRY = REPO / "recipes" / "run_titok_vcq.py"


def _load(*overrides: str, run_dir: Path | None = None):
    return load_config(DEMO, [*overrides] + ([f"run_dir={run_dir}"] if run_dir else []))


@pytest.mark.parametrize("override, message", [
    ("tokenizer.stepz=5", "unknown key 'tokenizer.stepz': did you mean 'tokenizer.steps'"),
    ("tokenizer.seed=5", "unknown key 'tokenizer.seed': did you mean 'seed'"),
    ("samplng.top_p=0.9", "unknown key 'samplng': did you mean 'sampling'"),
    ("variants.vcq.kmin=2", "unknown key 'variants.vcq.kmin': did you mean 'variants.vcq.k_min'"),
])
def test_unknown_key_names_it_and_the_closest_valid_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(override)


def test_unknown_key_in_the_yaml_file_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("host: titok-pytorch\ntokenizer:\n  stepz: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'tokenizer.stepz': did you mean 'tokenizer.steps'"):
        load_config(p)


@pytest.mark.parametrize("override, message", [
    ("tokenizer.steps=abc", "tokenizer.steps: .*expected an integer"),
    ("tokenizer.lr=fast", "tokenizer.lr: .*expected a number"),
    ("tokenizer.use_l2_norm=maybe", "tokenizer.use_l2_norm: .*expected true or false"),
    ("data.name=cifar", "data.name: .*expected one of \\[shapes, digits, imagefolder\\]"),
    ("tokenizer.steps=1.5", "tokenizer.steps: .*expected an integer"),
])
def test_wrong_type_names_key_and_expected_type(override, message):
    with pytest.raises(ConfigError, match=message):
        _load(override)


# every range the issue lists; each must stop before any work, naming the key
@pytest.mark.parametrize("override, message", [
    ("tokenizer.steps=0", r"tokenizer.steps=0: must be >= 1"),
    ("ar.steps=0", r"ar.steps=0: must be >= 1"),
    ("tokenizer.ckpt_every=0", r"tokenizer.ckpt_every=0: must be >= 1"),
    ("ar.ckpt_every=0", r"ar.ckpt_every=0: must be >= 1"),
    ("tokenizer.batch_size=0", r"tokenizer.batch_size=0: must be >= 1"),
    ("ar.batch_size=0", r"ar.batch_size=0: must be >= 1"),
    ("data.num_images=0", r"data.num_images=0: must be >= 1"),
    ("data.num_images=12", r"data.num_images=12 with data.holdout_fraction=0.1 gives 11 training and 1 held-out"),
    ("data.holdout_fraction=0.001", r"data.num_images=4000 with data.holdout_fraction=0.001 gives 3996 training and 4 "
                                    r"held-out images for 8 classes"),
    ("data.holdout_fraction=1", r"data.holdout_fraction=1.0: must be > 0 and < 1"),
    ("sampling.top_p=0", r"sampling.top_p=0.0: must be > 0 and <= 1"),
    ("sampling.top_p=1.5", r"sampling.top_p=1.5: must be > 0 and <= 1"),
    ("sampling.top_k=-1", r"sampling.top_k=-1: must be >= 0"),
    ("sampling.temperature=0", r"sampling.temperature=0.0: must be > 0"),
    ("data.num_classes=1", r"data.num_classes=1: must be >= 2"),
    ("data.num_classes=9", r"data.num_classes=9: the shapes dataset has 8 classes"),
    ("variants.vcq.k_min=300", r"variants.vcq: k_min must be <= k_max"),
    ("variants.constant.k_min=2", r"variants.constant: a constant schedule has no k_min"),
    ("variants.vcq.power=2", r"variants.vcq: power applies only to vcq_power"),
    ("variants.vcq.seq_len=32", r"variants.vcq.seq_len=32 but the tokenizer produces 16 tokens"),
    ("variants.vcq.quantizer=vcq_cosin", r"variants.vcq: unknown schedule name 'vcq_cosin'. Did you mean 'vcq_cosine'"),
    ("ar.vocab_size=20", r"ar.vocab_size=20: K_max=256 image tokens \+ 8 classes"),
    ("ar.train_on=[vcq,constnt]", r"ar.train_on\[1\]='constnt' is not a tokenizer variant \(did you mean 'constant'\?\)"),
    ("analysis.probe_k=17", r"analysis.probe_k=17 > tokenizer.num_latent_tokens=16"),
    ("data.image_size=18", r"data.image_size=18 must be divisible by tokenizer.patch_size=4"),
    ("sampling.sampler=awre_cfg", r"sampling.sampler='awre_cfg' is not a sampler \(did you mean 'aware_cfg'\?\)"),
    ("threads=0", r"threads=0: allowed auto, null or an integer >= 1"),
    ("parallel=sometimes", r"parallel='sometimes': allowed true, false or auto"),
    ("host=titok", r"host='titok' is not a known host \(did you mean 'titok-pytorch'\?\)"),
    ("data.name=imagefolder", r"data.path is required for data.name=imagefolder"),
    ("metrics.inception_weights=/nonexistent/pt_inception.pth", r"metrics.inception_weights=.* is not a file"),
])
def test_invalid_value_stops_before_any_work(tmp_path, override, message):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        _load(override, run_dir=run_dir)
    assert not run_dir.exists()


def test_holdout_large_enough_for_every_class():
    with pytest.raises(ConfigError, match=r"data.num_images=40 with data.holdout_fraction=0.1 gives 36 training and 4 "
                                          r"held-out images for 8 classes"):
        _load("data.num_images=40")
    _load("data.num_images=80")  # 8 held-out images, one per class at least


def test_missing_data_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data.path='.*nope' does not exist"):
        _load("data.name=imagefolder", f"data.path={tmp_path / 'nope'}")


@pytest.mark.parametrize("override", ["tokenizer.stepz=5", "tokenizer.steps=0", "sampling.top_p=0", "data.num_images=0",
                                      "tokenizer.batch_size=0"])
def test_entry_script_exits_nonzero_fast_naming_the_key(tmp_path, override):
    """Through the entry script, as a user would: exit 2 within 30 s, the key named, no run folder."""
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(ENTRY), override, f"run_dir={run_dir}"], capture_output=True, text=True,
                       timeout=60)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 2, p.stderr
    assert override.split("=")[0] in p.stderr and "Traceback" not in p.stderr
    assert not run_dir.exists()


def test_whole_mapping_replaces_default_and_tilde_removes():
    cfg = _load("variants={lin: {quantizer: vcq_linear}}", "ar.train_on=[lin]").cfg
    assert list(cfg.variants) == ["lin"]
    cfg = _load("~variants.constant", "ar.train_on=[vcq]").cfg
    assert list(cfg.variants) == ["vcq"]
    cfg = _load("variants.pow.quantizer=vcq_power", "variants.pow.power=2").cfg  # dotted: adds an entry
    assert list(cfg.variants) == ["vcq", "constant", "pow"] and cfg.variants.pow.power == 2.0
    with pytest.raises(ConfigError, match=r"~tokenizer.steps: only entries of a mapping can be removed"):
        _load("~tokenizer.steps")
    with pytest.raises(ConfigError, match=r"variants has no entry 'constnt' \(did you mean 'constant'\?\)"):
        _load("~variants.constnt")


def test_demo_yaml_restates_no_default():
    """One home per default: the demo YAML only names the host; the schema holds every value."""
    assert yaml.safe_load(DEMO.read_text()) == {"host": "titok-pytorch"}


def test_ar_model_class_has_no_defaults_of_its_own():
    import inspect

    from recipes.pipeline.ar import ClassConditionalAR

    params = inspect.signature(ClassConditionalAR.__init__).parameters
    assert [n for n, p in params.items() if p.default is not inspect.Parameter.empty] == ["vocab_size"]


def test_every_demo_key_is_documented():
    def undocumented(cls, prefix=""):
        for f in dataclasses.fields(cls):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                yield from undocumented(type(sub), f"{prefix}{f.name}.")
            elif not f.metadata.get("doc"):
                yield prefix + f.name

    assert list(undocumented(SCHEMAS["titok-pytorch"].cls)) == []


def test_validation_runs_once(tmp_path):
    calls = []
    demo = SCHEMAS["titok-pytorch"]
    counting = Schema(demo.name, demo.cls, lambda cfg: (calls.append(1), demo.check(cfg)), demo.check_paths)
    from test_recipe_demo import TINY

    loaded = load_config(DEMO, TINY + [f"run_dir={tmp_path / 'run'}", "~variants.constant", "ar.train_on=[]"],
                         schema=counting)
    run_recipe(loaded)
    assert calls == [1]


def test_loaded_config_is_read_only():
    from omegaconf.errors import ReadonlyConfigError

    cfg = _load().cfg
    with pytest.raises(ReadonlyConfigError):
        cfg.tokenizer.steps = 3
