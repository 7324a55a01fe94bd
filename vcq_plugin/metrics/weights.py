"""Locate metric network weights on disk. Nothing here downloads.

Search order for each network: explicit path argument, environment variable, torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``, the file torch-fidelity / torchvision would download).
When none exists a :class:`MissingWeightsError` says which file is needed and where to put it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILENAME
INCEPTION_ENV = "VCQ_INCEPTION_WEIGHTS"

VGG16_FILENAME = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILENAME
VGG16_ENV = "VCQ_VGG16_WEIGHTS"


class MissingWeightsError(FileNotFoundError):
    """A metric network's weights are not on disk (and will not be downloaded)."""


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (what ``torch.hub.load_state_dict_from_url`` uses)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _resolve(what: str, path: str | os.PathLike | None, env: str, filename: str, url: str) -> Path:
    tried: list[str] = []
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        tried.append(f"argument: {p}")
    env_value = os.environ.get(env)
    if env_value:
        p = Path(env_value).expanduser()
        if p.is_file():
            return p
        tried.append(f"${env}: {p}")
    p = hub_checkpoint_dir() / filename
    if p.is_file():
        return p
    tried.append(f"torch hub cache: {p}")
    raise MissingWeightsError(
        f"{what} weights not found (nothing is downloaded at run time). Need the file {filename!r} "
        f"(from {url}). Put it at {p}, or point ${env} or the weights argument at it. "
        f"Looked in: {'; '.join(tried)}."
    )


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Path of torch-fidelity's FID Inception-v3 weights (``inception-v3-compat``)."""
    return _resolve("FID Inception-v3", path, INCEPTION_ENV, INCEPTION_FILENAME, INCEPTION_URL)


def resolve_vgg16_weights(path: str | os.PathLike | None = None) -> Path:
    """Path of torchvision's ImageNet VGG16 weights (the LPIPS-VGG backbone)."""
    return _resolve("LPIPS VGG16 backbone", path, VGG16_ENV, VGG16_FILENAME, VGG16_URL)
