"""The paper's learning-rate schedules (Appendix A), given to the hosts' own training code by hooks.

Shape (:func:`lr_factor`, the one formula; :meth:`LinearLRSchedule.lr_at` = peak x factor)::

    step < warmup_steps                      peak * step / warmup_steps      (the hosts' own warm-up rule)
    warmup_steps <= step < decay_start       peak                             (decay_start = warmup + hold)
    decay_start <= step < total_steps        linear from peak to end_lr
    step >= total_steps                      end_lr

``step`` is the number of optimizer updates already applied (0 = the first update), so ``lr_at(step)``
is the learning rate the update number ``step`` uses.

Hooks (drift-checked like every hook in ``patches/``, installed for a scope with
:func:`vcq_plugin.hooks.patched`, undone by ``unregister()``):

- bytedance/1d-tokenizer: :func:`titok_1d_hooks` replaces ``utils.train_utils.create_lr_scheduler``
  (the host's scheduler factory, called by ``scripts/train_titok.py`` and by our recipe) so that
  ``lr_scheduler.scheduler: vcq_warmup_hold_linear`` (:data:`SCHEDULER_NAME`) builds this shape with
  ``lr_scheduler.params.{learning_rate, warmup_steps, hold_steps, end_lr}`` over
  ``training.max_train_steps``, as a ``torch.optim.lr_scheduler.LambdaLR`` counted in the same units as
  the host's own schedulers (x ``accelerator.num_processes``: accelerate steps a prepared scheduler once
  per process per update). Any other name runs the host's original factory. The host's
  ``get_scheduler`` cannot take the name itself: its signature has no hold length and no process count.
  Resuming is the host's: accelerate saves and restores the scheduler's ``last_epoch``.
- LlamaGen: :func:`llamagen_hooks` replaces ``autoregressive.train.train_c2i.creat_optimizer`` so the
  AdamW it returns carries a ``LambdaLR`` stepped by an optimizer step hook (train_c2i has no
  scheduler). On ``optimizer.load_state_dict`` (train_c2i's ``--gpt-ckpt`` resume) the schedule moves
  to the number of updates the loaded AdamW state has applied, so a resumed run continues at the
  right step with no extra checkpoint entry.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from ._base import Hook

SCHEDULER_NAME = "vcq_warmup_hold_linear"  # the name the 1d-tokenizer hook adds to the host's factory

# source_sha256 of the checked 1d-tokenizer symbols at its pinned commit (see patches/titok_1d.py)
TITOK_1D_SHA256 = {
    "create_lr_scheduler": "43b088eb364bb3e79e9d4c41806e7c4368ff4b4c61871b1907c10503d775af40",
    # steps the scheduler once per update, the discriminator's only while it trains; logs get_last_lr()
    "train_one_epoch": "d3dc08cb0da987f8c75f464d9b5fe1cf07f54b1c6d6d26e6712d5cbf16893502",
    "utils.lr_schedulers:get_cosine_schedule_with_warmup": "201312fee6c0937c2b723db71943c645eea07476bc1743ead92ca5f15465b912",  # its warm-up rule is the one lr_factor uses
}
# source_sha256 of the checked LlamaGen symbols at its pinned commit (see patches/llamagen.py)
LLAMAGEN_SHA256 = {
    "creat_optimizer": "443df7c080496a57440951d70d7c325a4ef71efee1f78ef5c041c46c374484e7",
    # calls creat_optimizer once, then optimizer.load_state_dict(checkpoint["optimizer"]) to resume, then
    # one optimizer step (scaler.step) per training step; saves optimizer.state_dict() in its checkpoints
    "main": "f7aee9e69b3a4466d850c8c9da7e22fc51e74637b17995e641b739f3face1c35",
}
TRAIN_C2I_MODULE = "autoregressive.train.train_c2i"


# ---------------------------------------------------------------------- the shape (pure)
def lr_factor(step: int, *, warmup_steps: int, hold_steps: int, total_steps: int, end_factor: float) -> float:
    """Learning rate / peak for update number ``step`` (0-based): linear warm-up from 0, ``hold_steps``
    at the peak, linear decay to ``end_factor`` at ``total_steps``, ``end_factor`` after it."""
    if step < 0:
        raise ValueError(f"step={step}: update numbers start at 0")
    if step < warmup_steps:
        return float(step) / float(warmup_steps)
    decay_start = warmup_steps + hold_steps
    if step < decay_start:
        return 1.0
    if step >= total_steps:
        return float(end_factor)
    progress = float(step - decay_start) / float(total_steps - decay_start)
    return 1.0 + (float(end_factor) - 1.0) * progress


@dataclass(frozen=True)
class LinearLRSchedule:
    """Warm-up, hold at the peak, linear decay (Appendix A). Steps are optimizer updates; LRs are absolute.

    Args:
        peak_lr: the learning rate after warm-up (the optimizer's ``lr``).
        end_lr: the learning rate at ``total_steps`` and after.
        warmup_steps: updates of the linear warm-up from 0 (0 = start at the peak).
        hold_steps: updates held at the peak after the warm-up (0 = decay right after it).
        total_steps: the update at which the decay reaches ``end_lr``.
    """

    peak_lr: float
    end_lr: float
    warmup_steps: int
    hold_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        if not self.peak_lr > 0:
            raise ValueError(f"peak_lr={self.peak_lr}: must be > 0")
        if not 0 <= self.end_lr <= self.peak_lr:
            raise ValueError(f"end_lr={self.end_lr}: must be >= 0 and <= peak_lr={self.peak_lr} (a decay)")
        for name in ("warmup_steps", "hold_steps", "total_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: must be an integer >= 0")
        if self.decay_start >= self.total_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} + hold_steps={self.hold_steps} = {self.decay_start} must be < "
                f"total_steps={self.total_steps}: the decay would never start")

    @property
    def decay_start(self) -> int:
        """The first update of the linear decay (= warmup_steps + hold_steps)."""
        return self.warmup_steps + self.hold_steps

    @property
    def end_factor(self) -> float:
        return self.end_lr / self.peak_lr

    def factor(self, step: int) -> float:
        """lr / peak_lr at update ``step`` (a ``LambdaLR`` lambda)."""
        return lr_factor(step, warmup_steps=self.warmup_steps, hold_steps=self.hold_steps,
                         total_steps=self.total_steps, end_factor=self.end_factor)

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based)."""
        return self.peak_lr * self.factor(step)

    def scaled(self, n: int) -> "LinearLRSchedule":
        """The same schedule counted in units of 1/n update (accelerate steps a scheduler n times per update):
        ``scaled(n).lr_at(k * n) == lr_at(k)`` exactly."""
        return dataclasses.replace(self, warmup_steps=self.warmup_steps * n, hold_steps=self.hold_steps * n,
                                   total_steps=self.total_steps * n)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _lambda_lr(optimizer: Any, factor: Callable[[int], float]):
    """A ``LambdaLR`` whose lambda is a plain function (so its state dict holds the step, not the shape:
    a resumed run takes the shape from its config, as the hosts' own schedulers do)."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step))


# ---------------------------------------------------------------------- 1d-tokenizer
def schedule_from_1d_config(config: Any) -> LinearLRSchedule:
    """The :class:`LinearLRSchedule` a 1d-tokenizer config with ``lr_scheduler.scheduler: {SCHEDULER_NAME}``
    describes (in optimizer updates)."""
    p = config.lr_scheduler.params
    missing = [k for k in ("learning_rate", "warmup_steps", "hold_steps", "end_lr") if p.get(k) is None]
    if missing:
        raise ValueError(f"lr_scheduler.scheduler={SCHEDULER_NAME!r} needs lr_scheduler.params.{missing[0]} "
                         f"(it uses learning_rate, warmup_steps, hold_steps, end_lr)")
    return LinearLRSchedule(peak_lr=float(p.learning_rate), end_lr=float(p.end_lr), warmup_steps=int(p.warmup_steps),
                            hold_steps=int(p.hold_steps), total_steps=int(config.training.max_train_steps))


def _make_create_lr_scheduler(original: Any) -> Any:
    @functools.wraps(original)
    def create_lr_scheduler(config, logger, accelerator, optimizer, discriminator_optimizer=None):
        if config.lr_scheduler.scheduler != SCHEDULER_NAME:
            return original(config, logger, accelerator, optimizer, discriminator_optimizer)
        logger.info("Creating lr_schedulers.")
        schedule = schedule_from_1d_config(config)
        n = int(accelerator.num_processes)
        logger.info(f"lr schedule {SCHEDULER_NAME}: {schedule.to_dict()} (x {n} scheduler steps per update)")
        lr_scheduler = _lambda_lr(optimizer, schedule.scaled(n).factor)
        discriminator_lr_scheduler = None
        if discriminator_optimizer is not None:
            # as the host's factory: same warm-up, stepped only while the discriminator trains, so its total
            # is the generator's minus discriminator_start
            scaled = schedule.scaled(n)
            disc = dataclasses.replace(scaled, total_steps=scaled.total_steps - int(config.losses.discriminator_start))
            discriminator_lr_scheduler = _lambda_lr(discriminator_optimizer, disc.factor)
        return lr_scheduler, discriminator_lr_scheduler

    return create_lr_scheduler


def titok_1d_hooks() -> List[Hook]:
    """The hook that adds :data:`SCHEDULER_NAME` to 1d-tokenizer's ``create_lr_scheduler`` (needs
    ``vcq_plugin.register(hosts=["1d-tokenizer"])`` first, so ``utils.train_utils`` imports)."""
    from .titok_1d import HOST, HOW_TO_FIX, PIN

    return [Hook(host=HOST, module="utils.train_utils", attribute="create_lr_scheduler",
                 checks=dict(TITOK_1D_SHA256), make=_make_create_lr_scheduler, pin=PIN, how_to_fix=HOW_TO_FIX)]


# ---------------------------------------------------------------------- LlamaGen
def updates_applied(optimizer: Any) -> int:
    """How many updates an optimizer's state has applied: the largest per-parameter ``step`` (Adam/AdamW
    keep one), 0 for a fresh optimizer."""
    steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
    return int(max(steps)) if steps else 0


def attach_schedule(optimizer: Any, schedule: LinearLRSchedule):
    """Drive ``optimizer``'s learning rate by ``schedule``: a ``LambdaLR`` over its parameter groups (their
    ``lr`` is the peak), stepped after every ``optimizer.step()`` and moved to :func:`updates_applied`
    after every ``optimizer.load_state_dict``. Returns the scheduler (also ``optimizer.vcq_lr_scheduler``)."""
    for i, group in enumerate(optimizer.param_groups):
        if group["lr"] != schedule.peak_lr:
            raise ValueError(f"optimizer param group {i} has lr={group['lr']}, the schedule's peak is "
                             f"{schedule.peak_lr}: build the optimizer with lr = peak")
    scheduler = _lambda_lr(optimizer, schedule.factor)

    def after_step(opt, args, kwargs):
        scheduler.step()

    def after_load(opt):
        scheduler.last_epoch = updates_applied(opt) - 1
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended on resume
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()

    optimizer.register_step_post_hook(after_step)
    optimizer.register_load_state_dict_post_hook(after_load)
    optimizer.vcq_lr_scheduler = scheduler
    return scheduler


def _make_creat_optimizer(original: Any, schedule: Optional[LinearLRSchedule]) -> Any:
    @functools.wraps(original)
    def creat_optimizer(model, weight_decay, learning_rate, betas, logger):
        optimizer = original(model, weight_decay, learning_rate, betas, logger)
        if schedule is not None:
            if float(learning_rate) != schedule.peak_lr:
                raise ValueError(f"--lr={learning_rate} differs from the schedule's peak_lr={schedule.peak_lr}")
            attach_schedule(optimizer, schedule)
            logger.info(f"vcq_plugin: learning-rate schedule {schedule.to_dict()} attached to the optimizer")
        return optimizer

    return creat_optimizer


def llamagen_hooks(schedule: LinearLRSchedule) -> List[Hook]:
    """The hook that attaches ``schedule`` to the AdamW that LlamaGen's ``train_c2i.creat_optimizer`` builds."""
    from .llamagen import HOST, HOW_TO_FIX, PIN

    return [Hook(host=HOST, module=TRAIN_C2I_MODULE, attribute="creat_optimizer", checks=dict(LLAMAGEN_SHA256),
                 make=lambda original: _make_creat_optimizer(original, schedule), pin=PIN, how_to_fix=HOW_TO_FIX)]
