"""Linear probe on the first k tokens (paper Table 6 / Sec. 4.4), at equal k or at equal capacity.

The classifier is scikit-learn's (``StandardScaler`` + multinomial ``LogisticRegression``); this
module only builds the features (code embeddings of the first k tokens) and the seeded split.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .._errors import check_int
from ..schedule import CodebookSchedule
from .entropy import as_token_array

__all__ = ["first_k_linear_probe", "equal_capacity_k", "PROBE_FEATURE"]

PROBE_FEATURE = (
    "concatenated code embeddings of the first k positions (k*D), standardised on the training split; "
    "multinomial logistic regression (scikit-learn, L2, C=1), held-out top-1/top-5"
)


def _as_codebook(codebook: Any) -> np.ndarray:
    if hasattr(codebook, "detach") and hasattr(codebook, "cpu"):
        codebook = codebook.detach().cpu().double().numpy()
    cb = np.asarray(codebook)
    if cb.ndim != 2 or cb.shape[0] == 0 or cb.shape[1] == 0:
        raise ValueError(f"codebook must be a non-empty 2-D (k_max, D) array, got shape {cb.shape}")
    if not np.issubdtype(cb.dtype, np.number) or cb.dtype == np.bool_:
        raise TypeError(f"codebook must be numeric, got dtype {cb.dtype}")
    return cb.astype(np.float64, copy=False)


def _split(n: int, n_test: int, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded held-out split of exactly ``n_test`` rows, stratified: rows are shuffled within their
    class, ranked by relative position (j + 0.5) / count inside it, and the lowest ranks form the test set."""
    perm = np.random.default_rng(seed).permutation(n)
    by_class = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, random order inside
    counts = np.bincount(y)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within = (np.arange(n) - np.repeat(starts, counts) + 0.5) / np.repeat(counts, counts)
    order = by_class[np.argsort(within, kind="stable")]
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _fit_classifier(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    """scikit-learn: standardise on the training split, then multinomial ``LogisticRegression(C=c)``
    (L-BFGS from zero: deterministic). Returns (fitted pipeline, converged)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def first_k_linear_probe(
    tokens: Any,
    labels: Any,
    codebook: Any,
    k: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 500,
    c: float = 1.0,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of a linear classifier on the first ``k`` tokens' code embeddings.

    Args:
        tokens: (N, L) integer token ids.
        labels: (N,) class labels (any integer or string labels).
        codebook: (k_max, D) code vectors (numpy or torch); the feature of a sample is
            ``concat(codebook[tokens[:, 0]], ..., codebook[tokens[:, k-1]])``, shape (k * D,).
        k: number of leading positions used (1 <= k <= L).
        test_fraction: held-out share, split per class under ``seed``.
        seed: fixes the split; the classifier (scikit-learn's ``StandardScaler`` fitted on the
            training split, then multinomial ``LogisticRegression(C=c, max_iter=max_iter)``) is
            deterministic.

    Holds the (N, k * D) features and (N, #classes) logits in float64 memory: for ImageNet-scale
    sets pass a subset of rows (e.g. 100 per class).

    Returns:
        dict with ``top1``, ``top5`` (held-out accuracies in [0, 1]), ``chance`` (1 / #classes),
        ``chance_top5`` (min(5, C) / C), ``majority`` (most frequent test class share), ``k``,
        ``n_train``, ``n_test``, ``num_classes``, ``seed``, ``feature``, ``converged`` (False when
        scikit-learn stopped at ``max_iter``).
    """
    arr = as_token_array(tokens)
    n, length = arr.shape
    k = check_int("k", k, minimum=1)
    if k > length:
        raise ValueError(f"k must be <= the sequence length L={length}, got k={k}")
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be a 1-D array with one label per token row (N={n}), got shape {y.shape}")
    if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not c > 0:
        raise ValueError(f"c (inverse L2 strength) must be > 0, got {c}")
    cb = _as_codebook(codebook)
    first = np.asarray(arr[:, :k]).astype(np.int64)
    if first.min() < 0:
        raise ValueError(f"tokens must be >= 0, got {int(first.min())}")
    if first.max() >= cb.shape[0]:
        pos = int(np.nonzero((first >= cb.shape[0]).any(axis=0))[0][0])
        raise ValueError(
            f"tokens at position {pos} must be < the codebook size {cb.shape[0]}, got {int(first[:, pos].max())}"
        )
    classes, y_idx = np.unique(y, return_inverse=True)
    y_idx = y_idx.reshape(-1)
    num_classes = int(classes.size)
    if num_classes < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {num_classes}")
    n_test = int(round(n * float(test_fraction)))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"N={n} samples are too few for test_fraction={test_fraction}")
    x = cb[first].reshape(n, k * cb.shape[1]).astype(np.float64)
    idx_train, idx_test = _split(n, n_test, y_idx, seed)
    clf, converged = _fit_classifier(x[idx_train], y_idx[idx_train], float(c), check_int("max_iter", max_iter, minimum=1))
    scores = np.full((idx_test.size, num_classes), -1.0)  # a class absent from the training split is never predicted
    scores[:, clf.classes_] = clf.predict_proba(x[idx_test])
    top = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, num_classes)]
    y_test = y_idx[idx_test]
    return {
        "top1": float(np.mean(top[:, 0] == y_test)),
        "top5": float(np.mean((top == y_test[:, None]).any(axis=1))),
        "chance": 1.0 / num_classes,
        "chance_top5": min(5, num_classes) / num_classes,
        "majority": float(np.bincount(y_test, minlength=num_classes).max() / y_test.size),
        "k": k,
        "n_train": int(idx_train.size),
        "n_test": int(idx_test.size),
        "num_classes": num_classes,
        "seed": int(seed),
        "feature": PROBE_FEATURE,
        "converged": bool(converged),
    }


def equal_capacity_k(
    schedules: Mapping[str, CodebookSchedule | str | Mapping[str, Any]], bits: float
) -> dict[str, int]:
    """Per token set, the probe length k whose prefix carries about ``bits`` bits: the probe "at equal capacity".

    For each schedule, k (1 <= k <= L) minimises |C(k) - bits| with C(k) = sum_{j<k} log2 K(j) (0-based j;
    Eq. 2's cumulative capacity of the first k positions); a tie takes the smaller k. Paper Table 6 compares
    first-k probes at equal k, where a constant codebook's prefix carries far more bits than VCQ's; at equal
    capacity both prefixes could hold the same information.

    Args:
        schedules: name -> schedule (anything :meth:`CodebookSchedule.from_spec` takes).
        bits: the target capacity in bits, > 0 and at most every schedule's total capacity C(L).

    Returns:
        name -> k (int). ``schedule.capacity_bits()[k - 1]`` is the capacity actually reached.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, float, np.integer, np.floating)):
        raise TypeError(f"bits must be a number, got {type(bits).__name__} {bits!r}")
    if not (math.isfinite(float(bits)) and bits > 0):
        raise ValueError(f"bits must be a finite number > 0, got {bits!r}")
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty dict name -> schedule")
    out = {}
    for name, spec in schedules.items():
        cap = CodebookSchedule.from_spec(spec).capacity_bits().numpy()
        if bits > cap[-1] + 1e-9:
            raise ValueError(f"bits={bits} exceeds the total capacity of schedule {name!r}: "
                             f"C(L={cap.size}) = {cap[-1]:.2f} bits")
        out[str(name)] = int(np.argmin(np.abs(cap - float(bits)))) + 1  # argmin takes the first (smaller k) on a tie
    return out
