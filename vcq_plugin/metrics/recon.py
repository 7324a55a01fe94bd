"""Reconstruction metrics: PSNR, LPIPS (the ``lpips`` package, VGG trunk) and rFID.

PSNR is computed here (torch-fidelity has none); LPIPS is ``lpips.LPIPS(net="vgg")`` with its
packaged linear layers and a VGG16 trunk loaded from a local file (never downloaded); rFID is
torch-fidelity FID of reconstructions against the originals (:func:`compute_generation_metrics`).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch

from .._errors import check_int
from .fidelity import NOT_COMPARABLE, compute_generation_metrics, default_device, null_non_finite, parse_metrics
from .reference import ImageSource, open_images
from .samples import ADM_NUM_SAMPLES
from .weights import MissingWeightsError, resolve_vgg16_weights

RECON_METRICS = ("psnr", "lpips", "rfid")
_LPIPS: dict = {}
_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # lpips.pretrained_networks.vgg16 slices


def psnr(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    data_range: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image then averaged.

    a, b: same shape; [N, ...] batches (4-D) give one PSNR per image, other ranks count as one image.
    data_range: peak value (None: 255 for uint8 inputs, 1.0 for float). reduction: "mean" -> scalar,
    "none" -> [N]. Identical images give +inf. Computed in float64.
    """
    ta = torch.as_tensor(a)
    tb = torch.as_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if data_range is None:
        data_range = 255.0 if ta.dtype == torch.uint8 and tb.dtype == torch.uint8 else 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    ta = ta.to(torch.float64)
    tb = tb.to(torch.float64)
    if ta.dim() != 4:
        ta, tb = ta.unsqueeze(0), tb.unsqueeze(0)
    mse = (ta - tb).pow(2).flatten(1).mean(dim=1)
    out = 10.0 * torch.log10(float(data_range) ** 2 / mse)
    return out.mean() if reduction == "mean" else out


def _vgg16_trunk_only():
    """While lpips builds its trunk, give it torchvision's VGG16 ``features`` only (randomly initialised):
    no download, and no 100M-parameter classifier that lpips throws away anyway (a drift-checked hook)."""
    from ..patches.lpips_vgg import vgg16_trunk_only

    return vgg16_trunk_only()


def build_lpips(
    weights: str | os.PathLike | None = None,
    *,
    random_weights: bool = False,
    device: str | torch.device | None = None,
):
    """``lpips.LPIPS(net="vgg")`` without any download.

    The linear layers ship inside the lpips package; the VGG16 trunk is loaded from ``weights``,
    ``$VCQ_VGG16_WEIGHTS`` or ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` (torchvision's
    file), else :class:`MissingWeightsError`. ``random_weights=True`` (tests): seeded random trunk.
    """
    import lpips

    path = None if random_weights else resolve_vgg16_weights(weights)
    device = torch.device(device) if device is not None else default_device()
    key = ("random", str(device)) if path is None else (str(path.resolve()), path.stat().st_mtime_ns, str(device))
    if key in _LPIPS:
        return _LPIPS[key]
    with torch.random.fork_rng(devices=[]), _vgg16_trunk_only():
        torch.manual_seed(0)
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        mapped = {}
        for k, (lo, hi) in enumerate(_VGG_SLICES, start=1):
            for i in range(lo, hi):
                for p in ("weight", "bias"):
                    if f"features.{i}.{p}" in sd:
                        mapped[f"slice{k}.{i}.{p}"] = sd[f"features.{i}.{p}"]
        model.net.load_state_dict(mapped, strict=True)
    model = model.to(device).eval().requires_grad_(False)
    _LPIPS.clear()  # keep at most one network alive
    _LPIPS[key] = model
    return model


def _to_unit(batch: np.ndarray, device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def compute_reconstruction_metrics(
    reconstructions: ImageSource,
    originals: ImageSource,
    metrics: str | Sequence[str] = RECON_METRICS,
    *,
    lpips_weights: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    random_weights: bool = False,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    expected_samples: int = ADM_NUM_SAMPLES,
    feature_layer: str = "2048",
    missing_weights: str = "raise",
) -> dict:
    """PSNR (dB), LPIPS-VGG and rFID of reconstructions against their originals (paired, same order).

    Sources as :func:`compute_generation_metrics` (``.npz`` / folder / arrays); images are compared
    as uint8 (float inputs are rounded to 0..255 first), PSNR with peak 255, averaged per image.

    PSNR needs no network. ``missing_weights``: "raise" (default) raises :class:`MissingWeightsError`
    when the VGG16 (LPIPS) or Inception (rFID) weights are not on disk; "skip" reports that metric as
    ``None`` with the reason in ``not_computed`` and computes the others.

    Returns {"psnr", "lpips", "rfid" (those requested), "num_images", "psnr_identical_pairs",
    "comparable", "warnings", "not_computed"}. Every value is strict JSON: the PSNR of an identical pair
    is +inf, so when any pair is identical ``psnr`` is ``None`` and ``not_computed["psnr"]`` gives the
    count and the mean PSNR of the other pairs.
    """
    names = parse_metrics(metrics, RECON_METRICS)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if missing_weights not in ("raise", "skip"):
        raise ValueError(f"missing_weights must be 'raise' or 'skip', got {missing_weights!r}")
    rec = open_images(reconstructions, name="reconstructions")
    org = open_images(originals, name="originals")
    if rec.num_images != org.num_images or rec.image_shape != org.image_shape:
        raise ValueError(
            f"reconstructions and originals must pair up: {rec.num_images} x {rec.image_shape} vs "
            f"{org.num_images} x {org.image_shape}"
        )
    notes: list[str] = []
    not_computed: dict[str, str] = {}
    result: dict = {"num_images": rec.num_images, "comparable": not random_weights}
    if random_weights and "rfid" not in names:
        warnings.warn(NOT_COMPARABLE, stacklevel=2)
        notes.append(NOT_COMPARABLE)

    model = None
    if "lpips" in names:
        dev = torch.device(device) if device is not None else default_device()
        try:
            model = build_lpips(lpips_weights, random_weights=random_weights, device=dev)
        except MissingWeightsError as e:
            if missing_weights == "raise":
                raise
            result["lpips"] = None
            not_computed["lpips"] = f"not computed: {e}"
    if "psnr" in names or model is not None:
        dev = torch.device(device) if device is not None else default_device()
        psnrs, dists = [], []
        with torch.no_grad():
            for ra, oa in zip(rec.batches(batch_size), org.batches(batch_size)):
                if "psnr" in names:
                    psnrs.append(psnr(ra, oa, data_range=255.0, reduction="none"))
                if model is not None:
                    dists.append(model(_to_unit(ra, dev), _to_unit(oa, dev)).flatten().double().cpu())
        if psnrs:
            per = torch.cat(psnrs)
            identical = torch.isinf(per)
            k = int(identical.sum())
            result["psnr_identical_pairs"] = k
            if k == 0:
                result["psnr"] = float(per.mean())
            else:
                result["psnr"] = None
                rest = per[~identical]
                tail = f"; mean PSNR of the other {rest.numel()}: {float(rest.mean()):.4f} dB" if rest.numel() else ""
                not_computed["psnr"] = (f"identical images: {k} of {per.numel()} pairs are identical, whose PSNR is "
                                        f"+inf (MSE 0), so the mean is not a finite number{tail}")
        if dists:
            result["lpips"] = float(torch.cat(dists).mean())

    if "rfid" in names:
        try:
            r = compute_generation_metrics(
                reconstructions if not isinstance(reconstructions, (np.ndarray, torch.Tensor)) else rec.array,
                originals if not isinstance(originals, (np.ndarray, torch.Tensor)) else org.array,
                metrics=("fid",), weights_path=inception_weights, random_weights=random_weights,
                cache_dir=cache_dir, batch_size=batch_size, device=device, reference_stats="compute",
                expected_samples=expected_samples, feature_layer=feature_layer,
            )
        except MissingWeightsError as e:
            if missing_weights == "raise":
                raise
            result["rfid"] = None
            not_computed["rfid"] = f"not computed: {e}"
        else:
            result["rfid"] = r["fid"]
            result["comparable"] = result["comparable"] and r["comparable"]
            result["reference_cache"] = r["reference_cache"]
            notes.extend(r["warnings"])
            not_computed.update({"rfid": why for key, why in r["not_computed"].items() if key == "fid"})
    result["warnings"] = notes
    result["not_computed"] = not_computed
    return null_non_finite(result)
