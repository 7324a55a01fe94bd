"""gFID / IS / precision / recall / KID of a sample set against a reference (ADM protocol).

Every metric is torch-fidelity's own function (``fid_features_to_statistics``,
``fid_statistics_to_metric``, ``isc_features_to_metric``, ``prc_features_to_metric``,
``kid_features_to_metric``) applied to features of torch-fidelity's ``inception-v3-compat``
extractor (the standard PyTorch port of the TF FID Inception that ADM's evaluator uses):
pool_3 (2048-d) for FID / precision / recall (k = 3) / KID, unbiased logits for IS.
This module only streams images through the extractor and caches reference features.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from typing import Sequence

import numpy as np
import torch
from torch_fidelity import registry as tf_registry
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import (
    KEY_METRIC_F_SCORE,
    KEY_METRIC_PRECISION,
    KEY_METRIC_RECALL,
    prc_features_to_metric,
)

from .._errors import check_int, unknown_name_error
from .reference import (
    ImageSet,
    ImageSource,
    cache_path,
    default_cache_dir,
    load_reference_stats,
    open_images,
    read_cache,
    write_cache,
)
from .samples import ADM_NUM_SAMPLES, check_sample_count
from .weights import resolve_inception_weights

GENERATION_METRICS = ("fid", "is", "prc", "kid")
FEATURE_EXTRACTOR = "inception-v3-compat"
RANDOM_FEATURE_EXTRACTOR = "vcq-inception-v3-random"
POOL, LOGITS = "2048", "logits_unbiased"
FEATURE_LAYERS = ("64", "192", "768", "2048")
RANDOM_SEED = 0
NOT_COMPARABLE = "random_weights=True: random-initialised feature extractor, results are NOT comparable (tests only)"


class RandomInceptionV3(FeatureExtractorInceptionV3):
    """Inception-v3-compat with deterministic random weights (seed 0) for tests. No file, no download.

    Runs at 75 x 75 (the smallest Inception-v3 input) instead of 299 to keep CPU tests fast; its
    numbers are never comparable to anything.
    """

    INPUT_IMAGE_SIZE = 75

    def __init__(self, name, features_list, **kwargs):
        kwargs.pop("feature_extractor_weights_path", None)
        empty = io.BytesIO()
        torch.save({}, empty)
        empty.seek(0)
        super().__init__(name, features_list, feature_extractor_weights_path=empty, **kwargs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        if state_dict:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        g = torch.Generator().manual_seed(RANDOM_SEED)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() > 1:  # conv / fc weight: He-normal over fan-in
                    p.normal_(0.0, math.sqrt(2.0 / p[0].numel()), generator=g)
                elif name.endswith("bn.weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()
        return None


if RANDOM_FEATURE_EXTRACTOR not in tf_registry.FEATURE_EXTRACTORS_REGISTRY:
    tf_registry.register_feature_extractor(RANDOM_FEATURE_EXTRACTOR, RandomInceptionV3)


_EXTRACTORS: dict = {}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_extractor(
    features: Sequence[str] = (POOL, LOGITS),
    *,
    weights_path: str | os.PathLike | None = None,
    random_weights: bool = False,
    device: str | torch.device | None = None,
) -> tuple[FeatureExtractorInceptionV3, dict]:
    """torch-fidelity Inception extractor from its registry, plus an identity dict for caching.

    Real weights come from :func:`resolve_inception_weights` (argument, ``$VCQ_INCEPTION_WEIGHTS``,
    torch hub cache); missing weights raise :class:`MissingWeightsError`. Never downloads.
    """
    device = torch.device(device) if device is not None else default_device()
    if random_weights:
        name, path = RANDOM_FEATURE_EXTRACTOR, None
        ident = {"name": name, "seed": RANDOM_SEED, "input": RandomInceptionV3.INPUT_IMAGE_SIZE}
    else:
        name, path = FEATURE_EXTRACTOR, resolve_inception_weights(weights_path)
        st = path.stat()
        ident = {"name": name, "weights": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = (repr(sorted(ident.items())), str(device))
    fe = _EXTRACTORS.get(key)
    if fe is None:
        cls = tf_registry.FEATURE_EXTRACTORS_REGISTRY[name]
        kw = {} if path is None else {"feature_extractor_weights_path": str(path)}
        fe = cls(name, list(features), **kw).to(device).eval()
        _EXTRACTORS.clear()  # keep at most one network alive
        _EXTRACTORS[key] = fe
    else:  # same network, other outputs: FeatureExtractorBase keeps the requested list in features_list
        bad = [f for f in features if f not in fe.get_provided_features_list()]
        if bad or not features:
            raise ValueError(f"features must be a non-empty subset of {fe.get_provided_features_list()}, got {features}")
        fe.features_list = list(dict.fromkeys(features))
    return fe, ident


@torch.no_grad()
def extract_features(images: ImageSet, extractor: FeatureExtractorInceptionV3, batch_size: int = 50) -> dict[str, torch.Tensor]:
    """Run ``extractor`` over all images; returns {feature name: float32 [N, D] on CPU}."""
    device = next(extractor.parameters()).device
    out: dict[str, list[torch.Tensor]] = {k: [] for k in extractor.get_requested_features_list()}
    for batch in images.batches(batch_size):
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous().to(device)
        feats = extractor.convert_features_tuple_to_dict(extractor(x))
        for k, v in feats.items():
            out[k].append(v.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _check_enough_images(names, count: int, what: str, source, prc_neighborhood: int) -> None:
    """ValueError when ``count`` images are too few for a requested metric (checked before any network runs).

    FID needs a covariance (>= 2 images), precision/recall the k-th nearest neighbour of each image among the
    others (>= k + 1), KID subsets of >= 2 images; IS works on any number.
    """
    need = {"fid": (2, "FID needs at least 2 (a feature covariance)"),
            "kid": (2, "KID needs at least 2"),
            "prc": (prc_neighborhood + 1, f"precision/recall needs at least {prc_neighborhood + 1} "
                                          f"(the k={prc_neighborhood}-th nearest neighbour among the others)")}
    short = [need[m][1] for m in names if m in need and count < need[m][0]]
    if short:
        where = repr(str(source)) if isinstance(source, (str, os.PathLike)) else "an in-memory array"
        raise ValueError(f"{what} ({where}): only {count} image{'s' if count != 1 else ''}; " + "; ".join(short))


def parse_metrics(metrics: str | Sequence[str], allowed: Sequence[str] = GENERATION_METRICS) -> tuple[str, ...]:
    """``"fid,is"`` or ``("fid", "is")`` -> validated tuple (order kept, duplicates dropped)."""
    names = [m.strip().lower() for m in metrics.split(",")] if isinstance(metrics, str) else [str(m).lower() for m in metrics]
    names = [m for m in names if m]
    if not names:
        raise ValueError(f"metrics must name at least one of {', '.join(allowed)}")
    for m in names:
        if m not in allowed:
            raise unknown_name_error("metric", m, allowed)
    return tuple(dict.fromkeys(names))


def _stats(features: torch.Tensor) -> dict[str, np.ndarray]:
    return fid_features_to_statistics(features.double())


def _reference_features(ref: ImageSet, extractor, ext_id: dict, layer: str, cache_dir, batch_size: int
                        ) -> tuple[dict, str]:
    """pool_3 features + mu/sigma of the reference, through the per-reference cache."""
    identity = ref.identity()
    path = None if (cache_dir is False or identity is None) else cache_path(
        default_cache_dir() if cache_dir is None else cache_dir, identity, ext_id)
    if path is not None:
        hit = read_cache(path)
        if hit is not None:
            return {"features": torch.from_numpy(hit["features"]), "mu": hit["mu"], "sigma": hit["sigma"]}, "hit"
    feats = extract_features(ref, extractor, batch_size)[layer]
    st = _stats(feats)
    entry = {"features": feats, "mu": st["mu"], "sigma": st["sigma"]}
    if path is not None:
        write_cache(path, {"features": feats.numpy(), "mu": st["mu"], "sigma": st["sigma"]})
        return entry, "miss"
    return entry, "off"


def compute_generation_metrics(
    samples: ImageSource,
    reference: ImageSource | None = None,
    metrics: str | Sequence[str] = ("fid", "is", "prc"),
    *,
    weights_path: str | os.PathLike | None = None,
    random_weights: bool = False,
    cache_dir: str | os.PathLike | bool | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    reference_stats: str = "auto",
    isc_splits: int = 10,
    prc_neighborhood: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    expected_samples: int = ADM_NUM_SAMPLES,
    seed: int = 2020,
    feature_layer: str = POOL,
) -> dict:
    """gFID / IS / precision / recall / KID of ``samples`` against ``reference``.

    samples, reference: ADM ``.npz`` (``arr_0`` uint8 [N, H, W, 3]), a folder of images, or an
        array (uint8 NHWC or float [0, 1] NCHW). The reference may be an ADM reference batch with
        ``mu``/``sigma``; ``reference_stats``: "auto" (use stored mu/sigma for FID when present and
        weights are real, as ADM's evaluator does), "npz" (require them), "compute" (from images).
    metrics: subset of ("fid", "is", "prc", "kid"), or "fid,is".
    cache_dir: where reference features are cached (None: ``$VCQ_METRICS_CACHE`` or
        ``$TORCH_HOME/vcq_metrics_cache``; False: no cache). Keyed by reference file + weights.
    random_weights: tests only; marks the result ``comparable=False``.
    feature_layer: Inception layer for FID / precision / recall / KID: "2048" (pool_3, the ADM
        protocol) or "64" / "192" / "768" (cheap, for tests; marks the result not comparable).

    Returns a dict with the requested of ``fid``, ``is_mean``/``is_std``, ``precision``/``recall``/
    ``f_score``, ``kid_mean``/``kid_std`` plus ``num_samples``, ``num_reference``, ``comparable``,
    ``feature_extractor``, ``reference_stats``, ``reference_cache`` ("hit"/"miss"/"off"),
    ``warnings`` (list of str) and ``not_computed`` ({metric: reason} for a value that is ``None``
    because it was not a finite number); every value is strict JSON.
    Too few images for a requested metric (FID < 2, precision/recall < k + 1, KID < 2) raise ValueError
    before any network runs.
    """
    names = parse_metrics(metrics)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if reference_stats not in ("auto", "npz", "compute"):
        raise unknown_name_error("reference_stats", reference_stats, ("auto", "npz", "compute"))
    needs_ref = any(m in names for m in ("fid", "prc", "kid"))
    if needs_ref and reference is None:
        raise ValueError(f"reference is required for metrics {[m for m in names if m != 'is']}")

    if feature_layer not in FEATURE_LAYERS:
        raise unknown_name_error("feature_layer", feature_layer, FEATURE_LAYERS)
    notes: list[str] = []
    if random_weights:
        warnings.warn(NOT_COMPARABLE, stacklevel=2)
        notes.append(NOT_COMPARABLE)
    if feature_layer != POOL:
        m = f"feature_layer={feature_layer!r} instead of pool_3 ('2048'): results are not comparable to ADM numbers"
        warnings.warn(m, stacklevel=2)
        notes.append(m)

    sample_set = open_images(samples, name="samples")
    if "is" in names:
        isc_splits = check_int("isc_splits", isc_splits, minimum=1)
        if isc_splits > sample_set.num_images:
            raise ValueError(f"isc_splits={isc_splits} exceeds the number of samples {sample_set.num_images}")
    prc_neighborhood = check_int("prc_neighborhood", prc_neighborhood, minimum=1)
    _check_enough_images(names, sample_set.num_images, "samples", samples, prc_neighborhood)
    msg = check_sample_count(sample_set.num_images, expected=expected_samples)
    if msg:
        notes.append(msg)

    # reference side: what is needed, checked before any network is built
    stored, ref_set, ref_stats_src = None, None, None
    if needs_ref:
        stored = load_reference_stats(reference) if isinstance(reference, (str, os.PathLike)) else None
        if reference_stats == "npz":
            if random_weights or feature_layer != POOL:
                raise ValueError("reference_stats='npz' needs the real Inception pool_3 features "
                                 "(random_weights=False, feature_layer='2048')")
            if stored is None:
                where = repr(str(reference)) if isinstance(reference, (str, os.PathLike)) else "an in-memory array"
                raise ValueError(f"reference_stats='npz' but the reference ({where}) holds no mu/sigma")
        use_stored = "fid" in names and stored is not None and (
            reference_stats == "npz" or (reference_stats == "auto" and not random_weights and feature_layer == POOL))
        if use_stored:
            ref_stats_src = "npz"
        if ("prc" in names or "kid" in names) or ("fid" in names and not use_stored):
            ref_set = open_images(reference, name="reference")
            _check_enough_images([m for m in names if m != "is" and (m != "fid" or not use_stored)],
                                 ref_set.num_images, "reference", reference, prc_neighborhood)
            if ref_set.image_shape != sample_set.image_shape:
                m = (f"samples are {sample_set.image_shape[:2]} but reference images are {ref_set.image_shape[:2]}; "
                     "the ADM protocol compares 256x256 to 256x256")
                warnings.warn(m, stacklevel=2)
                notes.append(m)

    features = [feature_layer] if any(m in names for m in ("fid", "prc", "kid")) else []
    if "is" in names:
        features.append(LOGITS)
    extractor, ext_id = build_extractor(features, weights_path=weights_path, random_weights=random_weights, device=device)

    result: dict = {"num_samples": sample_set.num_images, "comparable": not random_weights and feature_layer == POOL,
                    "feature_extractor": ext_id["name"], "feature_layer": feature_layer}
    ref_entry, ref_cache = None, "off"
    if ref_set is not None:
        ref_entry, ref_cache = _reference_features(ref_set, extractor, dict(ext_id, layer=feature_layer),
                                                   feature_layer, cache_dir, batch_size)
        result["num_reference"] = ref_set.num_images
        if ref_stats_src is None:
            ref_stats_src = "computed"
    if needs_ref:
        if ref_stats_src:
            result["reference_stats"] = ref_stats_src
        result["reference_cache"] = ref_cache

    # sample side
    feats = extract_features(sample_set, extractor, batch_size)

    if "fid" in names:
        ref_st = stored if ref_stats_src == "npz" else {"mu": ref_entry["mu"], "sigma": ref_entry["sigma"]}
        sam_st = _stats(feats[feature_layer])
        if sam_st["mu"].shape != ref_st["mu"].shape:
            raise ValueError(f"reference mu has {ref_st['mu'].shape[0]} dims, features have {sam_st['mu'].shape[0]}")
        result["fid"] = float(fid_statistics_to_metric(sam_st, ref_st, verbose=False)[KEY_METRIC_FID])
    if "is" in names:
        r = isc_features_to_metric(feats[LOGITS], splits=isc_splits, shuffle=True, rng_seed=seed)
        result["is_mean"], result["is_std"] = r[KEY_METRIC_ISC_MEAN], r[KEY_METRIC_ISC_STD]
    if "prc" in names:
        f_ref = ref_entry["features"]
        big = max(len(f_ref), len(feats[feature_layer])) > 10_000  # full distance matrix would not fit: go by parts
        r = prc_features_to_metric(feats[feature_layer], f_ref, prc_neighborhood=prc_neighborhood, prc_batch_size=10_000,
                                   save_cpu_ram=big, verbose=False)
        result.update(precision=r[KEY_METRIC_PRECISION], recall=r[KEY_METRIC_RECALL], f_score=r[KEY_METRIC_F_SCORE])
    if "kid" in names:
        f_ref = ref_entry["features"]
        size = min(check_int("kid_subset_size", kid_subset_size, minimum=2), len(f_ref), len(feats[feature_layer]))
        if size < kid_subset_size:
            notes.append(f"KID subset size lowered from {kid_subset_size} to {size} (too few images)")
        r = kid_features_to_metric(feats[feature_layer], f_ref, kid_subsets=check_int("kid_subsets", kid_subsets, minimum=1),
                                   kid_subset_size=size, rng_seed=seed, verbose=False)
        result.update(kid_mean=r[KEY_METRIC_KID_MEAN], kid_std=r[KEY_METRIC_KID_STD], kid_subset_size=size)
    result["warnings"] = notes
    return null_non_finite(result)


def null_non_finite(result: dict) -> dict:
    """Strict-JSON form of a metrics dict, in place: each non-finite float (NaN, +-inf) becomes ``None``
    and ``result["not_computed"][key]`` says why (keeps reasons already there). Returns ``result``."""
    reasons = result.setdefault("not_computed", {})
    for key, value in list(result.items()):
        if isinstance(value, float) and not math.isfinite(value):
            result[key] = None
            reasons.setdefault(key, f"the computation gave {value} (not a finite number)")
    return result
