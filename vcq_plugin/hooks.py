"""``register()`` / ``unregister()``: install VCQ into the host codebases at run time.

Each host has one patch module in ``vcq_plugin.patches`` (the repository's ``patches/``):

=============== ======================================== =====================================
host            upstream                                 patch
=============== ======================================== =====================================
titok-pytorch   PyPI titok-pytorch 0.0.5                 ``vcq_plugin.patches.titok_pytorch``
1d-tokenizer    bytedance/1d-tokenizer @ 942a96fb        ``vcq_plugin.patches.titok_1d``
llamagen        FoundationVision/LlamaGen @ ce98ec41     ``vcq_plugin.patches.llamagen``
=============== ======================================== =====================================

Every hook first checks that the upstream symbol is the one it was written for (sha256 of its
source at the pinned version). ``strict=True`` refuses on any mismatch and patches nothing;
``strict=False`` warns and patches.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Dict, Iterable, List, Optional

from ._errors import unknown_name_error
from .patches._base import Hook, HostDriftError, verify

HOSTS: Dict[str, str] = {
    "titok-pytorch": "vcq_plugin.patches.titok_pytorch",
    "1d-tokenizer": "vcq_plugin.patches.titok_1d",
    "llamagen": "vcq_plugin.patches.llamagen",
}
_ALIASES = {"titok_pytorch": "titok-pytorch", "1d_tokenizer": "1d-tokenizer", "titok": "1d-tokenizer",
            "rar": "1d-tokenizer", "LlamaGen": "llamagen"}

_APPLIED: List[Hook] = []

__all__ = ["register", "unregister", "registered", "HostDriftError", "HOSTS"]


def _host_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"host names must be strings, got {type(name).__name__} {name!r}")
    name = _ALIASES.get(name, name)
    if name.lower() in HOSTS:
        return name.lower()
    raise unknown_name_error("host", name, HOSTS)


def _patch_module(host: str):
    return importlib.import_module(HOSTS[host])


def register(hosts: Optional[Iterable[str] | str] = None, strict: bool = True) -> Dict[str, List[str]]:
    """Hook VCQ into the host codebases; returns ``{host: [hooked symbol, ...]}``.

    Args:
        hosts: host names (``"titok-pytorch"``, ``"1d-tokenizer"``, ``"llamagen"``); ``None`` =
            every host that is importable now (the research hosts need their repository root on
            ``sys.path``, as when running their own scripts). A named host that cannot be imported
            raises ImportError saying how to get it.
        strict: refuse (HostDriftError, nothing patched) if an upstream symbol differs from the
            pinned version; ``False`` warns and patches anyway.

    Idempotent: hooks already installed are left as they are and reported again.
    """
    explicit = hosts is not None
    if isinstance(hosts, str):
        hosts = [hosts]
    names = list(HOSTS) if hosts is None else list(dict.fromkeys(_host_name(h) for h in hosts))
    selected: List[tuple[str, List[Hook]]] = []
    for host in names:
        patch = _patch_module(host)
        if not patch.available():
            if explicit:
                raise ImportError(f"host {host!r} is not importable: {patch.HOW_TO_GET}")
            continue
        hs = patch.hooks()
        try:
            for module in dict.fromkeys(h.module for h in hs if not h.optional):
                importlib.import_module(module)
        except ImportError as e:  # found, but its own imports fail (e.g. a missing extra)
            if explicit:
                raise ImportError(f"host {host!r} failed to import ({e}); {patch.HOW_TO_GET}") from e
            warnings.warn(f"vcq_plugin: skipping host {host!r}: importing it failed ({e})", UserWarning, stacklevel=2)
            continue
        selected.append((host, [h for h in hs if not h.optional or h.importable()]))

    drifted = verify([h for _, hs in selected for h in hs])
    if drifted:
        msg = "\n".join(hook.drift_message(found) for hook, found in drifted)
        if strict:
            raise HostDriftError(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)

    result: Dict[str, List[str]] = {}
    for host, hs in selected:
        for hook in hs:
            if hook.apply():
                _APPLIED.append(hook)
        result[host] = [hook.symbol for hook in hs]
    return result


def unregister() -> List[str]:
    """Restore every original that :func:`register` replaced; returns the restored symbols."""
    restored = []
    while _APPLIED:
        hook = _APPLIED.pop()
        if hook.restore():
            restored.append(hook.symbol)
    return restored


def registered() -> List[str]:
    """Symbols currently hooked by :func:`register`."""
    return [h.symbol for h in _APPLIED]
