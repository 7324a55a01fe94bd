"""Recipe configs: YAML + OmegaConf dotlist overrides, checked before any training starts."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from vcq_plugin._errors import unknown_name_error
from vcq_plugin.schedule import CodebookSchedule

HOSTS = ("titok-pytorch", "1d-tokenizer")
QUANTIZER_NAMES = ("vcq_cosine", "vcq_linear", "vcq_power", "constant")  # + vcq_power<p>


class ConfigError(ValueError):
    """A recipe config that cannot run; raised before any training."""


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Read ``path`` and apply ``key=value`` dotlist overrides (as 1d-tokenizer's get_config)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    cfg = OmegaConf.load(p)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    v = OmegaConf.select(cfg, dotted, default=default)
    return default if v is None else v


def check_quantizer_name(name: Any, where: str) -> str:
    """A schedule/quantizer registry name, or a ConfigError naming ``where`` and the allowed names."""
    if not isinstance(name, str):
        raise ConfigError(f"{where} must be a quantizer name string, got {name!r}")
    try:
        CodebookSchedule.from_name(name, k_max=4, seq_len=2)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return name


def validate(cfg: DictConfig) -> None:
    """Every check that can fail before training: host, quantizer names, schedule length vs. the
    tokenizer's token count, K_max vs. the AR vocabulary, data path."""
    host = _get(cfg, "host")
    if host not in HOSTS:
        raise ConfigError(f"host: {unknown_name_error('host', host, HOSTS)}")
    if host == "titok-pytorch":
        _validate_titok_pytorch(cfg)
    else:
        _validate_1d_tokenizer(cfg)


def _check_seq_len(variant: Any, where: str, num_tokens: int, what: str) -> None:
    sched_len = _get(variant, "seq_len")
    if sched_len is not None and int(sched_len) != num_tokens:
        raise ConfigError(
            f"{where}.seq_len={sched_len} but the tokenizer produces {num_tokens} tokens ({what}); "
            "the schedule must have one size per token: remove seq_len or make them equal")


def _check_vocab(ar_vocab: Any, k_max: int, extra: int, where: str) -> None:
    if ar_vocab is not None and int(k_max) + extra > int(ar_vocab):
        raise ConfigError(
            f"K_max={k_max} image tokens (+{extra} class/null tokens) do not fit the AR vocabulary "
            f"{where}={ar_vocab}; raise {where} to >= {int(k_max) + extra} or lower the codebook size")


def _validate_titok_pytorch(cfg: DictConfig) -> None:
    from .data import DATASETS, check_data_path

    name = _get(cfg, "data.name")
    if name not in DATASETS:
        raise ConfigError(f"data.name: {unknown_name_error('dataset', name, DATASETS)}")
    if name == "imagefolder":
        try:
            check_data_path(_get(cfg, "data.path"))
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from None
    tok = cfg.tokenizer
    num_tokens = int(tok.num_latent_tokens)
    image_size = int(cfg.data.image_size)
    if image_size % int(tok.patch_size):
        raise ConfigError(f"data.image_size={image_size} must be divisible by tokenizer.patch_size={tok.patch_size}")
    every = int(_get(tok, "restart_dead_codes_every", 0) or 0)
    if every and int(tok.ckpt_every) % every:
        raise ConfigError(f"tokenizer.ckpt_every={tok.ckpt_every} must be a multiple of "
                          f"tokenizer.restart_dead_codes_every={every} (so a resumed run restarts codes at the same steps)")
    variants = _get(cfg, "variants")
    if not variants:
        raise ConfigError("variants: give at least one tokenizer variant, e.g. {vcq: {quantizer: vcq_cosine}}")
    for vname, v in variants.items():
        check_quantizer_name(_get(v, "quantizer"), f"variants.{vname}.quantizer")
        _check_seq_len(v, f"variants.{vname}", num_tokens, "tokenizer.num_latent_tokens")
        k_min = int(_get(v, "k_min", 2))
        if k_min > int(tok.codebook_size):
            raise ConfigError(f"variants.{vname}.k_min={k_min} > tokenizer.codebook_size={tok.codebook_size}")
    num_classes = _get(cfg, "data.num_classes", 10)
    _check_vocab(_get(cfg, "ar.vocab_size"), int(tok.codebook_size), int(num_classes) + 1, "ar.vocab_size")
    for t in _get(cfg, "ar.train_on", []) or []:
        if t not in variants:
            raise ConfigError(f"ar.train_on names {t!r}, which is not a tokenizer variant ({list(variants)})")
    weights = _get(cfg, "metrics.inception_weights")
    if weights and not Path(os.path.expanduser(str(weights))).is_file():
        raise ConfigError(f"metrics.inception_weights={weights!r} is not a file (gFID/rFID need local Inception "
                          "weights; set it to null to skip them)")
    threads = _get(cfg, "threads")
    if threads is not None and threads != "auto" and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"threads must be auto, null or an integer >= 1, got {threads!r}")
    parallel = _get(cfg, "parallel", False)
    if parallel not in (True, False, "auto"):
        raise ConfigError(f"parallel must be auto, true or false, got {parallel!r}")
    sampler = _get(cfg, "sampling.sampler", "aware_cfg")
    from vcq_plugin.registry import SAMPLERS

    if sampler not in SAMPLERS:
        raise ConfigError(f"sampling.sampler: {unknown_name_error('sampler', sampler, SAMPLERS.names())}")


def _validate_1d_tokenizer(cfg: DictConfig) -> None:
    vq = _get(cfg, "model.vq_model")
    if vq is None:
        raise ConfigError("host 1d-tokenizer needs model.vq_model (the 1d-tokenizer TiTok config)")
    q = _get(vq, "quantizer")
    if q is not None:
        check_quantizer_name(q, "model.vq_model.quantizer")
    num_tokens = int(_get(vq, "num_latent_tokens"))
    _check_seq_len(_get(vq, "vcq", {}), "model.vq_model.vcq", num_tokens, "model.vq_model.num_latent_tokens")
    k_max = int(_get(vq, "codebook_size"))
    _check_vocab(_get(cfg, "ar.vocab_size"), k_max, 0, "ar.vocab_size")
    for key in ("dataset.params.train_shards_path_or_url", "dataset.params.eval_shards_path_or_url"):
        url = _get(cfg, key)
        if url is None:
            raise ConfigError(f"{key} is required (webdataset shards of your dataset)")
        local = str(url).split("{")[0]
        if "://" not in str(url) and not Path(os.path.dirname(local) or ".").exists():
            raise ConfigError(f"{key}={url!r}: the folder {os.path.dirname(local)!r} does not exist")
