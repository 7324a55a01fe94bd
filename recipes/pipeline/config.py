"""The recipes' config schema: every key, its type, its default and its allowed range, in this one file.

Configs are OmegaConf structured configs built from the dataclasses below (omegaconf >= 2.3, so
choices are ``Enum`` s, not ``Literal`` s). The config's ``host:`` picks the schema
(:data:`SCHEMAS`): ``titok-pytorch`` (the CPU demo, :class:`DemoConfig`), ``1d-tokenizer``
(full-scale TiTok, :class:`Titok1dConfig`) and ``llamagen`` (full-scale AR, :class:`LlamaGenConfig`).
A default lives here and nowhere else: ``recipes/configs/demo_cpu.yaml`` only names the host, the
full-scale YAMLs state the values the paper (or the host codebase) gives.

:func:`load_config` reads a YAML file plus ``key=value`` overrides and checks, once and before any
work: unknown keys (named with the closest valid key), types (the key and the expected type),
ranges (every ``ge`` / ``gt`` / ``le`` / ``lt`` below), cross-field rules (the schema's ``check``)
and then paths (the schema's ``check_paths``: for full scale the host submodule first, then the
data). Any failure is a :class:`ConfigError`.

Override syntax (as Hydra): ``a.b=value`` sets a key; ``~variants.constant`` removes an entry of a
mapping; a mapping given whole (``variants={vcq: {quantizer: vcq_cosine}}`` or a ``variants:`` block
in the YAML) replaces the default mapping instead of being merged into it.

A second recipe (e.g. the reproduction study) registers its own :class:`Schema` and passes it to
:func:`load_config`; the stage machinery (``recipes/pipeline/rundir.py``) takes any config.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


class ConfigError(ValueError):
    """A recipe config that cannot run; raised before any work."""


def _f(default: Any = MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None,
       ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A schema field: its default (``MISSING`` = required), what it means and its allowed range."""
    meta = {"doc": doc, **{k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def open_section(cls: type) -> type:
    """Mark a dataclass whose node also takes keys it does not declare (a host codebase's own config
    keys, passed through to it): declared keys are typed and range-checked, others pass unchecked."""
    cls.__vcq_open__ = True
    return cls


# ====================================================================== host titok-pytorch (CPU demo)
class DatasetName(enum.Enum):
    shapes = "shapes"            # procedural coloured shapes, made on the fly
    digits = "digits"            # scikit-learn's bundled 8x8 digits (1797 images, 10 classes)
    imagefolder = "imagefolder"  # a torchvision ImageFolder at data.path


DIGITS_IMAGES, DIGITS_CLASSES, SHAPES_CLASSES = 1797, 10, 8


@dataclass
class DataConfig:
    name: DatasetName = _f(DatasetName.shapes, "shapes | digits | imagefolder")
    path: Optional[str] = _f(None, "ImageFolder root (name: imagefolder only)")
    num_images: Optional[int] = _f(4000, "N images (log2 N ~ 12 bits, so a constant K=256 codebook saturates after "
                                   "2 tokens); null = the whole dataset (digits, imagefolder)", ge=1)
    num_classes: int = _f(8, "classes (shapes: <= 8; digits: 10; imagefolder: its class folders)", ge=2)
    image_size: int = _f(16, "pixels per side", ge=8)
    holdout_fraction: float = _f(0.1, "held-out images: reconstruction PSNR, AR held-out NLL", gt=0, lt=1)


@dataclass
class TokenizerConfig:
    """titok-pytorch's TiTokTokenizer; both variants share every value here."""

    dim: int = _f(64, "transformer width", ge=1)
    patch_size: int = _f(4, "pixels per patch side (divides data.image_size)", ge=1)
    num_latent_tokens: int = _f(16, "L, the number of tokens per image = the schedule's seq_len", ge=1)
    enc_depth: int = _f(2, "encoder layers", ge=1)
    dec_depth: int = _f(2, "decoder layers", ge=1)
    heads: int = _f(4, "attention heads", ge=1)
    dim_head: int = _f(16, "width per head", ge=1)
    codebook_size: int = _f(256, "K_max, the shared codebook", ge=2)
    commitment_cost: float = _f(0.25, "weight of the commitment loss", ge=0)
    use_l2_norm: bool = _f(True, "cosine-similarity code search, as TiTok / LlamaGen")
    entropy_loss_ratio: float = _f(0.0, "weight of the codebook entropy loss (0 = off)", ge=0)
    restart_dead_codes_every: int = _f(20, "every this many steps, restart codes unused at their home positions "
                                       "(vcq_plugin.restarts; 0 = off)", ge=0)
    init_std: Optional[float] = _f(1.0, "std of the latent / position / mask embeddings (titok-pytorch: 0.02; "
                                   "larger breaks the attention symmetry early); null = titok-pytorch's", gt=0)
    steps: int = _f(800, "optimizer steps", ge=1)
    batch_size: int = _f(64, "images per step", ge=1)
    lr: float = _f(3.0e-3, "peak learning rate (AdamW, warm-up then cosine decay)", gt=0)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    warmup_steps: int = _f(20, "linear warm-up steps", ge=0)
    grad_clip: Optional[float] = _f(1.0, "gradient-norm clip (null = off)", gt=0)
    ckpt_every: int = _f(100, "steps between checkpoints (the newest good one and the one before are kept)", ge=1)


@dataclass
class VariantConfig:
    """One tokenizer: only K(i) differs between variants (same TiTokTokenizer, same code path)."""

    quantizer: str = _f(MISSING, "schedule name: vcq_cosine | vcq_linear | vcq_power | vcq_power<p> | constant")
    k_min: Optional[int] = _f(None, "K(0) (not for constant); null = 2", ge=1)
    power: Optional[float] = _f(None, "p of vcq_power; null = 2.5", gt=0)
    seq_len: Optional[int] = _f(None, "schedule length; must equal tokenizer.num_latent_tokens (null = that)", ge=1)


def _demo_variants() -> Dict[str, VariantConfig]:
    return {"vcq": VariantConfig(quantizer="vcq_cosine"), "constant": VariantConfig(quantizer="constant")}


@dataclass
class AnalysisConfig:
    tolerance: float = _f(0.5, "bits: measured i* = first prefix length whose prefix entropy H(x_<=i) is within "
                          "tolerance of log2 N (the prefixes have become unique: the cliff of Eq. 2)", gt=0)
    probe_k: int = _f(4, "the first-k linear probe sees the code embeddings of the first k positions", ge=1)


@dataclass
class ARModelConfig:
    """Class-conditional x-transformers Decoder (Llama-style), next-token prediction: the model and its
    training (the demo's and the study's AR stage)."""

    dim: int = _f(96, "width", ge=1)
    depth: int = _f(3, "layers", ge=1)
    heads: int = _f(4, "attention heads", ge=1)
    dropout: float = _f(0.1, "attention / feed-forward dropout", ge=0, lt=1)
    emb_dropout: float = _f(0.1, "token-embedding dropout", ge=0, lt=1)
    class_dropout: float = _f(0.1, "probability of the null class in training (the CFG unconditional branch)",
                              ge=0, lt=1)
    vocab_size: Optional[int] = _f(None, "null = K_max + num_classes + 1", ge=1)
    steps: int = _f(600, "optimizer steps", ge=1)
    batch_size: int = _f(64, "token sequences per step", ge=1)
    lr: float = _f(2.0e-3, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = _f(0.01, "AdamW weight decay", ge=0)
    warmup_steps: int = _f(30, "linear warm-up steps", ge=0)
    grad_clip: Optional[float] = _f(1.0, "gradient-norm clip (null = off)", gt=0)
    ckpt_every: int = _f(200, "steps between checkpoints", ge=1)


@dataclass
class ARConfig(ARModelConfig):
    """The demo's AR stage: an :class:`ARModelConfig` model on the tokens of each variant in ``train_on``."""

    train_on: List[str] = _f(doc="variants whose tokens get an AR model (and samples)",
                             factory=lambda: ["vcq", "constant"])


@dataclass
class SamplingConfig:
    sampler: str = _f("aware_cfg", "a vcq_plugin sampler registry name (aware_cfg, cosine_cfg, no_cfg, vcq_bb, ...)")
    guidance_scale: float = _f(3.0, "w of Eq. 4 (0 = no guidance)", ge=0)
    guidance_power: float = _f(1.0, "p of the power-cosine guidance schedule", gt=0)
    temperature: float = _f(1.0, "softmax temperature", gt=0)
    top_k: int = _f(0, "keep the k most likely tokens (0 = all)", ge=0)
    top_p: float = _f(1.0, "nucleus sampling mass (1 = all)", gt=0, le=1)
    per_class: int = _f(8, "samples per class (one grid row per class)", ge=1)
    seed: int = _f(0, "sampling RNG seed")


@dataclass
class MetricsConfig:
    inception_weights: Optional[str] = _f(None, "local pt_inception-2015-12-05 weights: gFID / rFID are computed "
                                          "only when set (nothing is downloaded)")


@dataclass
class DemoConfig:
    """``host: titok-pytorch``: the CPU demo (recipes/run_titok_vcq.py, stages in recipes/pipeline/demo.py)."""

    host: str = _f("titok-pytorch", "titok-pytorch | 1d-tokenizer | llamagen: picks the schema; never switched")
    run_dir: str = _f("runs/demo_cpu", "the run folder (stages, provenance, summary.md)")
    seed: int = _f(0, "data, initialisation and batch order")
    parallel: Any = _f(True, "true: the independent per-tokenizer stage chains run side by side, one process "
                       "each (same results as false) | false | auto (one process per idle core)")
    threads: Any = _f("auto", "torch threads of the main process: auto (the cores not already busy, >= 1) | an "
                      "integer >= 1 | null (torch's default)")
    restart_from: Optional[str] = _f(None, "redo these stages and every stage after them: stage names or patterns, "
                                     "comma-separated (e.g. tokenizer_vcq, or 'ar_*'); other finished stages are kept")
    data: DataConfig = _f(factory=DataConfig)
    tokenizer: TokenizerConfig = _f(factory=TokenizerConfig)
    variants: Dict[str, VariantConfig] = _f(doc="one tokenizer per entry", factory=_demo_variants)
    analysis: AnalysisConfig = _f(factory=AnalysisConfig)
    ar: ARConfig = _f(factory=ARConfig)
    sampling: SamplingConfig = _f(factory=SamplingConfig)
    metrics: MetricsConfig = _f(factory=MetricsConfig)


# keys that change how a run executes but not what any stage computes (never part of provenance)
OPERATIONAL_KEYS = ("run_dir", "parallel", "threads", "restart_from")


def variant_schedule(cfg: Any, name: str):
    """The :class:`CodebookSchedule` of tokenizer variant ``name`` (the only place a demo variant's K(i)
    comes from: the one builder, ``ScheduleConfig``)."""
    from vcq_plugin.schedule import ScheduleConfig

    v, tok = cfg.variants[name], cfg.tokenizer
    return ScheduleConfig(name=str(v.quantizer), k_max=int(tok.codebook_size),
                          seq_len=int(tok.num_latent_tokens if v.seq_len is None else v.seq_len),
                          k_min=v.k_min, power=v.power).build()


def dataset_size(data: Any) -> int | None:
    """N, the number of images the data config gives (None: only known once an ImageFolder is listed)."""
    if data.num_images is not None:
        return int(data.num_images)
    return DIGITS_IMAGES if _enum_value(data.name) == "digits" else None


def holdout_count(num_images: int, fraction: float) -> int:
    """Held-out images of a split (the rule of ``data.holdout_split``): round(fraction * N), at least 1."""
    return max(1, int(round(fraction * num_images)))


def check_demo(cfg: DictConfig) -> None:
    """Cross-field rules of the demo schema."""
    from vcq_plugin.registry import SAMPLERS

    d, tok = cfg.data, cfg.tokenizer
    name = _enum_value(d.name)
    if name == "shapes":
        if d.num_images is None:
            raise ConfigError("data.num_images: the shapes dataset is made on the fly and needs a number of images")
        if d.num_classes > SHAPES_CLASSES:
            raise ConfigError(f"data.num_classes={d.num_classes}: the shapes dataset has {SHAPES_CLASSES} classes; "
                              f"allowed 2..{SHAPES_CLASSES}")
    elif name == "digits" and d.num_classes != DIGITS_CLASSES:
        raise ConfigError(f"data.num_classes={d.num_classes}: the digits dataset has {DIGITS_CLASSES} classes; "
                          f"set data.num_classes={DIGITS_CLASSES}")
    elif name == "imagefolder" and not d.path:
        raise ConfigError("data.path is required for data.name=imagefolder (the ImageFolder root)")
    n = dataset_size(d)
    if n is not None:
        check_split(n, float(d.holdout_fraction), int(d.num_classes))
    if d.image_size % tok.patch_size:
        raise ConfigError(f"data.image_size={d.image_size} must be divisible by tokenizer.patch_size={tok.patch_size}")
    if not cfg.variants:
        raise ConfigError("variants: give at least one tokenizer variant, e.g. variants={vcq: {quantizer: vcq_cosine}}")
    for vname, v in cfg.variants.items():
        if v.seq_len is not None and v.seq_len != tok.num_latent_tokens:
            raise ConfigError(
                f"variants.{vname}.seq_len={v.seq_len} but the tokenizer produces {tok.num_latent_tokens} tokens "
                "(tokenizer.num_latent_tokens); the schedule must have one size per token: remove seq_len or make "
                "them equal")
        try:
            variant_schedule(cfg, vname)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"variants.{vname}: {e}") from None
    if cfg.analysis.probe_k > tok.num_latent_tokens:
        raise ConfigError(f"analysis.probe_k={cfg.analysis.probe_k} > tokenizer.num_latent_tokens="
                          f"{tok.num_latent_tokens}: the probe cannot see more positions than there are")
    for i, t in enumerate(cfg.ar.train_on):
        if t not in cfg.variants:
            raise ConfigError(f"ar.train_on[{i}]={t!r} is not a tokenizer variant{_did_you_mean(t, list(cfg.variants))}; "
                              f"variants: {', '.join(cfg.variants)}")
    needed = tok.codebook_size + d.num_classes + 1
    if cfg.ar.vocab_size is not None and cfg.ar.vocab_size < needed:
        raise ConfigError(
            f"ar.vocab_size={cfg.ar.vocab_size}: K_max={tok.codebook_size} image tokens + {d.num_classes} classes + "
            f"1 null class need {needed}; raise ar.vocab_size to >= {needed} (or null) or lower the codebook size")
    if cfg.sampling.sampler not in SAMPLERS:
        raise ConfigError(f"sampling.sampler={cfg.sampling.sampler!r} is not a sampler"
                          f"{_did_you_mean(cfg.sampling.sampler, SAMPLERS.names())}; allowed: "
                          f"{', '.join(sorted(SAMPLERS.names()))}")
    threads = cfg.threads
    if threads is not None and threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                                                       or threads < 1):
        raise ConfigError(f"threads={threads!r}: allowed auto, null or an integer >= 1")
    if cfg.parallel not in (True, False, "auto"):
        raise ConfigError(f"parallel={cfg.parallel!r}: allowed true, false or auto")


def check_split(num_images: int, fraction: float, num_classes: int, where: str = "data") -> None:
    """Enough held-out and training images for every class (one each at the very least)."""
    held = holdout_count(num_images, fraction)
    train = num_images - held
    if held < num_classes or train < num_classes:
        raise ConfigError(
            f"{where}.num_images={num_images} with {where}.holdout_fraction={fraction} gives {train} training and "
            f"{held} held-out images for {num_classes} classes; both need at least one image per class: raise "
            f"{where}.num_images or change {where}.holdout_fraction")


def _existing(value: Any, key: str, hint: str) -> Path:
    p = Path(os.path.expanduser(str(value)))
    if not p.exists():
        raise ConfigError(f"{key}={str(value)!r} does not exist; {hint}")
    return p


def check_demo_paths(cfg: DictConfig) -> None:
    if _enum_value(cfg.data.name) == "imagefolder":
        root = _existing(cfg.data.path, "data.path", "point it at your ImageFolder root")
        classes = [p for p in root.iterdir() if p.is_dir()]
        if len(classes) < cfg.data.num_classes:
            raise ConfigError(f"data.path={cfg.data.path!r} has {len(classes)} class folders but data.num_classes="
                              f"{cfg.data.num_classes}")
    w = cfg.metrics.inception_weights
    if w and not Path(os.path.expanduser(str(w))).is_file():
        raise ConfigError(f"metrics.inception_weights={w!r} is not a file (gFID/rFID need local Inception weights; "
                          "set it to null to skip them)")


# ====================================================================== full-scale hosts: learning-rate schedule
class LrSchedule(enum.Enum):
    paper = "paper"  # Appendix A: linear warm-up, hold at the peak, linear decay (vcq_plugin.patches.lr_schedules)
    host = "host"    # the host's own schedule, upstream code unchanged (1d-tokenizer: lr_scheduler.scheduler;
    #                  LlamaGen train_c2i.py: constant learning rate, no warm-up)


LR_SCHEDULE_DOC = ("paper: Appendix A's warm-up / hold / linear decay through a drift-checked hook | host: the "
                   "host's own schedule, exactly upstream")


# ====================================================================== host 1d-tokenizer (full-scale TiTok)
@dataclass
class Titok1dRecipe:
    stage: int = _f(1, "1d-tokenizer's TiTok stage: 1 = proxy codes (needs the MaskGIT-VQGAN weight as a local "
                    "file), 2 = decoder fine-tuning", ge=1, le=2)
    evaluate: bool = _f(True, "the host's periodic rFID / IS (loads Inception); false = off, nothing loaded")


@dataclass
class Titok1dVcq:
    k_min: Optional[int] = _f(None, "K(0) (not for constant); null = 2", ge=1)
    power: Optional[float] = _f(None, "p of vcq_power; null = 2.5", gt=0)


@open_section
@dataclass
class Titok1dVqModel:
    quantizer: Optional[str] = _f(None, "vcq_cosine | vcq_linear | vcq_power | vcq_power<p> | constant (null = the "
                                  "host's own quantizer)")
    vcq: Titok1dVcq = _f(factory=Titok1dVcq)
    codebook_size: int = _f(MISSING, "K_max", ge=2)
    num_latent_tokens: int = _f(MISSING, "L", ge=1)
    finetune_decoder: bool = _f(False, "stage 2 of the host's recipe")
    pretrained_tokenizer_weight: Optional[str] = _f(None, "the MaskGIT-VQGAN proxy tokenizer, a local file "
                                                    "(required unless finetune_decoder)")


@open_section
@dataclass
class Titok1dModel:
    vq_model: Titok1dVqModel = _f(factory=Titok1dVqModel)


@open_section
@dataclass
class Titok1dExperiment:
    output_dir: str = _f(MISSING, "the host's output folder (accelerate state, checkpoints, logs)")
    max_train_examples: int = _f(MISSING, "images per epoch", ge=1)
    save_every: int = _f(MISSING, "steps between checkpoints", ge=1)


@open_section
@dataclass
class Titok1dDatasetParams:
    train_shards_path_or_url: str = _f(MISSING, "webdataset shards of the training images")
    eval_shards_path_or_url: str = _f(MISSING, "webdataset shards of the evaluation images")


@open_section
@dataclass
class Titok1dDataset:
    params: Titok1dDatasetParams = _f(factory=Titok1dDatasetParams)


@open_section
@dataclass
class Titok1dTraining:
    max_train_steps: int = _f(MISSING, "optimizer steps", ge=1)
    per_gpu_batch_size: int = _f(MISSING, "images per GPU per step", ge=1)
    gradient_accumulation_steps: int = _f(1, "", ge=1)


@open_section
@dataclass
class Titok1dLrParams:
    warmup_steps: int = _f(MISSING, "linear warm-up from 0 to learning_rate (optimizer updates)", ge=0)
    hold_steps: Optional[int] = _f(None, "updates held at the peak after the warm-up, then linear decay to end_lr "
                                   "(lr_schedule: paper only; the host's schedulers have none)", ge=0)
    end_lr: float = _f(MISSING, "the learning rate at training.max_train_steps", ge=0)


@open_section
@dataclass
class Titok1dLrScheduler:
    scheduler: str = _f(MISSING, "the host's scheduler (cosine | constant), used with lr_schedule: host; "
                        "lr_schedule: paper runs vcq_warmup_hold_linear instead")
    params: Titok1dLrParams = _f(factory=Titok1dLrParams)


@dataclass
class Titok1dConfig:
    """``host: 1d-tokenizer``: bytedance/1d-tokenizer's own config tree plus ``host`` / ``recipe`` /
    ``lr_schedule``. Keys the recipe reads are typed here; the host's other keys pass through to it unchanged."""

    host: str = _f("1d-tokenizer", "")
    lr_schedule: LrSchedule = _f(LrSchedule.host, LR_SCHEDULE_DOC)
    recipe: Titok1dRecipe = _f(factory=Titok1dRecipe)
    experiment: Titok1dExperiment = _f(factory=Titok1dExperiment)
    model: Titok1dModel = _f(factory=Titok1dModel)
    losses: Dict[str, Any] = _f(doc="the host's losses section", factory=dict)
    dataset: Titok1dDataset = _f(factory=Titok1dDataset)
    optimizer: Dict[str, Any] = _f(doc="the host's optimizer section", factory=dict)
    lr_scheduler: Titok1dLrScheduler = _f(factory=Titok1dLrScheduler)
    training: Titok1dTraining = _f(factory=Titok1dTraining)


def titok1d_lr_schedule(cfg: Any):
    """The :class:`~vcq_plugin.patches.lr_schedules.LinearLRSchedule` of a 1d-tokenizer config with
    ``lr_schedule: paper`` (None with ``host``), built by the hook's own key mapping."""
    from vcq_plugin.patches.lr_schedules import SCHEDULER_NAME, schedule_from_1d_config

    if _enum_value(cfg.get("lr_schedule")) != "paper":
        return None
    view = OmegaConf.create({"lr_scheduler": {"scheduler": SCHEDULER_NAME,
                                              "params": OmegaConf.to_container(cfg.lr_scheduler.params, resolve=True)},
                             "training": {"max_train_steps": int(cfg.training.max_train_steps)}})
    return schedule_from_1d_config(view)


def titok1d_schedule(cfg: Any):
    """The schedule a 1d-tokenizer config describes (the host patch's own key mapping)."""
    from vcq_plugin.patches.titok_1d import schedule_from_config

    return schedule_from_config(OmegaConf.create(host_vcq_keys(cfg)))


def host_vcq_keys(cfg: Any) -> dict:
    """``{"model": {"vq_model": ...}}`` as the host reads it: unset (null) VCQ options left out."""
    vq = OmegaConf.to_container(cfg.model.vq_model, resolve=True)
    vq["vcq"] = {k: v for k, v in (vq.get("vcq") or {}).items() if v is not None}
    return {"model": {"vq_model": vq}}


@open_section
@dataclass
class Titok1dTokenizerFile:
    """A 1d-tokenizer config read for its tokenizer only (``tokenizer.config`` of a llamagen config):
    ``model.vq_model`` is typed and checked, the other sections pass."""

    host: str = _f("1d-tokenizer", "")
    model: Titok1dModel = _f(factory=Titok1dModel)


def check_titok1d_model(cfg: DictConfig) -> None:
    vq = cfg.model.vq_model
    try:
        titok1d_schedule(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.vq_model.quantizer={vq.quantizer!r} / model.vq_model.vcq: {e}") from None


def check_titok1d(cfg: DictConfig) -> None:
    vq = cfg.model.vq_model
    check_titok1d_model(cfg)
    if not vq.finetune_decoder and not vq.pretrained_tokenizer_weight:
        raise ConfigError("model.vq_model.pretrained_tokenizer_weight must name the MaskGIT-VQGAN proxy tokenizer "
                          "(a local file) for stage 1 (finetune_decoder: false)")
    _check_titok1d_lr(cfg)
    if cfg.recipe.stage == 2 and not vq.finetune_decoder:
        raise ConfigError("recipe.stage=2 needs model.vq_model.finetune_decoder=true (and experiment.init_weight="
                          "<stage-1 weights>)")


def _check_titok1d_lr(cfg: DictConfig) -> None:
    from vcq_plugin.patches.lr_schedules import SCHEDULER_NAME

    if _enum_value(cfg.lr_schedule) == "host":
        if cfg.lr_scheduler.scheduler == SCHEDULER_NAME:
            raise ConfigError(f"lr_scheduler.scheduler={SCHEDULER_NAME!r} is the paper's schedule: set lr_schedule: "
                              "paper (lr_schedule: host runs the host's own cosine | constant)")
        return
    if cfg.lr_scheduler.params.hold_steps is None:
        raise ConfigError("lr_schedule: paper needs lr_scheduler.params.hold_steps (updates at the peak after the "
                          "warm-up; 0 = decay right after it)")
    try:
        titok1d_lr_schedule(cfg)
    except ValueError as e:
        raise ConfigError(f"lr_schedule: paper with lr_scheduler.params / training.max_train_steps: {e}") from None


def check_titok1d_paths(cfg: DictConfig) -> None:
    """The host submodule first, then the data shards, then the proxy weights."""
    from recipes.hosts.llamagen import host_root

    host_root("1d-tokenizer")  # HostMissingError naming the submodule command
    for key in ("train_shards_path_or_url", "eval_shards_path_or_url"):
        url = str(cfg.dataset.params[key])
        local = url.split("{")[0]
        if "://" not in url and not Path(os.path.dirname(local) or ".").exists():
            raise ConfigError(f"dataset.params.{key}={url!r}: the folder {os.path.dirname(local)!r} does not exist")
    vq = cfg.model.vq_model
    if not vq.finetune_decoder and not Path(str(vq.pretrained_tokenizer_weight)).is_file():
        raise ConfigError(
            f"model.vq_model.pretrained_tokenizer_weight={str(vq.pretrained_tokenizer_weight)!r} is not a local "
            "file: 1d-tokenizer's stage-1 TiTok learns MaskGIT-VQGAN proxy codes and needs that weight (download "
            "maskgit-vqgan-imagenet-f16-256.bin from the fun-research/TiTok Hugging Face repo yourself; this "
            "recipe downloads nothing)")


# ====================================================================== host llamagen (full-scale AR)
@dataclass
class LlamaGenTokenizer:
    config: str = _f(MISSING, "the 1d-tokenizer recipe config whose codes the GPT learns")
    weights: str = _f(MISSING, "TiTok weights saved by the tokenizer recipe")


@dataclass
class LlamaGenData:
    path: str = _f(MISSING, "ImageFolder of the training images (extract)")
    num_classes: int = _f(MISSING, "", ge=2)
    image_size: int = _f(MISSING, "", ge=8)
    crop_range: float = _f(MISSING, "LlamaGen's ten-crop: centre crop at crop_range x size", ge=1)
    code_path: str = _f(MISSING, "LlamaGen's code folder; must contain 'flip'")
    num_workers: int = _f(8, "data-loader workers of extract", ge=0)


@dataclass
class LlamaGenGpt:
    model: str = _f(MISSING, "LlamaGen GPT_models name (or GPT-VCQ-XL)")
    vocab_size: int = _f(MISSING, ">= K_max", ge=2)
    downsample_size: int = _f(16, "(image_size / downsample_size)^2 = the tokenizer's L", ge=1)
    cls_token_num: int = _f(1, "", ge=1)
    dropout_p: float = _f(MISSING, "", ge=0, lt=1)
    token_dropout_p: float = _f(MISSING, "", ge=0, lt=1)
    drop_path_rate: float = _f(MISSING, "", ge=0, lt=1)


@dataclass
class LlamaGenTrain:
    nproc_per_node: int = _f(MISSING, "GPUs", ge=1)
    results_dir: str = _f(MISSING, "")
    global_batch_size: int = _f(MISSING, "", ge=1)
    epochs: int = _f(MISSING, "", ge=1)
    lr: float = _f(MISSING, "", gt=0)
    weight_decay: float = _f(MISSING, "", ge=0)
    beta1: float = _f(MISSING, "", ge=0, lt=1)
    beta2: float = _f(MISSING, "", ge=0, lt=1)
    max_grad_norm: float = _f(MISSING, "", ge=0)
    mixed_precision: str = _f(MISSING, "none | fp16 | bf16")
    ckpt_every: int = _f(MISSING, "", ge=1)
    num_workers: int = _f(MISSING, "", ge=0)
    ema: bool = _f(False, "")
    no_compile: bool = _f(False, "")
    resume_from: Optional[str] = _f(None, "a LlamaGen checkpoint (.pt) to resume from (train_c2i --gpt-ckpt)")
    warmup_steps: Optional[int] = _f(None, "lr_schedule: paper: linear warm-up from 0 to lr (optimizer updates)", ge=0)
    hold_steps: Optional[int] = _f(None, "lr_schedule: paper: updates held at lr after the warm-up", ge=0)
    total_steps: Optional[int] = _f(None, "lr_schedule: paper: the update at which the linear decay reaches end_lr",
                                    ge=1)
    end_lr: Optional[float] = _f(None, "lr_schedule: paper: the learning rate at total_steps and after", ge=0)
    log_every: int = _f(100, "", ge=1)
    master_port: int = _f(29500, "", ge=1)


@dataclass
class LlamaGenSampling:
    preset: str = _f(MISSING, "a vcq_plugin sampler registry name (paper Table 7 presets)")
    checkpoint: Optional[str] = _f(None, "LlamaGen checkpoint (.pt) of the train stage")
    use_ema: bool = _f(False, "")
    num_samples: int = _f(MISSING, "", ge=1)
    batch_size: int = _f(MISSING, "", ge=1)
    num_png: int = _f(1000, "PNGs written (all samples go to samples.npz)", ge=0)
    guidance_scale: Optional[float] = _f(None, "override the preset's", ge=0)
    guidance_power: Optional[float] = _f(None, "override the preset's", gt=0)
    temperature: Optional[float] = _f(None, "override the preset's", gt=0)
    top_k: Optional[int] = _f(None, "override the preset's", ge=0)
    top_p: Optional[float] = _f(None, "override the preset's", gt=0, le=1)


@dataclass
class LlamaGenConfig:
    """``host: llamagen``: recipes/run_llamagen_vcq.py (extract / train / sample)."""

    host: str = _f("llamagen", "")
    lr_schedule: LrSchedule = _f(LrSchedule.host, LR_SCHEDULE_DOC)
    run_dir: str = _f(MISSING, "")
    seed: int = _f(0, "")
    tokenizer: LlamaGenTokenizer = _f(factory=LlamaGenTokenizer)
    data: LlamaGenData = _f(factory=LlamaGenData)
    gpt: LlamaGenGpt = _f(factory=LlamaGenGpt)
    train: LlamaGenTrain = _f(factory=LlamaGenTrain)
    sampling: LlamaGenSampling = _f(factory=LlamaGenSampling)


def check_llamagen(cfg: DictConfig) -> None:
    from recipes.hosts.llamagen import tokenizer_config
    from vcq_plugin.registry import SAMPLERS

    tok = tokenizer_config(cfg)
    k_max = int(tok.model.vq_model.codebook_size)
    if k_max > cfg.gpt.vocab_size:
        raise ConfigError(f"gpt.vocab_size={cfg.gpt.vocab_size}: K_max={k_max} (the tokenizer's codebook_size) is "
                          f"larger; set gpt.vocab_size >= {k_max}")
    seq = int(tok.model.vq_model.num_latent_tokens)
    block = (cfg.data.image_size // cfg.gpt.downsample_size) ** 2
    if seq != block:
        raise ConfigError(f"the tokenizer gives {seq} tokens but LlamaGen's GPT block is (data.image_size / "
                          f"gpt.downsample_size)^2 = {block}; adjust data.image_size or gpt.downsample_size")
    if "flip" not in str(cfg.data.code_path):
        raise ConfigError(f"data.code_path={cfg.data.code_path!r} must contain 'flip': LlamaGen's CustomDataset "
                          "draws one of the ten-crop views only when its directory name contains 'flip'")
    if cfg.sampling.preset not in SAMPLERS:
        raise ConfigError(f"sampling.preset={cfg.sampling.preset!r} is not a sampler"
                          f"{_did_you_mean(cfg.sampling.preset, SAMPLERS.names())}")
    _check_llamagen_lr(cfg)


LLAMAGEN_LR_KEYS = ("warmup_steps", "hold_steps", "total_steps", "end_lr")


def llamagen_lr_schedule(cfg: Any):
    """The :class:`~vcq_plugin.patches.lr_schedules.LinearLRSchedule` of a llamagen config with
    ``lr_schedule: paper`` (None with ``host``: train_c2i.py's constant learning rate)."""
    from vcq_plugin.patches.lr_schedules import LinearLRSchedule

    if _enum_value(cfg.lr_schedule) != "paper":
        return None
    t = cfg.train
    return LinearLRSchedule(peak_lr=float(t.lr), end_lr=float(t.end_lr), warmup_steps=int(t.warmup_steps),
                            hold_steps=int(t.hold_steps), total_steps=int(t.total_steps))


def _check_llamagen_lr(cfg: DictConfig) -> None:
    t = cfg.train
    if _enum_value(cfg.lr_schedule) == "host":  # train_c2i.py's constant lr: the schedule keys are not used
        return
    missing = [k for k in LLAMAGEN_LR_KEYS if t[k] is None]
    if missing:
        raise ConfigError(f"lr_schedule: paper needs {', '.join('train.' + k for k in missing)}")
    try:
        llamagen_lr_schedule(cfg)
    except ValueError as e:
        raise ConfigError(f"lr_schedule: paper with train.lr / train.{{{', '.join(LLAMAGEN_LR_KEYS)}}}: {e}") from None


# ====================================================================== schemas by host
@dataclass(frozen=True)
class Schema:
    """A recipe's config schema: the dataclass tree, its cross-field rules and its path checks."""

    name: str
    cls: type
    check: Callable[[DictConfig], None] = lambda cfg: None
    check_paths: Callable[[DictConfig], None] = lambda cfg: None


SCHEMAS: Dict[str, Schema] = {
    "titok-pytorch": Schema("titok-pytorch", DemoConfig, check_demo, check_demo_paths),
    "1d-tokenizer": Schema("1d-tokenizer", Titok1dConfig, check_titok1d, check_titok1d_paths),
    "llamagen": Schema("llamagen", LlamaGenConfig, check_llamagen),
}
TITOK1D_TOKENIZER_FILE = Schema("1d-tokenizer (model only)", Titok1dTokenizerFile, check_titok1d_model)


@dataclass(frozen=True)
class LoadedConfig:
    """A config that passed every check of its schema (validation runs once, in :func:`load_config`).

    ``cfg`` is the typed, read-only OmegaConf tree; ``source`` / ``overrides`` say how it was composed.
    """

    cfg: DictConfig
    schema: Schema
    source: Path
    overrides: tuple[str, ...]

    @property
    def host(self) -> str:
        return str(self.cfg.host)

    def to_container(self) -> dict:
        """Plain dict (enums as their names), e.g. for YAML / JSON."""
        return OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)


# ====================================================================== loading
def load_config(path: str | os.PathLike, overrides: Sequence[str] = (), *, schema: Schema | None = None,
                check_paths: bool = True) -> LoadedConfig:
    """Read ``path`` + dotlist ``overrides`` into the host's schema and run every check (see module doc).

    Raises :class:`ConfigError` (or ``HostMissingError`` from a full-scale path check), before any work.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = OmegaConf.load(p)
    except Exception as e:  # yaml errors: say which file
        raise ConfigError(f"{p}: not a valid YAML config ({e})") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{p}: a recipe config is a mapping of keys, got {type(raw).__name__}")
    parsed = [_parse_override(o) for o in overrides]
    if schema is None:
        schema = _schema_for_host(raw, parsed, p)
    base = OmegaConf.structured(schema.cls)
    _open_sections(base, schema.cls)
    raw_plain = OmegaConf.to_container(raw, resolve=False)
    _raise_unknown_keys(raw_plain, schema.cls, f"{p}")
    cfg = _merge(base, raw, schema.cls, whole_dicts=True, where=str(p))
    for key, value, text in parsed:
        if value is _DELETE:
            _delete(cfg, key, schema.cls)
            continue
        layer = OmegaConf.from_dotlist([text])
        _raise_unknown_keys(OmegaConf.to_container(layer, resolve=False), schema.cls, f"override {text!r}")
        cfg = _merge(cfg, layer, schema.cls, whole_dicts=_is_dict_field(schema.cls, key), where=f"override {text!r}",
                     only=key)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required key(s) not set: {', '.join(missing)} (in {p} or as key=value overrides)")
    errors = _range_errors(cfg, schema.cls, "")
    if errors:
        raise ConfigError("invalid value(s):\n  " + "\n  ".join(errors))
    schema.check(cfg)
    if check_paths:
        schema.check_paths(cfg)
    OmegaConf.set_readonly(cfg, True)
    return LoadedConfig(cfg=cfg, schema=schema, source=p, overrides=tuple(overrides))


def config_from_container(container: Mapping[str, Any], schema: Schema) -> DictConfig:
    """Re-materialise an already validated config (e.g. in a worker process) as the typed tree: types
    only, no checks (they ran in the process that loaded it)."""
    base = OmegaConf.structured(schema.cls)
    _open_sections(base, schema.cls)
    cfg = _merge(base, OmegaConf.create(dict(container)), schema.cls, whole_dicts=True, where="config")
    OmegaConf.set_readonly(cfg, True)
    return cfg


_DELETE = object()


def _parse_override(text: str) -> tuple[str, Any, str]:
    if not isinstance(text, str):
        raise ConfigError(f"overrides are strings key=value, got {text!r}")
    if text.startswith("~"):
        key = text[1:].split("=", 1)[0]
        if not key:
            raise ConfigError(f"override {text!r}: ~key removes a key, e.g. ~variants.constant")
        return key, _DELETE, text
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (or ~key to remove a mapping entry)")
    key, value = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    return key, value, text


def _schema_for_host(raw: DictConfig, parsed: list, where: Path) -> Schema:
    host = raw.get("host")
    for key, value, _ in parsed:
        if key == "host" and value is not _DELETE:
            host = value
    if host is None:
        raise ConfigError(f"{where}: the config names no host (host: titok-pytorch | 1d-tokenizer | llamagen)")
    if host not in SCHEMAS:
        raise ConfigError(f"host={host!r} is not a known host{_did_you_mean(str(host), list(SCHEMAS))}; allowed: "
                          f"{', '.join(SCHEMAS)}")
    return SCHEMAS[host]


def _open_sections(node: DictConfig, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    if getattr(cls, "__vcq_open__", False):
        OmegaConf.set_struct(node, False)
    for f in dataclasses.fields(cls):
        sub = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(sub) and isinstance(node.get(f.name), DictConfig):
            _open_sections(node[f.name], sub)


def _merge(base: DictConfig, layer: DictConfig, cls: type, *, whole_dicts: bool, where: str,
           only: str | None = None) -> DictConfig:
    """``OmegaConf.merge`` with mapping fields replaced (not merged) when ``layer`` gives them whole."""
    if whole_dicts:
        for key in _dict_field_paths(cls):
            if only is not None and key != only:
                continue
            if OmegaConf.select(layer, key, default=None) is not None and OmegaConf.select(base, key, default=None) is not None:
                with open_dict(base):
                    OmegaConf.update(base, key, {}, merge=False)
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:  # caught by _raise_unknown_keys first; kept for keys under open sections
        raise ConfigError(f"{where}: unknown key {e.full_key!r}") from None
    except ValidationError as e:
        raise ConfigError(_type_error(e, cls, where)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {getattr(e, 'msg', e)}") from None


def _delete(cfg: DictConfig, key: str, cls: type) -> None:
    parent_key, _, leaf = key.rpartition(".")
    if not parent_key or not _is_dict_field(cls, parent_key):
        raise ConfigError(f"~{key}: only entries of a mapping can be removed (e.g. ~variants.constant); "
                          f"mappings: {', '.join(_dict_field_paths(cls)) or 'none'}")
    parent = OmegaConf.select(cfg, parent_key)
    if parent is None or leaf not in parent:
        have = list(parent.keys()) if parent is not None else []
        raise ConfigError(f"~{key}: {parent_key} has no entry {leaf!r}{_did_you_mean(leaf, have)}")
    with open_dict(cfg):
        del parent[leaf]


# ---------------------------------------------------------------------- schema introspection
def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def _dict_value_type(tp: Any) -> Any:
    """For ``Dict[str, X]`` the value type X, else None."""
    tp = _unwrap_optional(tp)
    if typing.get_origin(tp) in (dict, Dict):
        return typing.get_args(tp)[1]
    return None


def _dict_field_paths(cls: type, prefix: str = "") -> list[str]:
    """Dotted paths of the ``Dict[str, dataclass]`` fields (mappings the user composes, e.g. variants)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        vt = _dict_value_type(tp)
        if vt is not None and dataclasses.is_dataclass(vt):
            out.append(prefix + f.name)
        sub = _unwrap_optional(tp)
        if dataclasses.is_dataclass(sub):
            out += _dict_field_paths(sub, f"{prefix}{f.name}.")
    return out


def _is_dict_field(cls: type, key: str) -> bool:
    return key in _dict_field_paths(cls)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key the schema declares (entries of mappings as ``<name>``)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        out.append(key)
        sub = _unwrap_optional(tp)
        if dataclasses.is_dataclass(sub):
            out += _all_keys(sub, key + ".")
        vt = _dict_value_type(tp)
        if vt is not None and dataclasses.is_dataclass(vt):
            out += _all_keys(vt, key + ".<name>.")
    return out


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _raise_unknown_keys(tree: Any, cls: type, where: str) -> None:
    problems = _unknown_keys(tree, cls, "", cls)
    if problems:
        lines = [f"unknown key {key!r}" + (f": did you mean {hint!r}?" if hint else "") for key, hint in problems]
        raise ConfigError(f"{where}: " + "; ".join(lines) + " (every key and its meaning: recipes/pipeline/config.py)")


def _unknown_keys(tree: Any, cls: type, prefix: str, root: type) -> list[tuple[str, str | None]]:
    if not isinstance(tree, Mapping):
        return []
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: list[tuple[str, str | None]] = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if k not in names:
            if getattr(cls, "__vcq_open__", False):
                continue
            everywhere = [x for x in _all_keys(root) if "<name>" not in x]
            elsewhere = [x for x in everywhere if x.rsplit(".", 1)[-1] == k]  # the right name in the wrong section
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            if elsewhere:
                hint = elsewhere[0]
            elif close:
                hint = prefix + close[0]
            else:
                found = difflib.get_close_matches(key, everywhere, n=1, cutoff=0.6)
                hint = found[0] if found else None
            out.append((key, hint))
            continue
        tp = hints[k]
        sub = _unwrap_optional(tp)
        vt = _dict_value_type(tp)
        if dataclasses.is_dataclass(sub):
            out += _unknown_keys(v, sub, key + ".", root)
        elif vt is not None and dataclasses.is_dataclass(vt) and isinstance(v, Mapping):
            for name, entry in v.items():
                out += _unknown_keys(entry, vt, f"{key}.{name}.", root)
    return out


def _type_name(tp: Any) -> str:
    opt = _is_optional(tp)
    tp = _unwrap_optional(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        name = "one of " + " | ".join(m.name for m in tp)
    elif tp is Any:
        name = "any value"
    elif typing.get_origin(tp) in (list, List):
        name = f"a list of {_type_name(typing.get_args(tp)[0])}"
    elif typing.get_origin(tp) in (dict, Dict):
        name = "a mapping"
    elif dataclasses.is_dataclass(tp):
        name = f"a section ({tp.__name__})"
    else:
        name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))
    return name + (" or null" if opt else "")


def _field_type(cls: type, dotted: str) -> Any:
    tp: Any = cls
    for part in dotted.split("."):
        inner = _unwrap_optional(tp)
        vt = _dict_value_type(inner)
        if vt is not None:
            tp = vt
            continue
        if typing.get_origin(inner) in (list, List):
            tp = typing.get_args(inner)[0]
            continue
        if not dataclasses.is_dataclass(inner):
            return None
        hints = typing.get_type_hints(inner)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _type_error(e: ValidationError, cls: type, where: str) -> str:
    key = str(getattr(e, "full_key", "") or "")
    tp = _field_type(cls, key) if key else None
    msg = str(getattr(e, "msg", e)).splitlines()[0]
    expected = f"; expected {_type_name(tp)}" if tp is not None and "expected" not in msg else ""
    return f"{where}: {key or 'value'}: {msg}{expected}"


def _range_errors(node: Any, cls: type, prefix: str) -> list[str]:
    """Every declared range (``ge`` / ``gt`` / ``le`` / ``lt``) violated in ``node``, as 'key=value: rule'."""
    if not isinstance(node, DictConfig):
        return []
    hints = typing.get_type_hints(cls)
    errors = []
    for f in dataclasses.fields(cls):
        if f.name not in node or OmegaConf.is_missing(node, f.name):
            continue
        tp, v, key = hints[f.name], node[f.name], prefix + f.name
        sub, vt = _unwrap_optional(tp), _dict_value_type(tp)
        if dataclasses.is_dataclass(sub):
            errors += _range_errors(v, sub, key + ".")
        elif vt is not None and dataclasses.is_dataclass(vt) and isinstance(v, DictConfig):
            for name in v:
                errors += _range_errors(v[name], vt, f"{key}.{name}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            m = f.metadata
            rules = [("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                     ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)]
            bad = [f"{sym} {m[r]:g}" for r, sym, ok in rules if r in m and not ok(v, m[r])]
            if bad:
                allowed = " and ".join(f"{sym} {m[r]:g}" for r, sym, _ in rules if r in m)
                errors.append(f"{key}={v}: must be {allowed}" + (f" ({m['doc']})" if m.get("doc") else ""))
    return errors


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def schema_defaults(schema: Schema) -> DictConfig:
    """The schema's defaults as a config tree (e.g. to tell how far a run is from them)."""
    return OmegaConf.structured(schema.cls)


def dotted_items(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested mapping to ``{"a.b": value}`` (lists kept whole)."""
    if isinstance(tree, DictConfig):
        tree = OmegaConf.to_container(tree, resolve=True, enum_to_str=True)
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping) and v:
                out.update(dotted_items(v, key + "."))
            else:
                out[key] = v
    return out
