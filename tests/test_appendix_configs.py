"""Fidelity of the full-scale configs to the paper (Appendix A / B, Table 7), value by value.

:data:`PAPER` is one table of every value the paper states for each full-scale config, with the line it
comes from; each is checked against the YAML after OmegaConf resolution (``load_config``, the path a
run takes). :data:`HOST_DEFAULTS` lists the values the paper's text lost ("linearly decayed from _ to
_") and that the configs take from the host codebase: each is checked against the host's own default
(its config file or argparse default, read from the submodule; skipped, saying why, without it).
:func:`test_changing_a_paper_value_fails` changes each paper value in turn and checks that the table
catches it.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import pytest
from omegaconf import OmegaConf

from recipes.pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
TITOK_ROOT = REPO / "third_party" / "1d-tokenizer"
LLAMAGEN_ROOT = REPO / "third_party" / "LlamaGen"

TOK_B, TOK_L, TOK_C = "titok_vcq_b.yaml", "titok_vcq_l.yaml", "titok_constant_b.yaml"
AR_B, AR_L, AR_XL = "llamagen_ar_b.yaml", "llamagen_ar_l.yaml", "llamagen_ar_xl.yaml"
TOKENIZERS, ARS = (TOK_B, TOK_L, TOK_C), (AR_B, AR_L, AR_XL)
BASE_GROUP, LARGE_GROUP = (AR_B, AR_L), (AR_XL,)
IMAGENET_TRAIN = 1_281_167


def _config(name: str, overrides: Tuple[str, ...] = ()):
    return load_config(CONFIGS / name, list(overrides), check_paths=False).cfg


def _get(cfg, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return value.value if hasattr(value, "value") and not isinstance(value, (int, float, str)) else value


# ---------------------------------------------------------------------- derived values
def _gpt_dims(cfg) -> Optional[Tuple[int, int, int]]:
    """(layers, heads, width) of ``gpt.model``: LlamaGen's own definition in autoregressive/models/gpt.py,
    or vcq_plugin's GPT_models extra (the paper's 32-layer XL)."""
    from vcq_plugin.patches.llamagen import EXTRA_GPT_MODELS

    name = str(cfg.gpt.model)
    if name in EXTRA_GPT_MODELS:
        d = EXTRA_GPT_MODELS[name]
        return d["n_layer"], d["n_head"], d["dim"]
    source = LLAMAGEN_ROOT / "autoregressive" / "models" / "gpt.py"
    if not source.is_file():
        pytest.skip("third_party/LlamaGen is not checked out (git submodule update --init third_party/LlamaGen): "
                    "LlamaGen's GPT sizes are read from it")
    fn = "GPT_" + name.split("-", 1)[1]
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == fn:
            call = next(n for n in ast.walk(node) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "ModelArgs")
            kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            return kw["n_layer"], kw["n_head"], kw["dim"]
    return None


def _tokenizer_of(cfg) -> dict:
    tok = _config(Path(str(cfg.tokenizer.config)).name)
    vq = tok.model.vq_model
    return {"quantizer": vq.quantizer, "k_max": int(vq.codebook_size), "decoder": vq.vit_dec_model_size}


def _preset(cfg) -> dict:
    from vcq_plugin.sampler import PRESETS

    p, nocfg = PRESETS[str(cfg.sampling.preset)], PRESETS[str(cfg.sampling.preset) + "_nocfg"]
    return {"guidance": p["guidance"], "scale": p["guidance_scale"], "power": p["guidance_power"],
            "temperature": p["temperature"], "nocfg_temperature": nocfg["temperature"]}


# ---------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Paper:
    """A value the paper states: ``get`` is a dotted key of the resolved config or a function of it;
    ``mutation`` is an override that changes that value (to show the table catches a change)."""

    configs: Tuple[str, ...]
    get: Any
    value: Any
    source: str
    mutation: Any  # an override, or a tuple of them

    def read(self, cfg) -> Any:
        return self.get(cfg) if callable(self.get) else _get(cfg, self.get)

    @property
    def name(self) -> str:
        return self.get if isinstance(self.get, str) else self.get.__name__


def _global_batch_8_gpus(cfg):  # "trained on 8 GPUs" x per-GPU batch x accumulation
    t = cfg.training
    return int(t.per_gpu_batch_size) * 8 * int(t.gradient_accumulation_steps)


def _tokenizer_epochs(cfg):
    return round(int(cfg.training.max_train_steps) * _global_batch_8_gpus(cfg) / int(cfg.experiment.max_train_examples))


def _peak_ends_at(cfg):  # Base AR: "reaches its peak at 50k steps" (the reading chosen: the peak lasts until 50k)
    return int(cfg.train.warmup_steps) + int(cfg.train.hold_steps)


def _ar_epochs(cfg):  # train_c2i.py runs whole epochs of floor(N / batch) steps
    return int(cfg.train.epochs) * (IMAGENET_TRAIN // int(cfg.train.global_batch_size))


def _ten_crop_flip(cfg):
    path = str(cfg.data.code_path)
    return "ten_crop" in path and "flip" in path


def _uses_lpips(cfg):
    return "lpips" in str(cfg.losses.perceptual_loss)


def _uses_convnext_s(cfg):
    return "convnext_s" in str(cfg.losses.perceptual_loss)


A_TOK = "App. A, Tokenizer training"
A_AR = "App. A, Autoregressive training"
PAPER: Tuple[Paper, ...] = (
    # ---- tokenizers
    Paper(TOKENIZERS, "model.vq_model.num_latent_tokens", 256, f"{A_TOK}: 'a 1D sequence length of 256'",
          "model.vq_model.num_latent_tokens=128"),
    Paper((TOK_B, TOK_L), "model.vq_model.quantizer", "vcq_cosine", f"{A_TOK}: 'a shared cosine VCQ codebook'",
          "model.vq_model.quantizer=vcq_linear"),
    Paper((TOK_B, TOK_L), "model.vq_model.vcq.k_min", 2, f"{A_TOK}: 'with K_min = 2' (symbol lost; DESIGN.md 2)",
          "model.vq_model.vcq.k_min=4"),
    Paper((TOK_C,), "model.vq_model.quantizer", "constant", "Table 2 / Table 4 baseline 'Constant (K=16384)'",
          "model.vq_model.quantizer=vcq_cosine"),
    Paper((TOK_B, TOK_C), "model.vq_model.codebook_size", 16384, f"{A_TOK}: 'The Base tokenizer uses K_max = 16384'",
          "model.vq_model.codebook_size=8192"),
    Paper((TOK_L,), "model.vq_model.codebook_size", 11264, f"{A_TOK}: 'the Large tokenizer uses K_max = 11264' "
          "(Table 2 'Cosine-L')", "model.vq_model.codebook_size=16384"),
    Paper(TOKENIZERS, "model.vq_model.vit_enc_model_size", "base", f"{A_TOK}: 'ViT-B encoder' (both)",
          "model.vq_model.vit_enc_model_size=large"),
    Paper((TOK_B, TOK_C), "model.vq_model.vit_dec_model_size", "base", f"{A_TOK}: 'ViT-B encoder and ViT-B decoder'",
          "model.vq_model.vit_dec_model_size=large"),
    Paper((TOK_L,), "model.vq_model.vit_dec_model_size", "large", f"{A_TOK}: 'a larger ViT-L decoder'",
          "model.vq_model.vit_dec_model_size=base"),
    Paper(TOKENIZERS, "training.max_train_steps", 1_300_000, f"{A_TOK}: 'trained for 1.3M optimization steps'",
          "training.max_train_steps=1000000"),
    Paper(TOKENIZERS, _global_batch_8_gpus, 256, f"{A_TOK}: 'a global batch size of 256' ... 'on 8 GPUs'",
          "training.per_gpu_batch_size=64"),
    Paper(TOKENIZERS, _tokenizer_epochs, 260, f"{A_TOK}: 'corresponding to 260 ImageNet epochs'",
          "experiment.max_train_examples=640000"),
    Paper(TOKENIZERS, "experiment.max_train_examples", IMAGENET_TRAIN, "App. A: 'the ImageNet-1K training set'",
          "experiment.max_train_examples=1281166"),
    Paper(TOKENIZERS, "optimizer.name", "adamw", f"{A_TOK}: 'Tokenizer optimization uses AdamW'", "optimizer.name=adam"),
    Paper(TOKENIZERS, "lr_schedule", "paper", f"{A_TOK}: 'The learning rate is linearly decayed'", "lr_schedule=host"),
    Paper(TOKENIZERS, "lr_scheduler.params.warmup_steps", 13_000, f"{A_TOK}: 'with a 13k-step warmup'",
          "lr_scheduler.params.warmup_steps=10000"),
    Paper(TOKENIZERS, "lr_scheduler.params.hold_steps", 65_000, f"{A_TOK}: 'and a 65k-step peak' (read as 65k updates "
          "at the peak)", "lr_scheduler.params.hold_steps=52000"),
    Paper(TOKENIZERS, "losses.reconstruction_loss", "l1", f"{A_TOK}: 'L1 reconstruction'",
          "losses.reconstruction_loss=l2"),
    Paper(TOKENIZERS, "losses.reconstruction_weight", 1.0, f"{A_TOK}: 'The L1 ... use weight 1.0'",
          "losses.reconstruction_weight=0.5"),
    Paper(TOKENIZERS, "losses.perceptual_weight", 1.0, f"{A_TOK}: 'The ... LPIPS ... use weight 1.0'",
          "losses.perceptual_weight=0.1"),
    Paper(TOKENIZERS, "losses.discriminator_factor", 1.0, f"{A_TOK}: 'The ... discriminator ... use weight 1.0'",
          "losses.discriminator_factor=0.5"),
    Paper(TOKENIZERS, "losses.quantizer_weight", 1.0, f"{A_TOK}: 'The ... commitment losses use weight 1.0'",
          "losses.quantizer_weight=0.0"),
    Paper(TOKENIZERS, "losses.discriminator_weight", 0.1, f"{A_TOK}: 'the adversarial generator loss uses weight 0.1'",
          "losses.discriminator_weight=0.01"),
    Paper((TOK_B, TOK_C), _uses_lpips, True, f"{A_TOK}: 'LPIPS perceptual loss'",
          "losses.perceptual_loss=convnext_s"),
    Paper((TOK_L,), _uses_convnext_s, True, f"{A_TOK}: 'For the Large tokenizer, LPIPS is computed using a "
          "ConvNeXt-S backbone'", "losses.perceptual_loss=lpips"),
    Paper(TOKENIZERS, "dataset.preprocessing.random_crop", True, f"{A_TOK}: 'random cropping'",
          "dataset.preprocessing.random_crop=false"),
    Paper(TOKENIZERS, "dataset.preprocessing.random_flip", True, f"{A_TOK}: 'and horizontal flipping'",
          "dataset.preprocessing.random_flip=false"),
    Paper(TOKENIZERS, "training.mixed_precision", "bf16", f"{A_TOK}: 'Training uses bf16 mixed precision'",
          "training.mixed_precision=fp16"),
    # ---- AR, both groups
    Paper(ARS, _ten_crop_flip, True, f"{A_AR}: 'ten-crop augmentation, horizontal flipping'",
          "data.code_path=runs/codes_flip"),
    Paper(ARS, "gpt.dropout_p", 0.1, f"{A_AR}: 'AR dropout of 0.1'", "gpt.dropout_p=0.0"),
    Paper(ARS, "gpt.token_dropout_p", 0.1, f"{A_AR}: 'token-embedding dropout of 0.1'", "gpt.token_dropout_p=0.0"),
    Paper(ARS, "train.max_grad_norm", 1.0, f"{A_AR}: 'Gradient clipping is set to 1.0'", "train.max_grad_norm=0.0"),
    Paper(ARS, "lr_schedule", "paper", f"{A_AR}: 'The learning rate is linearly decayed'", "lr_schedule=host"),
    Paper((AR_B,), _gpt_dims, (12, 12, 768), f"{A_AR}: 'AR-B model with 12 layers, 12 heads, and hidden dimension 768'",
          "gpt.model=GPT-L"),
    Paper((AR_L,), _gpt_dims, (24, 16, 1024), f"{A_AR}: 'AR-L model with 24 layers, 16 heads, and hidden dimension "
          "1024'", "gpt.model=GPT-B"),
    Paper((AR_XL,), _gpt_dims, (32, 20, 1280), f"{A_AR}: 'AR-XL model with 32 layers, 20 heads, and hidden dimension "
          "1280'", "gpt.model=GPT-XL"),
    # ---- AR, Base-tokenizer group (BB, BL)
    Paper(BASE_GROUP, _tokenizer_of, {"quantizer": "vcq_cosine", "k_max": 16384, "decoder": "base"},
          f"{A_AR}: 'For the Base-tokenizer group'", f"tokenizer.config={CONFIGS / TOK_L}"),
    Paper(BASE_GROUP, "train.total_steps", 1_000_000, f"{A_AR}: 'BB, BL, and BXL are trained for 1.0M optimization "
          "steps'", "train.total_steps=900000"),
    Paper(BASE_GROUP, "train.global_batch_size", 512, f"{A_AR}: 'with a global batch size of 512'",
          "train.global_batch_size=256"),
    Paper(BASE_GROUP, _ar_epochs, 1_000_800, f"{A_AR}: 'corresponding to 400 ImageNet epochs' (400 x 2502 steps)",
          "train.epochs=300"),
    Paper(BASE_GROUP, "train.nproc_per_node", 8, f"{A_AR}: 'It is trained on 8 GPUs' (BB, BL)",
          "train.nproc_per_node=16"),
    Paper(BASE_GROUP, "train.warmup_steps", 10_000, f"{A_AR}: 'The schedule uses a 10k-step warmup'",
          "train.warmup_steps=5000"),
    Paper(BASE_GROUP, _peak_ends_at, 50_000, f"{A_AR}: 'and reaches its peak at 50k steps' (read as: at the peak "
          "until update 50k)", "train.hold_steps=50000"),
    # ---- AR, Large-tokenizer group (LB, LL, LXL)
    Paper(LARGE_GROUP, _tokenizer_of, {"quantizer": "vcq_cosine", "k_max": 11264, "decoder": "large"},
          f"{A_AR}: 'For the Large-tokenizer group'", (f"tokenizer.config={CONFIGS / TOK_B}", "gpt.vocab_size=16384")),
    Paper(LARGE_GROUP, "train.total_steps", 500_000, f"{A_AR}: 'LB, LL, and LXL are trained for 500k optimization "
          "steps'", "train.total_steps=400000"),
    Paper(LARGE_GROUP, "train.global_batch_size", 2048, f"{A_AR}: 'with a global batch size of 2048'",
          "train.global_batch_size=1024"),
    Paper(LARGE_GROUP, _ar_epochs, 500_000, f"{A_AR}: 'corresponding to 800 ImageNet epochs' (800 x 625 steps)",
          "train.epochs=700"),
    Paper(LARGE_GROUP, "train.nproc_per_node", 32, f"{A_AR}: 'LXL ... is trained on 32 GPUs'",
          "train.nproc_per_node=16"),
    Paper(LARGE_GROUP, "train.warmup_steps", 62_500, f"{A_AR}: 'with a 62.5k-step warmup'",
          "train.warmup_steps=10000"),
    Paper(LARGE_GROUP, "train.hold_steps", 0, f"{A_AR}: (no peak plateau stated for this group)",
          "train.hold_steps=1000"),
    # ---- sampling (Appendix B, Table 7)
    Paper((AR_B,), _preset, {"guidance": "aware", "scale": 10.0, "power": 1.5, "temperature": 1.0,
                             "nocfg_temperature": 0.85},
          "Table 7: 'VCQ-Cosine / VCQ B-B: cosine, scale=10, p=1.5, T 1.0; cfg=0: T 0.85'", "sampling.preset=vcq_bl"),
    Paper((AR_L,), _preset, {"guidance": "aware", "scale": 4.0, "power": 0.75, "temperature": 1.0,
                             "nocfg_temperature": 0.85},
          "Table 7: 'VCQ B-L: cosine, scale=4, p=0.75, T 1.0; cfg=0: T 0.85'", "sampling.preset=vcq_bb"),
    Paper((AR_XL,), _preset, {"guidance": "aware", "scale": 3.0, "power": 1.0, "temperature": 1.0,
                              "nocfg_temperature": 0.95},
          "Table 7: 'VCQ L-XL: cosine, scale=3, p=1.0, T 1.0; cfg=0: T 0.95'", "sampling.preset=vcq_ll"),
)

PAPER_CASES = [pytest.param(c, row, id=f"{c}:{row.name}") for row in PAPER for c in row.configs]


def _mismatch(row: Paper, cfg) -> Optional[str]:
    found = row.read(cfg)
    same = math.isclose(found, row.value, rel_tol=1e-12) if isinstance(row.value, float) else found == row.value
    return None if same else f"{row.name}: config has {found!r}, the paper states {row.value!r} ({row.source})"


@pytest.mark.parametrize("config, row", PAPER_CASES)
def test_config_states_the_paper_value(config, row):
    problem = _mismatch(row, _config(config))
    assert problem is None, problem


@pytest.mark.parametrize("config, row", PAPER_CASES)
def test_changing_a_paper_value_fails(config, row):
    """The mutation each row names (an edit of the YAML, as an override) is caught by that row."""
    mutated = _config(config, (row.mutation,) if isinstance(row.mutation, str) else tuple(row.mutation))
    assert _mismatch(row, mutated) is not None, f"{row.mutation} went unnoticed by {row.name}"


def test_every_full_scale_config_is_covered():
    covered = {c for row in PAPER for c in row.configs}
    full_scale = {p.name for p in CONFIGS.glob("*.yaml")
                  if p.name.startswith(("titok_", "llamagen_ar_"))}
    assert covered == full_scale


# ---------------------------------------------------------------------- values the paper's text lost
def _titok_yaml(rel: str) -> Callable[[str], Any]:
    def read(key: str) -> Any:
        path = TITOK_ROOT / rel
        if not path.is_file():
            pytest.skip("third_party/1d-tokenizer is not checked out (git submodule update --init "
                        f"third_party/1d-tokenizer): its default {rel} is read from it")
        return OmegaConf.select(OmegaConf.load(path), key, throw_on_missing=True)

    read.__name__ = f"1d-tokenizer:{rel}"
    return read


def _train_c2i_default(flag: str) -> Any:
    """The argparse default of ``flag`` in LlamaGen's train_c2i.py (read with ast, not imported: it needs CUDA)."""
    path = LLAMAGEN_ROOT / "autoregressive" / "train" / "train_c2i.py"
    if not path.is_file():
        pytest.skip("third_party/LlamaGen is not checked out (git submodule update --init third_party/LlamaGen): "
                    "train_c2i.py's defaults are read from it")
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == flag):
            kw = {k.arg: k.value for k in node.keywords}
            if "default" in kw:
                return ast.literal_eval(kw["default"])
            action = ast.literal_eval(kw["action"]) if "action" in kw else None
            return False if action == "store_true" else None
    raise AssertionError(f"train_c2i.py has no argument {flag}")


def _gpt_model_args_default(field: str) -> Any:
    path = LLAMAGEN_ROOT / "autoregressive" / "models" / "gpt.py"
    if not path.is_file():
        pytest.skip("third_party/LlamaGen is not checked out (git submodule update --init third_party/LlamaGen)")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "ModelArgs":
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and getattr(stmt.target, "id", "") == field:
                    return ast.literal_eval(stmt.value)
    raise AssertionError(f"LlamaGen's ModelArgs has no field {field}")


_train_c2i_default.__name__ = "LlamaGen:autoregressive/train/train_c2i.py"

STAGE1 = _titok_yaml("configs/training/TiTok/stage1/titok_b64.yaml")
STAGE2 = _titok_yaml("configs/training/TiTok/stage2/titok_b64.yaml")
TA_TITOK = _titok_yaml("configs/training/TA-TiTok/tatitok_bl128_vq.yaml")
RAR = _titok_yaml("configs/training/generator/rar.yaml")


@dataclass(frozen=True)
class HostDefault:
    configs: Tuple[str, ...]
    key: str
    host: Callable[[str], Any]  # reads the host's default
    host_key: str
    why: str = "lost from the paper's text"


HOST_DEFAULTS: Tuple[HostDefault, ...] = (
    HostDefault(TOKENIZERS, "optimizer.params.learning_rate", STAGE1, "optimizer.params.learning_rate",
                "the peak: 'linearly decayed from _ to _' (values lost)"),
    HostDefault(TOKENIZERS, "lr_scheduler.params.end_lr", STAGE1, "lr_scheduler.params.end_lr",
                "the end: 'linearly decayed from _ to _' (values lost)"),
    HostDefault(TOKENIZERS, "optimizer.params.beta1", STAGE1, "optimizer.params.beta1", "AdamW betas not stated"),
    HostDefault(TOKENIZERS, "optimizer.params.beta2", STAGE1, "optimizer.params.beta2", "AdamW betas not stated"),
    HostDefault(TOKENIZERS, "optimizer.params.weight_decay", STAGE1, "optimizer.params.weight_decay"),
    HostDefault(TOKENIZERS, "optimizer.params.discriminator_learning_rate", STAGE2,
                "optimizer.params.discriminator_learning_rate"),
    HostDefault(TOKENIZERS, "lr_scheduler.scheduler", STAGE1, "lr_scheduler.scheduler", "used with lr_schedule: host"),
    HostDefault(TOKENIZERS, "model.vq_model.token_size", STAGE1, "model.vq_model.token_size", "codebook dim not stated"),
    HostDefault(TOKENIZERS, "model.vq_model.commitment_cost", STAGE1, "model.vq_model.commitment_cost",
                "beta inside the VQ loss not stated (the VQ loss weight 1.0 is quantizer_weight)"),
    HostDefault(TOKENIZERS, "model.vq_model.use_l2_norm", STAGE1, "model.vq_model.use_l2_norm"),
    HostDefault(TOKENIZERS, "training.use_ema", STAGE1, "training.use_ema"),
    HostDefault(TOKENIZERS, "training.max_grad_norm", STAGE1, "training.max_grad_norm", "tokenizer clip not stated"),
    HostDefault(TOKENIZERS, "losses.discriminator_start", STAGE2, "losses.discriminator_start"),
    HostDefault(TOKENIZERS, "losses.lecam_regularization_weight", STAGE2, "losses.lecam_regularization_weight"),
    HostDefault(TOKENIZERS, "losses.perceptual_loss", TA_TITOK, "losses.perceptual_loss",
                "the LPIPS + ConvNeXt-S mix of the host's TA-TiTok configs"),
    HostDefault(ARS, "train.lr", _train_c2i_default, "--lr", "the peak: 'linearly decayed from _ to _' (values lost)"),
    HostDefault(ARS, "train.weight_decay", _train_c2i_default, "--weight-decay", "'The AR weight decay is _' (lost)"),
    HostDefault(ARS, "train.beta1", _train_c2i_default, "--beta1", "'AdamW with beta = _' (lost)"),
    HostDefault(ARS, "train.beta2", _train_c2i_default, "--beta2", "'AdamW with beta = _' (lost)"),
    HostDefault(ARS, "gpt.drop_path_rate", _train_c2i_default, "--drop-path-rate", "not stated"),
    HostDefault(ARS, "gpt.cls_token_num", _train_c2i_default, "--cls-token-num", "not stated"),
    HostDefault(ARS, "train.ckpt_every", _train_c2i_default, "--ckpt-every", "not stated"),
    HostDefault(ARS, "train.num_workers", _train_c2i_default, "--num-workers", "not stated"),
    HostDefault(ARS, "train.ema", _train_c2i_default, "--ema", "not stated"),
    # LlamaGen has no learning-rate schedule, so no end LR of its own: the sibling host's AR (RAR) end_lr
    HostDefault(ARS, "train.end_lr", RAR, "lr_scheduler.params.end_lr",
                "the end: 'linearly decayed from _ to _' (lost); LlamaGen has none, RAR's generator config's"),
)

HOST_CASES = [pytest.param(c, row, id=f"{c}:{row.key}") for row in HOST_DEFAULTS for c in row.configs]


@pytest.mark.parametrize("config, row", HOST_CASES)
def test_lost_value_is_the_host_default(config, row):
    ours = _get(_config(config), row.key)
    theirs = row.host(row.host_key)
    if isinstance(theirs, str) and not isinstance(ours, str):  # YAML 1.1 reads 1e-4 as a string; OmegaConf does not
        theirs = float(theirs)
    assert ours == theirs, f"{config} {row.key}={ours!r}, host default {theirs!r} ({row.host.__name__} {row.host_key})"


def test_class_label_dropout_is_the_paper_value_by_host_default():
    """App. A 'class-label dropout of 0.1': train_c2i.py passes no class_dropout_prob, so LlamaGen's
    ModelArgs default holds; the configs set none (they would need a hook to change it)."""
    assert _gpt_model_args_default("class_dropout_prob") == 0.1
    for name in ARS:
        assert OmegaConf.select(_config(name), "gpt.class_dropout_prob") is None
