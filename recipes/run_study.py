#!/usr/bin/env python
"""Reproduction study (issue 13): arms that differ only in K(i), measured side by side, verdicts by code.

    python recipes/run_study.py                                        # recipes/configs/study_cpu.yaml
    python recipes/run_study.py --config recipes/configs/study_smoke.yaml   # CI size, about a minute
    python recipes/run_study.py seeds=[0,1,2] run_dir=runs/study_3seeds     # dotted overrides
    python recipes/run_study.py --show-config                          # the composed, checked config
    python recipes/run_study.py collect runs/study_cpu                 # rebuild report.md from finished units
    python recipes/run_study.py collect RUN_DIR... --out-md T.md       # Table 4 / 6 from full-scale eval JSON

Every (dataset, arm, seed) unit is a chain of stages (recipes/study/stages.py) with provenance and
resume: rerun the same command after an interruption; a config that would change a finished stage stops
and says how to go on (a new run_dir, or restart_from=<stage>). The report is written to
``<run_dir>/report.md`` and ``report.json`` (strict JSON), with the figures in ``<run_dir>/report/``.
``collect`` takes a study run folder (rebuilds its report from the units that finished, saying which
did not) or full-scale run folders (recipes/study/collect.py: their ``vcq eval`` JSON).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # the recipe machinery runs from a checkout
    sys.path.insert(0, str(HERE.parent))
DEFAULT_CONFIG = HERE / "configs" / "study_cpu.yaml"
log = logging.getLogger("vcq.recipe")


def run(config: str, overrides: list[str]) -> Path:
    """Run (or resume) the study; returns the run folder."""
    import torch
    from tqdm.contrib.logging import logging_redirect_tqdm

    from recipes.pipeline.config import load_config
    from recipes.pipeline.rundir import run_recipe_table
    from recipes.study.stages import RECIPE, SCHEMA, build_stages

    loaded = load_config(config, overrides, schema=SCHEMA)
    torch.set_num_threads(1)  # small models on a shared CPU: one thread per process (see the config header)
    stages = build_stages(loaded.cfg)
    n_units = len({s.group for s in stages if s.group})
    log.info("study: %d units (dataset x arm x seed), %d stages, %d worker processes", n_units, len(stages),
             loaded.cfg.workers)
    with logging_redirect_tqdm():
        run_dir, results = run_recipe_table(loaded, stages, recipe=RECIPE, workers=int(loaded.cfg.workers))
    publish(run_dir.root)
    counts = results["report"]["verdict_counts"]
    log.info("report: %s (%s)", run_dir.root / "report.md", ", ".join(f"{v} {k}" for k, v in counts.items()))
    return run_dir.root


def publish(root: Path) -> None:
    """Copy the report stage's report.md / report.json / summary.md to the run folder's top level."""
    for name in ("report.md", "report.json", "summary.md"):
        src = root / "report" / name
        if src.is_file():
            shutil.copyfile(src, root / name)


def collect_study(run_root: Path, out_md: str | None = None) -> Path:
    """Rebuild report.md / report.json of a study run folder from the units that finished (checked reads)."""
    import yaml

    from recipes.pipeline.config import config_from_container
    from recipes.pipeline.rundir import RunDir
    from recipes.study.report import write_report
    from recipes.study.stages import SCHEMA, figures, gather, study_header, warnings_for

    history = sorted((run_root / "config_history").glob("[0-9][0-9][0-9]*.yaml"))
    if not history:
        raise FileNotFoundError(f"{run_root}: no config_history/ (not a study run folder)")
    container = yaml.safe_load(history[-1].read_text(encoding="utf-8"))["config"]
    cfg = config_from_container(container, SCHEMA)
    run = RunDir(run_root)
    results = gather(run, cfg, partial_ok=True)
    results["study"] = study_header(run, cfg)
    results["study"]["warnings"] = warnings_for(cfg, results)
    if results["missing_units"]:
        results["study"]["not_finished"] = results["missing_units"]
        log.warning("units not finished (left out of the report): %s", ", ".join(results["missing_units"]))
    out = run_root / "collected"
    out.mkdir(exist_ok=True)
    results["figures"] = figures(results, out)
    paths = write_report(results, out)
    for name, path in (("report.md", paths["md"]), ("report.json", paths["json"]), ("summary.md", paths["summary"])):
        shutil.copyfile(path, run_root / name)
    if out_md:
        shutil.copyfile(paths["md"], out_md)
    return run_root / "report.md"


def collect_main(argv: list[str]) -> int:
    dirs, skip = [], False
    for a in argv:  # the positional RUN_DIRs (an option's value is not one)
        if skip or a.startswith("-"):
            skip = a in ("--out-md", "--out-json", "--image-size")
            continue
        dirs.append(a)
    if dirs and all((Path(d) / "config_history").is_dir() for d in dirs):
        ap = argparse.ArgumentParser(prog="run_study.py collect")
        ap.add_argument("run_dir", nargs="+")
        ap.add_argument("--out-md", default=None, help="also copy the Markdown report here")
        args = ap.parse_args(argv)
        for d in args.run_dir:
            print(f"report: {collect_study(Path(d), args.out_md)}")
        return 0
    from recipes.study.collect import main as collect_full_scale

    return collect_full_scale(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if argv[:1] == ["collect"]:
        return collect_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="study YAML (default: %(default)s)")
    parser.add_argument("--show-config", action="store_true", help="print the composed, checked config and exit")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. ar.steps=100")
    args = parser.parse_intermixed_args(argv)

    from recipes.pipeline.config import ConfigError, load_config
    from recipes.pipeline.rundir import RunFolderError
    from recipes.pipeline.workers import WorkerError

    try:
        if args.show_config:
            from omegaconf import OmegaConf

            from recipes.study.stages import SCHEMA

            print(OmegaConf.to_yaml(load_config(args.config, args.overrides, schema=SCHEMA).to_container()), end="")
            return 0
        run(args.config, args.overrides)
    except (ConfigError, RunFolderError, WorkerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
