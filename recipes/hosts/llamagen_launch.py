"""Run LlamaGen's ``autoregressive/train/train_c2i.py`` unchanged, with VCQ registered.

Started by ``recipes/run_llamagen_vcq.py train`` as ``torchrun ... -m recipes.hosts.llamagen_launch
<train_c2i.py arguments>`` with the LlamaGen root first on ``PYTHONPATH``. It registers the
LlamaGen hooks, adds the paper's 32-layer XL (``GPT-VCQ-XL``) to LlamaGen's ``GPT_models`` and
executes the script as ``__main__``: the training loop, DDP, checkpoints are LlamaGen's own.
"""
from __future__ import annotations

import functools
import runpy
import sys

from .llamagen import EXTRA_GPT_MODELS, host_root


def main(argv: list[str]) -> None:
    root = host_root("llamagen")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import vcq_plugin

    vcq_plugin.register(hosts=["llamagen"])  # its GPT_models hook adds GPT-VCQ-XL (EXTRA_GPT_MODELS)
    script = root / "autoregressive" / "train" / "train_c2i.py"
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")


def _build(gpt, dims, **kwargs):
    return gpt.Transformer(gpt.ModelArgs(**dims, **kwargs))


if __name__ == "__main__":
    main(sys.argv[1:])
