"""The hook mechanism shared by every host patch.

A :class:`Hook` names one upstream attribute (``module`` + dotted ``attribute``), the upstream
symbol whose source it was written against (``check``, by default the attribute itself) with the
sha256 of that source at the pinned version, and a ``make(original) -> replacement`` factory.

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
from typing import Any, Callable, List, Optional, Tuple

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
        sha256: :func:`source_sha256` of the checked symbol at the pinned version.
        make: ``make(original) -> replacement``.
        check: dotted path (inside ``module``) of the symbol whose source is checked; defaults to
            ``attribute``. Used when the replaced attribute is not the code it depends on (e.g.
            titok-pytorch's ``VQ`` name, whose use is fixed by ``TiTokTokenizer``).
        pin: what the hash was recorded against, for error messages.
        how_to_fix: the host-specific way to get the pinned version.
        optional: skip this hook (instead of failing) when ``module`` cannot be imported, e.g.
            a fix-up for a part of the host that needs an extra package.

    ``make`` receives None when the attribute does not exist yet (the hook adds it; restoring
    deletes it again).
    """

    host: str
    module: str
    attribute: str
    sha256: str
    make: Callable[[Any], Any]
    check: Optional[str] = None
    pin: str = ""
    how_to_fix: str = ""
    optional: bool = False

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.attribute}"

    @property
    def checked_symbol(self) -> str:
        return f"{self.module}.{self.check or self.attribute}"

    # ------------------------------------------------------------------ state
    def _owner(self) -> Tuple[Any, str]:
        return _resolve(importlib.import_module(self.module), self.attribute)

    def current(self) -> Any:
        owner, name = self._owner()
        return getattr(owner, name)

    def is_applied(self) -> bool:
        owner, name = self._owner()
        return bool(getattr(getattr(owner, name, None), "__vcq_hooked__", False))

    def importable(self) -> bool:
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True

    def found_sha256(self) -> str:
        """Hash of the upstream (unpatched) checked symbol as it is installed now."""
        mod = importlib.import_module(self.module)
        owner, name = _resolve(mod, self.check or self.attribute)
        return source_sha256(_unwrap_patched(getattr(owner, name)))

    def drift_message(self, found: str) -> str:
        return (
            f"vcq_plugin cannot hook {self.symbol}: the upstream symbol {self.checked_symbol} is not the "
            f"one this patch was written for ({self.pin}; source sha256 expected {self.sha256[:16]}..., "
            f"found {found[:16]}...). To proceed, {self.how_to_fix}, or call "
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


def verify(hooks: List[Hook]) -> List[Tuple[Hook, str]]:
    """``[(hook, found_sha256)]`` for every not-yet-applied hook whose checked symbol drifted."""
    drifted = []
    for hook in hooks:
        if hook.is_applied():
            continue
        found = hook.found_sha256()
        if found != hook.sha256:
            drifted.append((hook, found))
    return drifted

