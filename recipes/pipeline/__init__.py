"""Reusable stages of the recipes (``recipes/run_titok_vcq.py``, ``recipes/run_llamagen_vcq.py``).

    config          YAML + dotlist overrides, checks that fail before any training
    rundir          atomic writes, stage markers, resumable checkpoints, fault injection (tests)
    train           the resumable training loop (batches and RNG are functions of (seed, step))
    data            demo data (procedural shapes, scikit-learn digits), ImageFolder, splits
    tokenizer       titok-pytorch TiTokTokenizer with VCQ: build, train, encode, decode
    ar              class-conditional x-transformers decoder, NLL, KV-cache sampling
    summary         image grids, summary.md
    demo            the titok-pytorch host recipe (the CPU demo), stage by stage
    titok_1d        the 1d-tokenizer host recipe (its own accelerate training utilities)
    llamagen*       LlamaGen stages: extract / train (train_c2i.py under torchrun) / sample
    recipes         ``run_recipe(cfg)``: dispatch on ``host``
"""
