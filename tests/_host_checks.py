"""Child-process side of the upstream tests (see conftest.start_host_checks).

Each upstream test module is also a script: run in a fresh interpreter from the host's root, it
calls :func:`run_checks`, which runs the named ``check_*`` functions and prints one JSON line per
check: ``{"check", "ok", "error", "seconds"}`` (plus ``"skip"`` when a host package is missing).
"""
from __future__ import annotations

import itertools
import json
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Sequence


def run_checks(checks: Dict[str, Callable[[], None]], names: Iterable[str], host_modules: Sequence[str],
               extra: str) -> None:
    import torch

    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared CPU
    names = list(names)
    try:
        for module in host_modules:
            __import__(module)
    except ModuleNotFoundError as e:  # a package the host needs is not installed
        reason = f"host dependency missing ({e}); pip install -e '.[{extra}]'"
        for name in names:
            print(json.dumps({"check": name, "ok": True, "error": "", "skip": reason}), flush=True)
        return
    for name in names:
        t0 = time.perf_counter()
        try:
            checks["check_" + name]()
            rec = {"check": name, "ok": True, "error": ""}
        except Exception:
            rec = {"check": name, "ok": False, "error": traceback.format_exc()}
            try:
                import vcq_plugin

                vcq_plugin.unregister()  # leave the next check an unpatched host
            except Exception:
                pass
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(rec), flush=True)


def strict_register_error(host: str) -> str:
    """The HostDriftError message of ``vcq_plugin.register(hosts=[host], strict=True)``; fails the
    check if registering succeeds (it must refuse a drifted upstream)."""
    import vcq_plugin
    from vcq_plugin.hooks import HostDriftError

    try:
        vcq_plugin.register(hosts=[host], strict=True)
    except HostDriftError as e:
        return str(e)
    raise AssertionError("register(strict=True) accepted a drifted upstream")


_EDITED = itertools.count()


def edited_copy(module: Any, name: str, old: str, new: str) -> Any:
    """A copy of ``module.name`` whose source has ``old`` replaced by ``new``, as a drifted upstream
    would have it: compiled from a file (so inspect.getsource sees the edit) in a namespace holding
    the module's globals. Assign it to ``module.name`` (and put the original back) yourself."""
    import importlib.util
    import inspect

    src = textwrap.dedent(inspect.getsource(getattr(module, name)))
    if old not in src:
        raise AssertionError(f"{old!r} is not in the source of {module.__name__}.{name}")
    mod_name = f"vcq_edited_copy_{next(_EDITED)}"
    path = Path(tempfile.mkdtemp()) / f"{mod_name}.py"
    path.write_text(src.replace(old, new))
    spec = importlib.util.spec_from_file_location(mod_name, path)
    edited = importlib.util.module_from_spec(spec)
    edited.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    sys.modules[mod_name] = edited  # inspect finds a class's file through sys.modules
    spec.loader.exec_module(edited)
    return getattr(edited, name)


def assert_edit_refused(module: Any, name: str, old: str, new: str, hooks: Sequence[Any], pin: str,
                        untouched: Any) -> None:
    """With ``module.name``'s source edited (``old`` -> ``new``, see :func:`edited_copy`), installing
    ``hooks`` raises HostDriftError naming ``module.name`` and the pinned commit ``pin``, and
    ``untouched`` (the function the hooks would replace) is left unpatched; the original is put back."""
    from vcq_plugin.hooks import HostDriftError, patched

    original = getattr(module, name)
    setattr(module, name, edited_copy(module, name, old, new))
    try:
        try:
            with patched(hooks):
                raise AssertionError(f"an edited {name} was accepted")
        except HostDriftError as e:
            assert f"{module.__name__}.{name}" in str(e) and pin in str(e), e
        assert not hasattr(untouched(), "__vcq_original__")
    finally:
        setattr(module, name, original)
