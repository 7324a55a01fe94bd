#!/usr/bin/env python
"""VCQ main job: tokenizer -> tokens.npy -> entropy-cliff report -> AR model -> aware sampling.

    python recipes/run_titok_vcq.py                                  # CPU demo (configs/demo_cpu.yaml)
    python recipes/run_titok_vcq.py --config recipes/configs/demo_cpu.yaml tokenizer.steps=100
    accelerate launch recipes/run_titok_vcq.py --config recipes/configs/titok_vcq_b.yaml   # full scale

The config's ``host:`` picks the codebase: ``titok-pytorch`` (the CPU demo: titok-pytorch's
TiTokTokenizer with VCQ + an x-transformers AR model) or ``1d-tokenizer`` (bytedance/1d-tokenizer's
TiTok trained by its own accelerate loop, from third_party/1d-tokenizer). Every stage resumes:
rerun the same command after an interruption.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # the recipe machinery (recipes/pipeline, recipes/hosts) runs from a checkout
    sys.path.insert(0, str(HERE.parent))
DEFAULT_CONFIG = HERE / "configs" / "demo_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="recipe YAML (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. tokenizer.steps=100")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    from recipes.pipeline.config import ConfigError, load_config
    from recipes.pipeline.dispatch import run_recipe

    try:
        cfg = load_config(args.config, args.overrides)
        run_recipe(cfg)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
