#!/usr/bin/env python
"""VCQ main job: tokenizer -> tokens.npy -> entropy-cliff report -> AR model -> aware sampling.

    python recipes/run_titok_vcq.py                                  # CPU demo (configs/demo_cpu.yaml)
    python recipes/run_titok_vcq.py tokenizer.steps=400 run_dir=runs/short
    python recipes/run_titok_vcq.py --show-config                    # the composed config, then exit
    accelerate launch recipes/run_titok_vcq.py --config recipes/configs/titok_vcq_b.yaml   # full scale

The config's ``host:`` picks the codebase and its schema (recipes/pipeline/config.py): ``titok-pytorch``
(the CPU demo: titok-pytorch's TiTokTokenizer with VCQ + an x-transformers AR model; stages in
recipes/pipeline/demo.py) or ``1d-tokenizer`` (bytedance/1d-tokenizer's TiTok trained by its own
accelerate loop, from third_party/1d-tokenizer). Every stage resumes: rerun the same command after an
interruption. A config that would change a finished stage stops and says how to go on
(a new run_dir, or restart_from=<stage>).
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
    parser.add_argument("--show-config", action="store_true", help="print the composed, checked config and exit")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. tokenizer.steps=100")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    from omegaconf import OmegaConf
    from tqdm.contrib.logging import logging_redirect_tqdm

    from recipes.hosts.llamagen import HostMissingError
    from recipes.pipeline.config import ConfigError, load_config
    from recipes.pipeline.dispatch import run_recipe
    from recipes.pipeline.rundir import RunFolderError
    from recipes.pipeline.workers import WorkerError

    try:
        loaded = load_config(args.config, args.overrides)
        if args.show_config:
            print(OmegaConf.to_yaml(loaded.to_container()), end="")
            return 0
        with logging_redirect_tqdm():  # log lines are printed above the progress bars, never through them
            run_recipe(loaded)
    except (ConfigError, HostMissingError, RunFolderError, WorkerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
