"""Entry point shared by ``recipes/run_titok_vcq.py``: dispatch on the config's ``host``."""
from __future__ import annotations

from omegaconf import DictConfig

from .config import HOSTS, ConfigError, validate


def run_recipe(cfg: DictConfig) -> dict:
    """Validate ``cfg`` (before any training) and run the host's pipeline. Hosts are never switched
    silently: a config for ``1d-tokenizer`` fails clearly when that host is missing."""
    validate(cfg)
    host = cfg.host
    if host == "titok-pytorch":
        from .demo import run_titok_pytorch

        return run_titok_pytorch(cfg)
    if host == "1d-tokenizer":
        from recipes.hosts.titok_1d import run_titok_1d

        return run_titok_1d(cfg)
    raise ConfigError(f"unknown host {host!r}; allowed: {', '.join(HOSTS)}")  # validate() already refused
