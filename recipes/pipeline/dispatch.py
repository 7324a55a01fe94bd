"""Entry point shared by ``recipes/run_titok_vcq.py``: dispatch on the config's ``host``."""
from __future__ import annotations

from .config import LoadedConfig


def run_recipe(loaded: LoadedConfig) -> dict:
    """Run the pipeline of ``loaded.host`` (the config was validated once, by ``load_config``). Hosts are
    never switched silently: a config for ``1d-tokenizer`` fails clearly when that host is missing."""
    if not isinstance(loaded, LoadedConfig):
        raise TypeError("run_recipe takes the LoadedConfig of recipes.pipeline.config.load_config(path, overrides)")
    if loaded.host == "titok-pytorch":
        from .demo import run_titok_pytorch

        return run_titok_pytorch(loaded)
    if loaded.host == "1d-tokenizer":
        from recipes.hosts.titok_1d import run_titok_1d

        return run_titok_1d(loaded)
    raise ValueError(f"host {loaded.host!r} has no run_titok_vcq.py pipeline (llamagen: recipes/run_llamagen_vcq.py)")
