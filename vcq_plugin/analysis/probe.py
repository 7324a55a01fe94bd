"""Linear probe on the first k tokens (paper Table 6 / Sec. 4.4)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import check_int
from .entropy import as_token_array

__all__ = ["first_k_linear_probe", "PROBE_FEATURE"]

PROBE_FEATURE = (
    "concatenated code embeddings of the first k positions (k*D), standardised on the training split; "
    "multinomial logistic regression (L2, C=1), held-out top-1/top-5"
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


def _loss_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray, num_classes: int, reg: float):
    d = x.shape[1]
    w, b = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes :]
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    ez = np.exp(z)
    s = ez.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]) + reg * np.dot(w.ravel(), w.ravel()))
    p = ez / s
    p[np.arange(n), y] -= 1.0
    p /= n
    grad = np.concatenate([(x.T @ p + 2.0 * reg * w).ravel(), p.sum(axis=0)])
    return loss, grad


def _fit_softmax_regression(x: np.ndarray, y: np.ndarray, num_classes: int, c: float, max_iter: int):
    """Multinomial logistic regression: minimise mean cross-entropy + ||W||^2 / (2 c n) (scikit-learn's
    ``LogisticRegression(C=c)`` objective divided by n) with L-BFGS (memory 10, Armijo backtracking)
    from zero, in float64 numpy: deterministic. Returns (W [D, C], b [C])."""
    d = x.shape[1]
    reg = 1.0 / (2.0 * c * x.shape[0])
    theta = np.zeros(d * num_classes + num_classes)
    f, g = _loss_grad(theta, x, y, num_classes, reg)
    hist_s: list[np.ndarray] = []
    hist_y: list[np.ndarray] = []
    for it in range(max_iter):
        if np.abs(g).max() < 1e-6:
            break
        q = g.copy()  # two-loop recursion: q <- H g
        alphas = []
        for s_, y_ in zip(reversed(hist_s), reversed(hist_y)):
            a = np.dot(s_, q) / np.dot(y_, s_)
            alphas.append(a)
            q -= a * y_
        if hist_s:
            q *= np.dot(hist_s[-1], hist_y[-1]) / np.dot(hist_y[-1], hist_y[-1])
        else:
            q /= max(1.0, np.linalg.norm(g))
        for (s_, y_), a in zip(zip(hist_s, hist_y), reversed(alphas)):
            q += s_ * (a - np.dot(y_, q) / np.dot(y_, s_))
        step, slope = 1.0, -np.dot(g, q)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            hist_s.clear(), hist_y.clear()
            q, slope = g / max(1.0, np.linalg.norm(g)), -np.dot(g, g) / max(1.0, np.linalg.norm(g))
        while True:
            new = theta - step * q
            f_new, g_new = _loss_grad(new, x, y, num_classes, reg)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_vec, y_vec = new - theta, g_new - g
        if np.dot(s_vec, y_vec) > 1e-12:
            hist_s.append(s_vec)
            hist_y.append(y_vec)
            if len(hist_s) > 10:
                hist_s.pop(0), hist_y.pop(0)
        done = abs(f - f_new) <= 1e-10 * max(1.0, abs(f))
        theta, f, g = new, f_new, g_new
        if done:
            break
    return theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes :]


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
        seed: fixes the split; the classifier (multinomial logistic regression with L2 strength
            1 / c, as scikit-learn's ``LogisticRegression(C=c)``, on features standardised with
            the training split's mean / std, full-batch L-BFGS from zero in numpy float64) is
            deterministic.

    Holds the (N, k * D) features and (N, #classes) logits in float64 memory: for ImageNet-scale
    sets pass a subset of rows (e.g. 100 per class).

    Returns:
        dict with ``top1``, ``top5`` (held-out accuracies in [0, 1]), ``chance`` (1 / #classes),
        ``chance_top5`` (min(5, C) / C), ``majority`` (most frequent test class share), ``k``,
        ``n_train``, ``n_test``, ``num_classes``, ``seed``, ``feature``.
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
    mean = x[idx_train].mean(axis=0)
    std = x[idx_train].std(axis=0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    w, b = _fit_softmax_regression(x[idx_train], y_idx[idx_train], num_classes, float(c), int(max_iter))
    logits = x[idx_test] @ w + b
    top = np.argsort(-logits, axis=1, kind="stable")[:, : min(5, num_classes)]
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
    }
