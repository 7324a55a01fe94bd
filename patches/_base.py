"""The hook mechanism shared by every host patch.

A :class:`Hook` names one upstream attribute (``module`` + dotted ``attribute``), the upstream
symbols its replacement was written against (``checks``: each symbol's source sha256 at the pinned
version; the replaced symbol and every upstream function the replacement calls or relies on), and a
``make(original) -> replacement`` factory.

:func:`verify` compares hashes without touching anything; :func:`apply` installs replacements;
:func:`restore` puts the originals back. Replacements carry ``__vcq_original__`` so a second
``apply`` (or an ``apply`` after the host module was re-imported elsewhere) is recognised and
skipped, which makes :func:`vcq_plugin.register` idempotent.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple

_MISSING = object()


class HostDriftError(RuntimeError):
    """An upstream symbol differs from the one a patch was written for (``register(strict=True)``)."""


def source_sha256(obj: Any) -> str:
    """sha256 of ``inspect.getsource(obj)`` with line endings and trailing blanks normalised."""
    src = inspect.getsource(obj).replace("\r\n", "\n")
    lines = [line.rstrip() for line in src.split("\n")]
    return hashlib.sha256("\n".join(lines).strip("\n").encode("utf-8")).hexdigest()


def module_available(name: str) -> bool:
    """True when ``name`` can be imported (its parent packages may get imported to find out)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _resolve(root: Any, dotted: str) -> Tuple[Any, str]:
    """``(owner, last_name)`` for a dotted attribute path inside ``root``."""
    parts = dotted.split(".")
    owner = root
    for part in parts[:-1]:
        owner = getattr(owner, part)
    return owner, parts[-1]


def _unwrap_patched(obj: Any) -> Any:
    while getattr(obj, "__vcq_hooked__", False):
        obj = obj.__vcq_original__
    return obj


@dataclass
class Hook:
    """One run-time replacement of an upstream attribute.

    Args:
        host: host name (``"1d-tokenizer"``, ``"llamagen"``, ``"titok-pytorch"``).
        module: importable module path holding the attribute, e.g. ``"modeling.titok"``.
        attribute: dotted path inside the module, e.g. ``"TiTok.__init__"`` or ``"VQ"``.
        checks: ``{symbol: sha256}``, the :func:`source_sha256` at the pinned version of every upstream
            symbol the hook depends on: the one it replaces (or the class that fixes its use) and the
            functions the replacement calls or relies on (e.g. ``decode_n_tokens``, which calls a hooked
            ``decode_one_token``). A symbol is a dotted path inside ``module``, or ``"other.module:Dotted"``.
        make: ``make(original) -> replacement``.
        pin: what the hashes were recorded against, for error messages.
        how_to_fix: the host-specific way to get the pinned version.
        optional: skip this hook (instead of failing) when ``module`` cannot be imported, e.g.
            a fix-up for a part of the host that needs an extra package.

    ``make`` receives None when the attribute does not exist yet (the hook adds it; restoring
    deletes it again).
    """

    host: str
    module: str
    attribute: str
    checks: Mapping[str, str]
    make: Callable[[Any], Any]
    pin: str = ""
    how_to_fix: str = ""
    optional: bool = False

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.attribute}"

    def qualified(self, check: str) -> str:
        """``module.Dotted`` name of a ``checks`` key."""
        return check.replace(":", ".") if ":" in check else f"{self.module}.{check}"

    # ------------------------------------------------------------------ state
    def _owner(self) -> Tuple[Any, str]:
        return _resolve(importlib.import_module(self.module), self.attribute)

    def is_applied(self) -> bool:
        owner, name = self._owner()
        return bool(getattr(getattr(owner, name, None), "__vcq_hooked__", False))

    def importable(self) -> bool:
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True

    def found_sha256(self) -> Dict[str, str]:
        """``{symbol: sha256}`` of the checked upstream (unpatched) symbols as installed now."""
        found = {}
        for check in self.checks:
            module, _, dotted = check.rpartition(":")
            owner, name = _resolve(importlib.import_module(module or self.module), dotted)
            found[check] = source_sha256(_unwrap_patched(getattr(owner, name)))
        return found

    def drifted(self) -> Dict[str, str]:
        """``{symbol: found sha256}`` for every checked symbol that differs from the pinned one."""
        return {k: v for k, v in self.found_sha256().items() if v != self.checks[k]}

    def drift_message(self, drifted: Mapping[str, str]) -> str:
        which = "; ".join(
            f"{self.qualified(k)} (source sha256 expected {self.checks[k][:16]}..., found {v[:16]}...)" for k, v in drifted.items()
        )
        return (
            f"vcq_plugin cannot hook {self.symbol}: upstream code it depends on is not the code this patch was "
            f"written for ({self.pin}): {which}. To proceed, {self.how_to_fix}, or call "
            f"vcq_plugin.register(strict=False) to patch anyway (a warning is issued; results are "
            f"then untested)."
        )

    # ------------------------------------------------------------------ actions
    def apply(self) -> bool:
        """Install the replacement; False when it was already installed."""
        owner, name = self._owner()
        present = name in vars(owner)
        current = getattr(owner, name, _MISSING)
        if getattr(current, "__vcq_hooked__", False):
            return False
        original = None if current is _MISSING else current
        replacement = self.make(original)
        try:
            replacement.__vcq_hooked__ = True
            replacement.__vcq_original__ = original
            replacement.__vcq_inherited__ = not present  # restore by deleting what we added
        except (AttributeError, TypeError) as e:  # pragma: no cover - make() must return a settable object
            raise TypeError(f"replacement for {self.symbol} must accept attributes") from e
        setattr(owner, name, replacement)
        self._installed_on = (owner, name)
        return True

    def restore(self) -> bool:
        """Put the original back; False when nothing was installed."""
        installed = getattr(self, "_installed_on", None)
        owner, name = installed if installed is not None else self._owner()
        self._installed_on = None
        current = getattr(owner, name, None)
        if not getattr(current, "__vcq_hooked__", False):
            return False
        if current.__vcq_inherited__:
            delattr(owner, name)
        else:
            setattr(owner, name, current.__vcq_original__)
        return True


def verify(hooks: List[Hook]) -> List[Tuple[Hook, Dict[str, str]]]:
    """``[(hook, {symbol: found sha256})]`` for every not-yet-applied hook with a drifted checked symbol."""
    drifted = []
    for hook in hooks:
        if hook.is_applied():
            continue
        found = hook.drifted()
        if found:
            drifted.append((hook, found))
    return drifted
