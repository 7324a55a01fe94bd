"""``register()`` / ``unregister()``: install VCQ into the host codebases at run time.

Each host has one patch module in ``vcq_plugin.patches`` (the repository's ``patches/``):

=============== ======================================== =====================================
host            upstream                                 patch
=============== ======================================== =====================================
titok-pytorch   PyPI titok-pytorch 0.0.5                 ``vcq_plugin.patches.titok_pytorch``
1d-tokenizer    bytedance/1d-tokenizer @ 942a96fb        ``vcq_plugin.patches.titok_1d``
llamagen        FoundationVision/LlamaGen @ ce98ec41     ``vcq_plugin.patches.llamagen``
=============== ======================================== =====================================

Every hook first checks that the upstream code it depends on is the code it was written for (sha256
of the source, at the pinned version, of the replaced symbol and of the upstream functions the
replacement calls or relies on). ``strict=True`` refuses on any mismatch and patches nothing;
``strict=False`` warns and patches.

Patches needed only for a moment (e.g. building LPIPS without a download,
``vcq_plugin.patches.lpips_vgg``) use :func:`patched`: the same checks, undone when the ``with``
block ends (or by :func:`unregister`).
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Dict, Iterable, Iterator, List, Optional

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

__all__ = ["register", "unregister", "registered", "patched", "HostDriftError", "HOSTS"]


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

    _check_drift([h for _, hs in selected for h in hs], strict)

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


def _check_drift(hooks: List[Hook], strict: bool) -> None:
    drifted = verify(hooks)
    if drifted:
        msg = "\n".join(hook.drift_message(found) for hook, found in drifted)
        if strict:
            raise HostDriftError(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


@contextlib.contextmanager
def patched(hooks: List[Hook], strict: bool = True) -> Iterator[List[str]]:
    """Install ``hooks`` for the duration of a ``with`` block (drift-checked as :func:`register`;
    recorded, so :func:`unregister` also undoes them); yields the hooked symbols."""
    _check_drift(hooks, strict)
    mine = []
    try:
        for hook in hooks:
            if hook.apply():
                _APPLIED.append(hook)
                mine.append(hook)
        yield [hook.symbol for hook in hooks]
    finally:
        for hook in reversed(mine):
            at = next((i for i, h in enumerate(_APPLIED) if h is hook), None)
            if at is not None:  # not already undone by unregister()
                del _APPLIED[at]
                hook.restore()
