"""The ``1d-tokenizer`` host recipe (full scale): TiTok with ``quantizer: vcq_cosine`` trained by
bytedance/1d-tokenizer's own utilities, multi-GPU through accelerate::

    accelerate launch recipes/run_titok_vcq.py --config recipes/configs/titok_vcq_b.yaml

:func:`run_titok_1d` reproduces the host's ``scripts/train_titok.py`` ``main()`` step by step with
the host's functions (``create_model_and_loss_module``, ``create_optimizer``, ``create_lr_scheduler``,
``create_dataloader``, ``create_evaluator``, ``auto_resume``, ``train_one_epoch``, ``save_checkpoint``),
after ``vcq_plugin.register(hosts=["1d-tokenizer"])``. Because it reproduces that ``main()``, it first
checks that the checked-out ``main()`` is the one it was written against (:func:`check_train_titok_main`,
sha256 of its source, as the hooks in ``patches/`` check theirs) and refuses on drift. Differences from
that script, all deliberate: the config comes from our YAML (+ dotlist overrides, checked by the schema in
``recipes/pipeline/config.py``) instead of ``sys.argv``; the MaskGIT-VQGAN proxy-code weights are never
downloaded (``pretrained_tokenizer_weight`` must be a local file, checked before any work);
``recipe.evaluate: false`` skips the host's evaluator (its Inception network is otherwise loaded at
start); without tensorboard installed the trackers log to files only. Resuming is the host's
``auto_resume`` (accelerate state in ``experiment.output_dir``), so rerunning the same command continues.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import math
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes.pipeline.config import LoadedConfig, host_vcq_keys, titok1d_lr_schedule
from vcq_plugin._io import atomic_write_text
from .llamagen import HostMissingError, host_root

RECIPE_KEYS = ("host", "recipe", "lr_schedule")
TRAIN_SCRIPT = "scripts/train_titok.py"
PIN = "bytedance/1d-tokenizer @ 942a96fbdd873780179d1b78d5462911528bf8c8"
# sha256 of main() in scripts/train_titok.py at PIN (see _main_source_sha256): the code run_titok_1d reproduces
TRAIN_TITOK_MAIN_SHA256 = "c1352bb0587dc27b68a66a87a4f2f4bdba50d3622998fb5d36eeed4e4512639b"


class HostScriptDriftError(RuntimeError):
    """The host's training script is not the one this launcher reproduces."""


def _main_source_sha256(script: Path, function: str = "main") -> str:
    """sha256 of the source of top-level ``function`` in ``script`` (read with ``ast``, not imported),
    line endings and trailing blanks normalised as ``patches/_base.py``'s ``source_sha256``."""
    text = script.read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            src = ast.get_source_segment(text, node) or ""
            lines = [line.rstrip() for line in src.replace("\r\n", "\n").split("\n")]
            return hashlib.sha256("\n".join(lines).strip("\n").encode("utf-8")).hexdigest()
    raise HostScriptDriftError(f"{script} has no top-level {function}() any more; {_how_to_fix(script)}")


def _how_to_fix(script: Path) -> str:
    return (f"recipes/hosts/titok_1d.py reproduces its main() at {PIN}: check out that commit "
            f"(git -C {script.parents[1]} checkout {PIN.split('@ ')[1]}), or port run_titok_1d to the new main() "
            "and update TRAIN_TITOK_MAIN_SHA256")


def check_train_titok_main(root: Path) -> None:
    """Refuse (:class:`HostScriptDriftError`) unless ``root/scripts/train_titok.py``'s ``main()`` is the pinned one."""
    script = Path(root) / TRAIN_SCRIPT
    if not script.is_file():
        raise HostScriptDriftError(f"{script} does not exist; {_how_to_fix(script)}")
    found = _main_source_sha256(script)
    if found != TRAIN_TITOK_MAIN_SHA256:
        raise HostScriptDriftError(
            f"{script}: main() differs from the one run_titok_1d reproduces (source sha256 expected "
            f"{TRAIN_TITOK_MAIN_SHA256[:16]}..., found {found[:16]}...); {_how_to_fix(script)}")


def host_config(cfg: DictConfig) -> DictConfig:
    """The 1d-tokenizer config: our YAML without the recipe's own keys, unset VCQ options left out.
    ``lr_schedule: paper`` names the hooked scheduler (``vcq_warmup_hold_linear``); ``host`` leaves the
    host's ``lr_scheduler`` section as upstream reads it (no ``hold_steps``)."""
    from vcq_plugin.patches.lr_schedules import SCHEDULER_NAME

    d = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for k in RECIPE_KEYS:
        d.pop(k, None)
    if titok1d_lr_schedule(cfg) is not None:
        d["lr_scheduler"]["scheduler"] = SCHEDULER_NAME
    elif isinstance(d.get("lr_scheduler", {}).get("params"), dict):
        d["lr_scheduler"]["params"].pop("hold_steps", None)
    d["model"]["vq_model"] = host_vcq_keys(cfg)["model"]["vq_model"]
    if d["model"]["vq_model"].get("pretrained_tokenizer_weight") is None:
        d["model"]["vq_model"].pop("pretrained_tokenizer_weight", None)
    return OmegaConf.create(d)


def _import_host(root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from utils import train_utils  # noqa: F401  (the host's own module)
    except ImportError as e:
        raise ImportError(
            f"1d-tokenizer's training utilities need packages that are missing ({e}); install the host's "
            f"requirements: pip install -r {root / 'requirements.txt'}") from e
    return train_utils


def run_titok_1d(loaded: LoadedConfig) -> dict:
    """Train the TiTok tokenizer with VCQ through the host's loop; returns where its outputs are."""
    with contextlib.ExitStack() as stack:
        return _run_titok_1d(loaded, stack)


def _run_titok_1d(loaded: LoadedConfig, stack: contextlib.ExitStack) -> dict:
    root = host_root("1d-tokenizer")  # HostMissingError (no silent fallback to titok-pytorch); checked by the schema too
    check_train_titok_main(root)
    cfg = loaded.cfg
    config = host_config(cfg)
    vq = config.model.vq_model
    import torch

    import vcq_plugin

    if str(root) not in sys.path:  # the host's packages (modeling, utils, data) as its scripts see them
        sys.path.insert(0, str(root))
    vcq_plugin.register(hosts=["1d-tokenizer"])
    tu = _import_host(root)
    if titok1d_lr_schedule(cfg) is not None:  # lr_schedule: paper (hooked until the process ends)
        from vcq_plugin.hooks import patched
        from vcq_plugin.patches.lr_schedules import titok_1d_hooks

        stack.enter_context(patched(titok_1d_hooks()))
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from utils.logger import setup_logger

    # ---- from here on: train_titok.py main(), step by step (checked above)
    workspace = os.environ.get("WORKSPACE", "")
    if workspace:
        torch.hub.set_dir(workspace + "/models/hub")
    if config.training.get("enable_tf32", False):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    output_dir = config.experiment.output_dir
    os.makedirs(output_dir, exist_ok=True)
    config.experiment.logging_dir = os.path.join(output_dir, "logs")
    tracker = "wandb" if config.training.get("enable_wandb", False) else "tensorboard"
    if tracker == "tensorboard" and importlib.util.find_spec("tensorboard") is None \
            and importlib.util.find_spec("tensorboardX") is None:
        tracker = None  # the host script asks for tensorboard; without it, log to files only
    accelerator = Accelerator(
        gradient_accumulation_steps=config.training.gradient_accumulation_steps,
        mixed_precision=config.training.mixed_precision, log_with=tracker,
        project_dir=config.experiment.logging_dir, split_batches=False)
    logger = setup_logger(name="TiTok", log_level="INFO", output_file=f"{output_dir}/log{accelerator.process_index}.txt")
    if accelerator.is_main_process:
        accelerator.init_trackers(config.experiment.name)
        atomic_write_text(Path(output_dir) / "config.yaml", OmegaConf.to_yaml(config))
        logger.info(f"VCQ: quantizer={vq.get('quantizer')} vcq={dict(vq.get('vcq') or {})} K_max={vq.codebook_size} "
                    f"L={vq.num_latent_tokens}")
    if config.training.seed is not None:
        set_seed(config.training.seed, device_specific=True)
    # (the host downloads the MaskGIT-VQGAN weight here; the schema checked it is a local file instead)
    pretrained_tokenizer = tu.create_pretrained_tokenizer(config, accelerator)
    model, ema_model, loss_module = tu.create_model_and_loss_module(config, logger, accelerator, model_type="titok")
    optimizer, discriminator_optimizer = tu.create_optimizer(config, logger, model, loss_module)
    lr_scheduler, discriminator_lr_scheduler = tu.create_lr_scheduler(
        config, logger, accelerator, optimizer, discriminator_optimizer)
    train_dataloader, eval_dataloader = tu.create_dataloader(config, logger, accelerator)
    if cfg.recipe.evaluate:
        evaluator = tu.create_evaluator(config, logger, accelerator)  # loads Inception (rFID / IS)
    else:  # recipe.evaluate=false: no Inception weights needed; the host loop skips eval without a loader
        evaluator, eval_dataloader = None, None
        logger.info("recipe.evaluate=false: periodic rFID/IS evaluation is off")
    if vq.get("finetune_decoder", False):
        model, loss_module, optimizer, discriminator_optimizer, lr_scheduler, discriminator_lr_scheduler = \
            accelerator.prepare(model, loss_module, optimizer, discriminator_optimizer, lr_scheduler,
                                discriminator_lr_scheduler)
    else:
        model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if config.training.use_ema:
        ema_model.to(accelerator.device)

    per_step = config.training.per_gpu_batch_size * accelerator.num_processes
    num_batches = math.ceil(config.experiment.max_train_examples / per_step)
    steps_per_epoch = math.ceil(num_batches / config.training.gradient_accumulation_steps)
    num_epochs = math.ceil(config.training.max_train_steps / steps_per_epoch)
    global_step, first_epoch = tu.auto_resume(config, logger, accelerator, ema_model, steps_per_epoch, strict=True)
    for epoch in range(first_epoch, num_epochs):
        global_step = tu.train_one_epoch(
            config, logger, accelerator, model, ema_model, loss_module, optimizer, discriminator_optimizer,
            lr_scheduler, discriminator_lr_scheduler, train_dataloader, eval_dataloader, evaluator, global_step,
            pretrained_tokenizer=pretrained_tokenizer)
        if global_step >= config.training.max_train_steps:
            break
    accelerator.wait_for_everyone()
    tu.save_checkpoint(model, output_dir, accelerator, global_step, logger=logger)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        if config.training.use_ema:
            ema_model.copy_to(model.parameters())
        model.save_pretrained_weight(output_dir)
        logger.info(f"tokenizer weights: {output_dir} ; next: recipes/run_llamagen_vcq.py extract / train / sample, "
                    "and `vcq cliff` on the extracted codes")
    accelerator.end_training()
    return {"output_dir": output_dir, "global_step": global_step}


__all__ = ["run_titok_1d", "host_config", "check_train_titok_main", "HostMissingError", "HostScriptDriftError"]
