"""The reproduction study's config schema (``recipes/configs/study_*.yaml``): every key, type, default
and range, checked once by ``recipes.pipeline.config.load_config(path, overrides, schema=STUDY_SCHEMA)``
before any work (unknown keys with the closest valid one, types, ranges, then :func:`check_study`).

Sections the study shares with the demo reuse the demo's dataclasses (``recipes/pipeline/config.py``):
the tokenizer (plus ``restarts``) and the AR model (minus the demo's ``train_on``). The mappings
``arms`` and ``datasets`` given in a YAML replace the (empty) defaults whole.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig

from recipes.pipeline.config import ARModelConfig, ConfigError, Schema, TokenizerConfig, _did_you_mean, _f, check_split

MEAN_OF = "mean_of_"  # arms.<a>.k_max: mean_of_<arm> = round(mean K(i) of that arm's schedule)


class RestartRule(enum.Enum):
    per_position = "per_position"  # vcq_plugin.restarts.CodebookRestarts (home-group rule); the only one


class Colours(enum.Enum):
    dark = "dark"
    uniform = "uniform"


class StudyDatasetName(enum.Enum):
    study_arrangements = "study_arrangements"
    study_shapes = "study_shapes"
    digits = "digits"


class Reference(enum.Enum):
    train = "train"      # the real training images (as ADM's reference batch)
    heldout = "heldout"  # the held-out real images


@dataclass
class ArmConfig:
    """One tokenizer schedule; arms differ only in K(i)."""

    quantizer: str = _f(MISSING, "schedule name: constant | vcq_cosine | vcq_linear | vcq_power")
    k_min: Optional[int] = _f(None, "K(0) (VCQ schedules; null = 2)", ge=1)
    power: Optional[float] = _f(None, "p of vcq_power (null = 2.5)", gt=0)
    k_max: Any = _f(None, "null = tokenizer.codebook_size; an integer >= 2; or mean_of_<arm> (constant arms: "
                    "K = round(mean K(i) of that arm))")


@dataclass
class StudyDataConfig:
    name: Optional[StudyDatasetName] = _f(None, "null = the mapping key (study_arrangements | study_shapes | digits)")
    colours: Optional[Colours] = _f(None, "made data only: dark | uniform (null = dark)")
    num_images: Optional[int] = _f(None, "N images; null = all (digits) or 4000 (made data)", ge=2)
    num_classes: int = _f(MISSING, "classes", ge=2)
    image_size: int = _f(16, "pixels per side", ge=8)
    holdout_fraction: float = _f(0.1, "held-out share", gt=0, lt=1)
    data_seed: int = _f(0, "the data and the split are the same for every study seed")
    seeds: Optional[List[int]] = _f(None, "null = the top-level seeds")
    arms: List[str] = _f(doc="arms run on this dataset (names of the arms mapping)", factory=list)


@dataclass
class StudyTokenizerConfig(TokenizerConfig):
    restarts: RestartRule = _f(RestartRule.per_position, "per_position: vcq_plugin.restarts (home-group rule)")


@dataclass
class StudyARConfig(ARModelConfig):
    """The demo's class-conditional x-transformers decoder (recipes/pipeline/ar.py), same for every arm."""


@dataclass
class ModeConfig:
    sampler: str = _f(MISSING, "a vcq_plugin sampler name (no_cfg, constant_cfg, aware_cfg, ...)")
    guidance_scale: float = _f(0.0, "w of Eq. 4", ge=0)
    guidance_power: float = _f(1.0, "p of the power-cosine guidance schedule", gt=0)
    temperature: float = _f(1.0, "softmax temperature", gt=0)


@dataclass
class StudySamplingConfig:
    per_class: int = _f(100, "samples per class in every mode and arm", ge=1)
    modes: Dict[str, ModeConfig] = _f(doc="guidance modes: none, constant, aware (the report's names)", factory=dict)
    top_k: int = _f(0, "0 = all tokens", ge=0)
    top_p: float = _f(1.0, "nucleus mass", gt=0, le=1)


@dataclass
class StudyClassifierConfig:
    width: int = _f(32, "features = 2 x width", ge=1)
    steps: int = _f(1000, "optimizer steps", ge=1)
    batch_size: int = _f(64, "images per step", ge=1)
    lr: float = _f(3.0e-3, "peak learning rate", gt=0)
    hflip: bool = _f(False, "random horizontal flips (only for mirror-symmetric classes)")
    seed: int = _f(0, "fixed: the same instrument for every study seed")


@dataclass
class StudyMetricsConfig:
    reference: Reference = _f(Reference.train, "FD / precision / recall reference images: train | heldout")
    prc_neighborhood: int = _f(3, "k of the k-NN manifolds", ge=1)


@dataclass
class StudyAnalysisConfig:
    cliff_tolerance: float = _f(0.5, "bits: measured i* = first prefix length with H(x_<=i) >= log2 N - tolerance",
                                gt=0)
    subset_fractions: List[float] = _f(doc="training-token subsets for Table 1 in kind",
                                       factory=lambda: [0.0625, 0.25, 1.0])
    probe_k: int = _f(4, "equal-k probe length", ge=1)
    probe_capacity_of: str = _f("vcq_cosine", "equal-capacity probe: the arm whose C(probe_k) every arm matches")
    probe_test_fraction: float = _f(0.2, "probe test share", gt=0, lt=1)


@dataclass
class StudyConfig:
    """``python recipes/run_study.py``: arms x datasets x seeds (stages in recipes/study/stages.py)."""

    run_dir: str = _f("runs/study_cpu", "the run folder (stages, provenance, report.md / report.json)")
    seeds: List[int] = _f(doc="study seeds: tokenizer init, AR init and sampling", factory=lambda: [0, 1, 2])
    workers: int = _f(2, "worker processes, one unit (dataset, arm, seed) each, torch threads 1", ge=1)
    restart_from: Optional[str] = _f(None, "redo these stages (names or patterns, comma-separated) and every "
                                     "stage after them")
    arms: Dict[str, ArmConfig] = _f(doc="tokenizer schedules", factory=dict)
    datasets: Dict[str, StudyDataConfig] = _f(doc="datasets and the arms each runs", factory=dict)
    tokenizer: StudyTokenizerConfig = _f(factory=StudyTokenizerConfig)
    ar: StudyARConfig = _f(factory=StudyARConfig)
    sampling: StudySamplingConfig = _f(factory=StudySamplingConfig)
    classifier: StudyClassifierConfig = _f(factory=StudyClassifierConfig)
    metrics: StudyMetricsConfig = _f(factory=StudyMetricsConfig)
    analysis: StudyAnalysisConfig = _f(factory=StudyAnalysisConfig)


def dataset_name(cfg: Any, key: str) -> str:
    d = cfg.datasets[key]
    return key if d.name is None else (d.name.value if isinstance(d.name, enum.Enum) else str(d.name))


def dataset_seeds(cfg: Any, key: str) -> list[int]:
    d = cfg.datasets[key]
    return [int(s) for s in (cfg.seeds if d.seeds is None else d.seeds)]


def arm_schedule(cfg: Any, arm: str):
    """The arm's :class:`CodebookSchedule` (built by ``ScheduleConfig``, the one builder)."""
    from vcq_plugin.schedule import ScheduleConfig

    a, tok = cfg.arms[arm], cfg.tokenizer
    k_max = a.k_max
    if k_max is None:
        k_max = int(tok.codebook_size)
    elif isinstance(k_max, str):
        other = k_max[len(MEAN_OF):]
        k_max = int(round(arm_schedule(cfg, other).mean_size))
    return ScheduleConfig(name=str(a.quantizer), k_max=int(k_max), seq_len=int(tok.num_latent_tokens),
                          k_min=a.k_min, power=a.power).build()


def check_study(cfg: DictConfig) -> None:
    """Cross-field rules (after types and ranges)."""
    from vcq_plugin.registry import SAMPLERS

    from .data import STUDY_ARRANGEMENTS, STUDY_SHAPES

    if len(cfg.seeds) < 1 or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds={list(cfg.seeds)}: give distinct seeds (>= 2 for an interval; the issue asks >= 3)")
    if not cfg.arms:
        raise ConfigError("arms: give at least two arms, e.g. constant_kmax: {quantizer: constant}")
    if not cfg.datasets:
        raise ConfigError("datasets: give at least one dataset, e.g. study_arrangements: {num_classes: 8, arms: [...]}")
    tok = cfg.tokenizer
    for name, a in cfg.arms.items():
        k = a.k_max
        if k is not None and not (isinstance(k, int) and not isinstance(k, bool) and k >= 2):
            if not (isinstance(k, str) and k.startswith(MEAN_OF)):
                raise ConfigError(f"arms.{name}.k_max={k!r}: allowed null, an integer >= 2 or {MEAN_OF}<arm>")
            other = k[len(MEAN_OF):]
            if other not in cfg.arms or other == name:
                raise ConfigError(f"arms.{name}.k_max={k!r}: {other!r} is not another arm"
                                  f"{_did_you_mean(other, list(cfg.arms))}")
            if isinstance(cfg.arms[other].k_max, str):
                raise ConfigError(f"arms.{name}.k_max={k!r}: arm {other!r} takes its own K from another arm")
        if isinstance(k, int) and k > tok.codebook_size:
            raise ConfigError(f"arms.{name}.k_max={k} > tokenizer.codebook_size={tok.codebook_size}")
        try:
            arm_schedule(cfg, name)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"arms.{name}: {e}") from None
    if cfg.analysis.probe_capacity_of not in cfg.arms:
        raise ConfigError(f"analysis.probe_capacity_of={cfg.analysis.probe_capacity_of!r} is not an arm"
                          f"{_did_you_mean(cfg.analysis.probe_capacity_of, list(cfg.arms))}")
    if cfg.analysis.probe_k > tok.num_latent_tokens:
        raise ConfigError(f"analysis.probe_k={cfg.analysis.probe_k} > tokenizer.num_latent_tokens={tok.num_latent_tokens}")
    for i, f in enumerate(cfg.analysis.subset_fractions):
        if not 0 < f <= 1:
            raise ConfigError(f"analysis.subset_fractions[{i}]={f}: allowed 0 < fraction <= 1")
    for key, d in cfg.datasets.items():
        name = dataset_name(cfg, key)
        if name not in {e.value for e in StudyDatasetName}:
            raise ConfigError(f"datasets.{key}: {name!r} is not a study dataset; allowed "
                              f"{', '.join(e.value for e in StudyDatasetName)} (or set datasets.{key}.name)")
        if not d.arms:
            raise ConfigError(f"datasets.{key}.arms: name the arms to run on it")
        for arm in d.arms:
            if arm not in cfg.arms:
                raise ConfigError(f"datasets.{key}.arms: {arm!r} is not an arm{_did_you_mean(arm, list(cfg.arms))}")
        if cfg.analysis.probe_capacity_of not in d.arms:
            raise ConfigError(f"datasets.{key}.arms must include analysis.probe_capacity_of="
                              f"{cfg.analysis.probe_capacity_of!r} (the equal-capacity probe's reference)")
        limit = {"study_arrangements": len(STUDY_ARRANGEMENTS), "study_shapes": len(STUDY_SHAPES), "digits": 10}[name]
        if (name == "digits" and d.num_classes != 10) or d.num_classes > limit:
            raise ConfigError(f"datasets.{key}.num_classes={d.num_classes}: {name} has "
                              f"{'exactly 10' if name == 'digits' else f'at most {limit}'} classes")
        if name == "digits" and d.colours is not None:
            raise ConfigError(f"datasets.{key}.colours: digits have their own colours (remove the key)")
        n = d.num_images if d.num_images is not None else (1797 if name == "digits" else 4000)
        if name == "digits" and n > 1797:
            raise ConfigError(f"datasets.{key}.num_images={n}: digits has 1797 images")
        check_split(int(n), float(d.holdout_fraction), int(d.num_classes), where=f"datasets.{key}")
        if d.image_size % tok.patch_size:
            raise ConfigError(f"datasets.{key}.image_size={d.image_size} must be divisible by tokenizer.patch_size="
                              f"{tok.patch_size}")
        held = max(1, int(round(d.holdout_fraction * n)))
        ref = n - held if cfg.metrics.reference == Reference.train else held
        per_mode = int(cfg.sampling.per_class) * int(d.num_classes)
        if min(ref, per_mode) <= cfg.metrics.prc_neighborhood:
            raise ConfigError(f"datasets.{key}: precision / recall with k={cfg.metrics.prc_neighborhood} need more "
                              f"than k images per side ({per_mode} samples, {ref} reference images)")
        if d.seeds is not None and (len(d.seeds) < 1 or len(set(d.seeds)) != len(d.seeds)):
            raise ConfigError(f"datasets.{key}.seeds={list(d.seeds)}: give distinct seeds")
    if not cfg.sampling.modes:
        raise ConfigError("sampling.modes: give the guidance modes (none, constant, aware)")
    for m, mode in cfg.sampling.modes.items():
        if m not in ("none", "constant", "aware"):
            raise ConfigError(f"sampling.modes.{m}: the report knows the modes none, constant, aware"
                              f"{_did_you_mean(m, ['none', 'constant', 'aware'])}")
        if mode.sampler not in SAMPLERS:
            raise ConfigError(f"sampling.modes.{m}.sampler={mode.sampler!r} is not a sampler"
                              f"{_did_you_mean(mode.sampler, SAMPLERS.names())}")
    if tok.restart_dead_codes_every == 0:
        raise ConfigError("tokenizer.restart_dead_codes_every=0: the study keeps every position's codes alive "
                          "(issue 13); give an interval >= 1")


STUDY_SCHEMA = Schema("study", StudyConfig, check_study)
