"""Small helpers that turn bad input into clear, actionable errors."""
from __future__ import annotations

import difflib
from typing import Iterable


def unknown_name_error(what: str, name: object, allowed: Iterable[str]) -> ValueError:
    """A ValueError naming the bad value, the closest allowed one and the full list."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Allowed: {', '.join(allowed)}.")


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as int, or raise TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__") and not isinstance(value, float)
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)  # type: ignore[arg-type]
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
