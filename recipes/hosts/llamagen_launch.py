"""Run LlamaGen's ``autoregressive/train/train_c2i.py`` with VCQ registered.

Started by ``recipes/run_llamagen_vcq.py train`` as ``torchrun ... -m recipes.hosts.llamagen_launch
[--vcq-lr-schedule JSON --] <train_c2i.py arguments>`` with the LlamaGen root first on ``PYTHONPATH``.
It registers the LlamaGen hooks (whose ``GPT_models`` hook adds the paper's 32-layer XL,
``GPT-VCQ-XL``) and runs the script's own ``__main__`` block: argument parsing, the training loop, DDP,
checkpoints are LlamaGen's.

- Without ``--vcq-lr-schedule`` (``lr_schedule: host``) the script runs as ``__main__`` with
  ``runpy``, exactly upstream (constant learning rate).
- With it (``lr_schedule: paper``) the script is imported as ``autoregressive.train.train_c2i``, its
  ``creat_optimizer`` is hooked (:func:`vcq_plugin.patches.lr_schedules.llamagen_hooks`, drift-checked)
  so the AdamW it builds carries the schedule, and then the script's ``if __name__ == "__main__":``
  block runs in that module (``runpy`` would define ``creat_optimizer`` again, unhooked).
"""
from __future__ import annotations

import ast
import json
import runpy
import sys
from pathlib import Path

from .llamagen import host_root

SCHEDULE_FLAG = "--vcq-lr-schedule"


def split_args(argv: list[str]) -> tuple[dict | None, list[str]]:
    """``([--vcq-lr-schedule JSON --] ARGS...)`` -> (schedule dict or None, train_c2i.py arguments)."""
    if argv[:1] != [SCHEDULE_FLAG]:
        return None, list(argv)
    if len(argv) < 3 or argv[2] != "--":
        raise SystemExit(f"usage: llamagen_launch {SCHEDULE_FLAG} JSON -- <train_c2i.py arguments>")
    return json.loads(argv[1]), list(argv[3:])


def launcher_args(schedule: dict | None, train_args: list[str]) -> list[str]:
    """The launcher's command-line arguments (the inverse of :func:`split_args`)."""
    if schedule is None:
        return list(train_args)
    return [SCHEDULE_FLAG, json.dumps(schedule, sort_keys=True), "--", *train_args]


def main_block(script: Path) -> ast.Module:
    """The body of ``script``'s top-level ``if __name__ == "__main__":`` block, as a module to compile."""
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value == "__main__"):
            return ast.Module(body=node.body, type_ignores=[])
    raise RuntimeError(f"{script} has no `if __name__ == \"__main__\":` block: not the train_c2i.py this launcher runs")


def run_main_block(module, script: Path) -> None:
    """Run ``script``'s ``__main__`` block in ``module``'s namespace (so its functions, hooked or not, are the
    module's), with ``__name__`` set to ``"__main__"`` while it runs."""
    code = compile(main_block(script), str(script), "exec")
    namespace = vars(module)
    name = namespace["__name__"]
    namespace["__name__"] = "__main__"
    try:
        exec(code, namespace)
    finally:
        namespace["__name__"] = name


def main(argv: list[str]) -> None:
    schedule, train_args = split_args(argv)
    root = host_root("llamagen")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import vcq_plugin

    vcq_plugin.register(hosts=["llamagen"])  # its GPT_models hook adds GPT-VCQ-XL (EXTRA_GPT_MODELS)
    script = root / "autoregressive" / "train" / "train_c2i.py"
    sys.argv = [str(script), *train_args]
    if schedule is None:
        runpy.run_path(str(script), run_name="__main__")
        return
    import importlib

    from vcq_plugin.hooks import patched
    from vcq_plugin.patches.lr_schedules import TRAIN_C2I_MODULE, LinearLRSchedule, llamagen_hooks

    module = importlib.import_module(TRAIN_C2I_MODULE)
    with patched(llamagen_hooks(LinearLRSchedule(**schedule))):
        run_main_block(module, script)


if __name__ == "__main__":
    main(sys.argv[1:])
