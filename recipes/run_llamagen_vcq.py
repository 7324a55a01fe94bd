#!/usr/bin/env python
"""Full-scale AR on LlamaGen with a VCQ tokenizer: extract codes, train the GPT, sample.

    python recipes/run_llamagen_vcq.py extract --config recipes/configs/llamagen_ar_b.yaml data.path=/data/imagenet/train
    python recipes/run_llamagen_vcq.py train   --config recipes/configs/llamagen_ar_b.yaml train.nproc_per_node=8
    python recipes/run_llamagen_vcq.py sample  --config recipes/configs/llamagen_ar_b.yaml sampling.checkpoint=...

extract: TiTok-VCQ codes with ten-crop + flip (1d-tokenizer host), in LlamaGen's code layout.
train:   LlamaGen's autoregressive/train/train_c2i.py under torchrun, unchanged, after vcq_plugin.register().
sample:  LlamaGen's generate() with the codebook-size-aware sampler (a Table 7 preset), decoded by
         the tokenizer into PNGs + an ADM .npz (evaluate with `vcq eval`).
train and sample need CUDA GPUs and say so on a machine without them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # the recipe machinery (recipes/pipeline, recipes/hosts) runs from a checkout
    sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["extract", "train", "sample"])
    parser.add_argument("--config", default=str(HERE / "configs" / "llamagen_ar_b.yaml"))
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. train.nproc_per_node=8")
    args = parser.parse_intermixed_args(argv)

    from recipes.pipeline.config import ConfigError, load_config
    from recipes.hosts.llamagen import HostMissingError, run_stage

    try:
        return run_stage(args.stage, load_config(args.config, args.overrides))
    except (ConfigError, FileNotFoundError, HostMissingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
