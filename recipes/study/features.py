"""The study's measuring instrument: a small CNN classifier, trained once per data set on the real
training images and frozen before any arm is evaluated, registered as a torch-fidelity feature
extractor (``vcq-study-classifier``).

Why not Inception: ImageNet Inception features of 16 x 16 toy images measure little, and the run
downloads nothing. Features of a classifier trained on the data set itself (as FID's Inception is
trained on ImageNet) are what FD / precision / recall compare; its logits give the class accuracy
of samples.

torch-fidelity builds the extractor itself from its registry: ``calculate_metrics(...,
feature_extractor=EXTRACTOR_NAME, feature_extractor_weights_path=<classifier file>)``; the file is
the one :func:`save_classifier` writes (state dict + architecture), checked when read back.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from vcq_plugin._errors import check_int
from vcq_plugin._io import atomic_path

EXTRACTOR_NAME = "vcq-study-classifier"
FEATURES, LOGITS = "features", "logits"
FORMAT = "vcq-study-classifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`StudyClassifier`: five 3 x 3 conv + BatchNorm + ReLU blocks
    (widths w, w, 2w, 2w, 2w; strides 1, 1, 2, 1, 2), global average pool (the 2w-d features),
    a linear layer to the logits."""

    num_classes: int
    image_size: int
    width: int = 32


class StudyClassifier(nn.Module):
    """(N, 3, S, S) float in [0, 1] -> logits (N, C); :meth:`features` gives the pooled (N, 2w)."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        check_int("num_classes", cfg.num_classes, minimum=2)
        w = check_int("width", cfg.width, minimum=1)
        self.cfg = cfg
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((3, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 2 * w, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * w, cfg.num_classes)

    @property
    def feature_dim(self) -> int:
        return 2 * self.cfg.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def predict(model: StudyClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, C) of float images (N, 3, S, S) in [0, 1], in eval mode."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size].float()) for i in range(0, images.shape[0], batch_size)])


def train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, held_images: torch.Tensor,
                     held_labels: torch.Tensor, *, num_classes: int, steps: int = 400, batch_size: int = 64,
                     lr: float = 3e-3, weight_decay: float = 1e-4, width: int = 32, hflip: bool = False,
                     seed: int = 0) -> tuple[StudyClassifier, dict]:
    """Train :class:`StudyClassifier` on the real training images; report its held-out accuracy.

    AdamW with a cosine learning rate, batches drawn with a generator seeded by ``seed`` (the result
    is a pure function of the arguments on one machine). ``hflip``: random horizontal flips (only
    for data whose classes are mirror-symmetric: the study's outlines are, digits are not).
    Returns the model in eval mode and ``{"heldout_top1", "train_top1", "chance", "steps", ...}``.
    """
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if train_images.dim() != 4 or train_images.shape[1] != 3 or train_images.shape[2] != train_images.shape[3]:
        raise ValueError(f"train_images must be (N, 3, S, S), got {tuple(train_images.shape)}")
    torch.manual_seed(seed)
    model = StudyClassifier(ClassifierConfig(num_classes, int(train_images.shape[-1]), width))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    n = train_images.shape[0]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        x = train_images[idx].float()
        if hflip:
            flip = torch.rand(x.shape[0], generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.cross_entropy(model(x), train_labels[idx].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    held_top1 = float((predict(model, held_images).argmax(1) == held_labels).float().mean())
    m = min(n, 2048)
    train_top1 = float((predict(model, train_images[:m]).argmax(1) == train_labels[:m]).float().mean())
    info = {"heldout_top1": held_top1, "train_top1": train_top1, "chance": 1.0 / num_classes, "steps": steps,
            "num_train": int(n), "num_heldout": int(held_images.shape[0]), "feature_dim": model.feature_dim,
            "final_loss": float(loss.detach()), "architecture": asdict(model.cfg), "seed": int(seed)}
    return model, info


def save_classifier(path: str | os.PathLike, model: StudyClassifier, info: dict[str, Any] | None = None) -> str:
    """Write the frozen classifier atomically; returns the file's sha256 (hex)."""
    blob = {"format": FORMAT, "config": asdict(model.cfg), "state_dict": model.state_dict(), "info": info or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return sha256_file(path)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_classifier(path: str | os.PathLike, expected_sha256: str | None = None) -> StudyClassifier:
    """Read a :func:`save_classifier` file (eval mode); a wrong checksum or format names the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"study classifier {str(p)!r} does not exist (train it first: the study's "
                                "classifier stage)")
    if expected_sha256 is not None and sha256_file(p) != expected_sha256:
        raise ValueError(f"study classifier {str(p)!r} changed since it was frozen (sha256 mismatch): "
                         "redo the classifier stage and every metric computed with it")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise ValueError(f"study classifier {str(p)!r} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{str(p)!r} is not a study classifier file (format {FORMAT!r})")
    model = StudyClassifier(ClassifierConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval().requires_grad_(False)


class StudyFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor over a frozen :class:`StudyClassifier`.

    Input: uint8 (N, 3, S, S) as torch-fidelity feeds it; output: the requested of ``features``
    (pooled, 2w-d; the layer of FD / precision / recall / KID) and ``logits`` (C-d; ISC).
    The classifier file comes from ``feature_extractor_weights_path`` (no default, no download).
    """

    def __init__(self, name: str, features_list: list, feature_extractor_weights_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if not feature_extractor_weights_path:
            raise ValueError(f"{EXTRACTOR_NAME} needs feature_extractor_weights_path= the study classifier file "
                             "(recipes.study.features.save_classifier)")
        self.model = load_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, str]:
        return FEATURES, LOGITS

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return LOGITS if metric == "isc" else FEATURES

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        raise NotImplementedError("the study classifier is not compiled")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{EXTRACTOR_NAME} takes uint8 (N, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
        size = self.model.cfg.image_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"{EXTRACTOR_NAME} was trained on {size} x {size} images, got {tuple(x.shape[-2:])}")
        xf = x.float() / 255.0
        feats = self.model.features(xf)
        out = {FEATURES: feats, LOGITS: self.model.head(feats)}
        return tuple(out[name] for name in self.features_list)


if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EXTRACTOR_NAME, StudyFeatureExtractor)


def as_uint8_nchw(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """uint8 (N, 3, H, W) from float [0, 1] NCHW or uint8 NHWC / NCHW (the project's converter)."""
    from vcq_plugin.metrics.samples import to_uint8_nhwc

    return torch.from_numpy(to_uint8_nhwc(images, name=name)).permute(0, 3, 1, 2).contiguous()
