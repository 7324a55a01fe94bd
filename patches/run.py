"""Run a host's own script with VCQ hooked in: ``python -m vcq_plugin.patches.run SCRIPT [ARGS...]``.

Run it from the host's root, as the host's scripts expect, e.g.::

    cd third_party/1d-tokenizer
    accelerate launch -m vcq_plugin.patches.run scripts/train_titok.py config=configs/my_vcq.yaml
    cd third_party/LlamaGen
    python -m vcq_plugin.patches.run autoregressive/sample/sample_c2i.py --vq-ckpt ...

The current directory goes first on ``sys.path`` (so the host's packages import), every
importable host is hooked with ``vcq_plugin.register()`` (strict; set ``VCQ_STRICT=0`` to patch a
drifted host anyway, with a warning), then SCRIPT runs as ``__main__`` with ``sys.argv[1:] = ARGS``.
With 1d-tokenizer hooked, its training utilities also get the scheduler name
``vcq_warmup_hold_linear`` (Appendix A's schedule, ``vcq_plugin.patches.lr_schedules``) while SCRIPT runs.
"""
from __future__ import annotations

import contextlib
import os
import runpy
import sys
import warnings


def _titok_1d_lr(strict: bool):
    """The 1d-tokenizer scheduler hook for the duration of the script (needs ``utils.train_utils``, which
    imports only after ``register()``); a no-op, with a warning, when the host's training utilities do not
    import (the script then fails on its own import, saying why)."""
    try:
        import utils.train_utils  # noqa: F401  (the host's module the hook replaces a function of)
    except ImportError as e:
        warnings.warn(f"vcq_plugin: scheduler {'vcq_warmup_hold_linear'!r} not added: 1d-tokenizer's "
                      f"utils.train_utils does not import ({e})", UserWarning, stacklevel=2)
        return contextlib.nullcontext()
    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import titok_1d_hooks

    return patched(titok_1d_hooks(), strict=strict)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    script, args = argv[0], argv[1:]
    if not os.path.isfile(script):
        raise SystemExit(f"vcq_plugin.patches.run: script {script!r} not found (run from the host's root)")
    sys.path.insert(0, os.getcwd())
    import vcq_plugin

    strict = os.environ.get("VCQ_STRICT", "1") not in ("0", "false", "False")
    hooked = vcq_plugin.register(strict=strict)
    print(f"vcq_plugin: hooked {', '.join(hooked) or 'no host (none importable from here)'}", file=sys.stderr)
    sys.argv = [script, *args]
    with contextlib.ExitStack() as stack:
        if "1d-tokenizer" in hooked:
            stack.enter_context(_titok_1d_lr(strict))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
