"""Plot the learning-rate schedule of each full-scale config over its run: ``recipes/configs/lr_schedules.png``.

    python -m recipes.hosts.lr_plot [OUT.png]

One panel per schedule (tokenizers; AR Base-tokenizer group; AR Large-tokenizer group). The solid line
is ``lr_schedule: paper`` (Appendix A, :meth:`LinearLRSchedule.lr_at`, the function the hooks run);
the dashed line is what ``lr_schedule: host`` gives: 1d-tokenizer's own cosine (its
``utils/lr_schedulers.py``, loaded from the submodule when it is checked out) and LlamaGen's constant
learning rate (train_c2i.py has no scheduler).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"
OUT = CONFIGS / "lr_schedules.png"
PANELS = (("titok_vcq_b.yaml", "Tokenizers (titok_vcq_b / _l / constant_b)"),
          ("llamagen_ar_b.yaml", "AR, Base-tokenizer group (llamagen_ar_b / _l)"),
          ("llamagen_ar_xl.yaml", "AR, Large-tokenizer group (llamagen_ar_xl)"))


def _titok_host_lambda(cfg) -> Optional[Callable[[int], float]]:
    """1d-tokenizer's own scheduler (``lr_scheduler.scheduler``) as lr(step), from its checked-out
    ``utils/lr_schedulers.py`` (loaded by path: only torch needed); None without the submodule."""
    path = REPO / "third_party" / "1d-tokenizer" / "utils" / "lr_schedulers.py"
    if not path.is_file():
        return None
    import torch

    spec = importlib.util.spec_from_file_location("_titok_lr_schedulers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = cfg.lr_scheduler.params
    peak = float(p.learning_rate)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = mod.get_scheduler(str(cfg.lr_scheduler.scheduler), opt, num_warmup_steps=int(p.warmup_steps),
                              num_training_steps=int(cfg.training.max_train_steps), base_lr=peak, end_lr=float(p.end_lr))
    factor = sched.lr_lambdas[0]
    return lambda step: peak * factor(step)


def curves(name: str) -> Tuple[object, Callable[[int], float], Optional[Callable[[int], float]], str]:
    """(paper schedule, its lr(step), the host's lr(step) or None, host label) of one config."""
    from recipes.pipeline.config import llamagen_lr_schedule, load_config, titok1d_lr_schedule

    cfg = load_config(CONFIGS / name, check_paths=False).cfg
    if name.startswith("titok_"):
        paper = titok1d_lr_schedule(cfg)
        return paper, paper.lr_at, _titok_host_lambda(cfg), f"host: 1d-tokenizer {cfg.lr_scheduler.scheduler}"
    paper = llamagen_lr_schedule(cfg)
    lr = float(cfg.train.lr)
    return paper, paper.lr_at, (lambda step: lr), "host: LlamaGen train_c2i (constant)"


def plot(out: Path = OUT, points: int = 400) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vcq_plugin._io import atomic_write

    fig = Figure(figsize=(11, 3.0), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS))
    for ax, (name, title) in zip(axes, PANELS):
        paper, paper_lr, host_lr, host_label = curves(name)
        end = paper.total_steps
        steps: List[int] = sorted({round(end * i / points) for i in range(points + 1)}
                                  | {paper.warmup_steps, paper.decay_start})
        ax.plot([s / 1e3 for s in steps], [paper_lr(s) * 1e4 for s in steps], lw=2,
                label=f"paper: warm-up {paper.warmup_steps / 1000:g}k, peak to {paper.decay_start / 1000:g}k, "
                      f"linear to {paper.end_lr:g}")
        if host_lr is not None:
            ax.plot([s / 1e3 for s in steps], [host_lr(s) * 1e4 for s in steps], ls="--", lw=1.2, label=host_label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer update (k)", fontsize=8)
        ax.set_ylabel("learning rate (x1e-4)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, paper.peak_lr * 1e4 * 1.12)
        ax.legend(fontsize=6.5, loc="lower center")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png"))
    return out


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    print(plot(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
