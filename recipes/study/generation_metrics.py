"""Generation and reconstruction metrics of the study.

- FD, precision and recall: torch-fidelity's ``calculate_metrics`` with the study classifier as the
  feature extractor (``recipes.study.features``): FD between Gaussian fits of the classifier's
  pooled features (FID's formula, torch-fidelity's code), precision / recall on k-NN manifolds
  (Kynkaanniemi et al. 2019, torch-fidelity's ``prc``, k = ``prc_neighborhood``). Nothing is
  computed by hand here.
- class accuracy of samples: the frozen classifier's prediction vs the class the sampler was asked for.
- memorisation: the share of generated token sequences equal to a training sequence (exact row
  match), and the distance from each generated image to its nearest training image (RMS over
  pixels and channels, images in [0, 1]) next to the same distance for held-out real images (a
  real image the models never saw: the level of "no copying").
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .features import EXTRACTOR_NAME, as_uint8_nchw, load_classifier, predict


class _UInt8Images(Dataset):
    """The Dataset torch-fidelity reads: uint8 (3, H, W) tensors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def fidelity_metrics(samples: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, *,
                     classifier_path: str | os.PathLike, prc: bool = True, prc_neighborhood: int = 3,
                     batch_size: int = 256, cuda: bool | None = None) -> dict[str, Any]:
    """FD (and precision / recall / F-score when ``prc``) of ``samples`` against ``reference``.

    Images: float (N, 3, S, S) in [0, 1] or uint8 NHWC / NCHW. Precision is the share of samples
    inside the reference's k-NN manifold, recall the share of reference images inside the samples'.
    Returns ``{"fd", "precision", "recall", "f_score", "num_samples", "num_reference",
    "feature_extractor", "prc_neighborhood"}``.
    """
    import torch_fidelity

    a, b = as_uint8_nchw(samples, "samples"), as_uint8_nchw(reference, "reference")
    for name, x in (("samples", a), ("reference", b)):
        if x.shape[0] < 2:
            raise ValueError(f"{name}: FD needs at least 2 images, got {x.shape[0]}")
    if prc and min(a.shape[0], b.shape[0]) <= prc_neighborhood:
        raise ValueError(f"precision / recall with k = {prc_neighborhood} need more than k images per side, "
                         f"got {a.shape[0]} samples and {b.shape[0]} reference images")
    out = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(a), input2=_UInt8Images(b), feature_extractor=EXTRACTOR_NAME,
        feature_extractor_weights_path=str(classifier_path), fid=True, prc=prc, prc_neighborhood=prc_neighborhood,
        cuda=torch.cuda.is_available() if cuda is None else cuda, batch_size=batch_size,
        cache=False, save_cpu_ram=True, verbose=False)  # save_cpu_ram: no DataLoader worker processes
    res = {"fd": float(out["frechet_inception_distance"]), "num_samples": int(a.shape[0]),
           "num_reference": int(b.shape[0]), "feature_extractor": EXTRACTOR_NAME}
    if prc:
        res.update(precision=float(out["precision"]), recall=float(out["recall"]), f_score=float(out["f_score"]),
                   prc_neighborhood=int(prc_neighborhood))
    return res


def class_accuracy(samples: torch.Tensor, requested: torch.Tensor, classifier_path: str | os.PathLike) -> float:
    """Share of samples the frozen classifier assigns to the class they were generated for.
    The images go through the same uint8 rounding as in :func:`fidelity_metrics`."""
    if samples.shape[0] != requested.shape[0]:
        raise ValueError(f"{samples.shape[0]} samples but {requested.shape[0]} requested labels")
    model = load_classifier(classifier_path)
    x = as_uint8_nchw(samples, "samples").float() / 255.0
    return float((predict(model, x).argmax(1) == requested.long()).float().mean())


def token_copy_rate(sample_tokens: np.ndarray | torch.Tensor, train_tokens: np.ndarray | torch.Tensor) -> float:
    """Share of generated token sequences (rows) that equal some training sequence exactly."""
    s = np.ascontiguousarray(np.asarray(sample_tokens, dtype=np.int64))
    t = np.ascontiguousarray(np.asarray(train_tokens, dtype=np.int64))
    if s.ndim != 2 or t.ndim != 2 or s.shape[1] != t.shape[1]:
        raise ValueError(f"token arrays must be (N, L) with the same L, got {s.shape} and {t.shape}")
    seen = {row.tobytes() for row in t}
    return float(np.mean([row.tobytes() in seen for row in s])) if s.shape[0] else 0.0


@torch.no_grad()
def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """RMS pixel distance (images in [0, 1]) from each query image to its nearest ``bank`` image, (Nq,)."""
    b = bank.flatten(1).float()
    d = b.shape[1]
    out = [torch.cdist(queries[i:i + chunk].flatten(1).float(), b).min(1).values / d**0.5
           for i in range(0, queries.shape[0], chunk)]
    return torch.cat(out)


def memorisation(sample_tokens, train_tokens, sample_images: torch.Tensor, train_images: torch.Tensor,
                 heldout_images: torch.Tensor) -> dict[str, float]:
    """Token copies and nearest-training-image distances of the samples, with the held-out reference.

    ``nn_ratio`` = median sample distance / median held-out distance: near 1 when samples are as far
    from the training set as unseen real images, near 0 when they copy it.
    """
    ds = nearest_distance(sample_images, train_images)
    dh = nearest_distance(heldout_images, train_images)
    med_s, med_h = float(ds.median()), float(dh.median())
    return {"token_copy_rate": token_copy_rate(sample_tokens, train_tokens),
            "nn_dist_median": med_s, "nn_dist_mean": float(ds.mean()),
            "nn_dist_heldout_median": med_h,
            "nn_ratio": med_s / med_h if med_h > 0 else None}
