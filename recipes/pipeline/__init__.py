"""The recipe machinery behind ``recipes/run_titok_vcq.py``, ``recipes/run_llamagen_vcq.py`` and
``recipes/run_study.py`` (the reproduction study: its schema and stage table are in ``recipes/study/``).

Where to look:

    config        THE config schema: every key, default, type and range; load_config() checks once
    demo          THE stage table of the CPU demo (titok-pytorch host): what each stage reads and writes
    rundir        stages, provenance (stage.json), checked reads of stage outputs, checkpoints
    workers       worker processes that never outlive the main process
    train         the resumable training loop (batches and RNG are functions of (seed, step))
    data          demo data (procedural shapes, scikit-learn digits), ImageFolder, splits
    tokenizer     titok-pytorch TiTokTokenizer with VCQ: build, train, encode, decode; its dead-code
                  restarts are the library's vcq_plugin.restarts.CodebookRestarts (imported in one line)
    ar            class-conditional x-transformers decoder, NLL, KV-cache sampling
    diagnostics   warnings for runs too short or too small to mean anything
    summary       labelled figures, result tables with their legends, summary.md
    dispatch      run_recipe(loaded): dispatch on ``host``
    (recipes/hosts: the full-scale 1d-tokenizer and LlamaGen launchers)
"""
import warnings

# x-transformers (imported by titok-pytorch and by our AR model) decorates a function with
# torch.jit.script at import time, and torch >= 2.10 answers with a FutureWarning ("torch.jit.script
# is deprecated"), once per process. Nothing in the recipes uses TorchScript, so exactly this one
# warning from exactly that torch module is silenced; every other warning still shows.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")
