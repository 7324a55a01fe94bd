"""vcq-plugin: Variable Codebook Size Quantization for discrete image tokenizers and AR generators.

Public API (imported lazily so ``import vcq_plugin`` stays cheap)::

    CodebookSchedule            K(i) per position; CodebookSchedule.from_spec builds one (vcq_plugin.schedule)
    ScheduleConfig              a schedule as a typed config (vcq_plugin.schedule)
    VariableCodebookQuantizer   drop-in vector quantizer with a prefix search (vcq_plugin.quantizer)
    AwareCFGSampler             codebook-size-aware CFG + per-position masks (vcq_plugin.sampler)
    create_quantizer / create_sampler / list_quantizers / list_samplers   (vcq_plugin.registry)
    register / unregister       run-time hooks into the host codebases (vcq_plugin.hooks)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "CodebookSchedule": "vcq_plugin.schedule",
    "ScheduleConfig": "vcq_plugin.schedule",
    "VariableCodebookQuantizer": "vcq_plugin.quantizer",
    "AwareCFGSampler": "vcq_plugin.sampler",
    "create_quantizer": "vcq_plugin.registry",
    "create_sampler": "vcq_plugin.registry",
    "list_quantizers": "vcq_plugin.registry",
    "list_samplers": "vcq_plugin.registry",
    "register_quantizer": "vcq_plugin.registry",
    "register_sampler": "vcq_plugin.registry",
    "register": "vcq_plugin.hooks",
    "unregister": "vcq_plugin.hooks",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vcq_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
