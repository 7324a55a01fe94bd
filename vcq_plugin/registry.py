"""Name -> factory registries, in the style of timm's ``register_model`` / ``create_model``.

Two registries: quantizers (``vcq_cosine``, ``vcq_linear``, ``vcq_power``, ``vcq_power2.5``,
``constant``) and samplers (``aware_cfg``, ``no_cfg``, Table 7 presets, ...). The modules that
define the classes fill them in on import; ``create_*`` imports those modules on demand.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List

from ._errors import unknown_name_error

Factory = Callable[..., Any]


class Registry:
    """A dict of named factories with a helpful error for unknown names."""

    def __init__(self, what: str, provider_module: str) -> None:
        self.what = what
        self._provider = provider_module
        self._factories: Dict[str, Factory] = {}

    def register(self, name: str, factory: Factory | None = None, *, overwrite: bool = False):
        """Register ``factory`` under ``name``; usable as ``@registry.register("name")``."""

        def add(fn: Factory) -> Factory:
            if name in self._factories and not overwrite and self._factories[name] is not fn:
                raise ValueError(f"{self.what} {name!r} is already registered; pass overwrite=True to replace it")
            self._factories[name] = fn
            return fn

        return add(factory) if factory is not None else add

    def _load(self) -> None:
        importlib.import_module(self._provider)

    def names(self) -> List[str]:
        self._load()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._factories

    def get(self, name: str) -> Factory:
        self._load()
        if name not in self._factories:
            raise unknown_name_error(self.what, name, self._factories)
        return self._factories[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)


QUANTIZERS = Registry("quantizer", "vcq_plugin.quantizer")
SAMPLERS = Registry("sampler", "vcq_plugin.sampler")

register_quantizer = QUANTIZERS.register
register_sampler = SAMPLERS.register


def create_quantizer(name: str, **kwargs: Any) -> Any:
    """Build a quantizer by registry name, e.g. ``create_quantizer("vcq_cosine", dim=8, k_max=16384)``."""
    return QUANTIZERS.create(name, **kwargs)


def create_sampler(name: str, **kwargs: Any) -> Any:
    """Build a sampler by registry name, e.g. ``create_sampler("vcq_bb", schedule=sched)``."""
    return SAMPLERS.create(name, **kwargs)


def list_quantizers() -> List[str]:
    return QUANTIZERS.names()


def list_samplers() -> List[str]:
    return SAMPLERS.names()
