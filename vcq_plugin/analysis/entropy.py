"""Measured entropy cliff on a token dataset: exact per-position conditional entropy, utilisation.

For an (N, L) token array X (one row per image, positions 0-based)::

    H(x_i | x_<i) = H(x_<=i) - H(x_<i)        (bits, plug-in entropies of the prefixes)

Prefixes are identified exactly by re-indexing: at each step the prefix id of a row becomes the
rank of ``(previous prefix id, token)`` among the distinct pairs (dense counting when the pair
space is small, ``np.unique`` otherwise), so two prefixes share an id iff they are equal -- no
hashing, no collisions. A row whose prefix is already unique (a group of one) stays unique and
contributes ``c log2 c = 0`` from then on, so it is dropped from the working set; once every
prefix is unique the remaining conditional entropies are exactly 0 and the loop stops.

The measured cliff (:func:`measured_transition_position`) is where the joint entropy of the prefix,
``H(x_<=i) = sum_{j<=i} H(x_j | x_<j)`` (chain rule), reaches log2 N: the prefixes of the N
sequences have become unique, so the data set's uncertainty is used up -- the measured counterpart
of Eq. 2's C(i) >= log2 N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..schedule import CodebookSchedule

__all__ = [
    "EntropyProfile",
    "DEFAULT_TOLERANCE_BITS",
    "prefix_entropy_profile",
    "prefix_entropy",
    "conditional_entropy",
    "codebook_usage",
    "codebook_utilisation",
    "measured_transition_position",
    "as_token_array",
    "validate_tokens",
]

DEFAULT_TOLERANCE_BITS = 0.5  # measured i*: the prefix entropy is within this many bits of log2 N
_DENSE_SLACK = 1 << 20  # dense counting while (#groups x alphabet) <= 4 n + this
_BLOCK_BYTES = 256 << 20  # at most this many bytes of token columns held at once


@dataclass
class EntropyProfile:
    """Result of :func:`prefix_entropy_profile` (all arrays have length L, position 0-based).

    Attributes:
        conditional: H(x_i | x_<i) in bits, float64 [L].
        joint: H(x_<=i) in bits, float64 [L] (plug-in, or Miller-Madow corrected).
        distinct_prefixes: number of distinct prefixes x_<=i, int64 [L].
        num_samples: N.
        saturated_at: 1-based count i of positions after which every prefix x_<=i is unique
            (so H(x_j | x_<j) = 0 exactly for all later j), or ``None`` if never.
        miller_madow: whether the Miller-Madow correction (m - 1) / (2 N ln 2) was applied.
    """

    conditional: np.ndarray
    joint: np.ndarray
    distinct_prefixes: np.ndarray
    num_samples: int
    saturated_at: int | None
    miller_madow: bool = False

    def plugin_joint(self) -> np.ndarray:
        """H(x_<=i) in bits, float64 [L], without the Miller-Madow correction (plug-in)."""
        if not self.miller_madow:
            return self.joint
        return self.joint - (self.distinct_prefixes - 1) / (2.0 * self.num_samples * math.log(2.0))

    def transition_position(self, tolerance: float = DEFAULT_TOLERANCE_BITS) -> int | None:
        """Measured i*: see :func:`measured_transition_position`."""
        tolerance = _check_tolerance(tolerance)
        target = math.log2(self.num_samples) - tolerance
        reached = np.nonzero(self.plugin_joint() >= target - 1e-9)[0]
        return int(reached[0]) + 1 if reached.size else None


def as_token_array(tokens: Any, name: str = "tokens") -> np.ndarray:
    """Numpy view of an (N, L) integer token array (numpy, memmap, torch tensor or a .npy path).

    Raises ValueError for a wrong shape or an empty array, TypeError for a non-integer dtype.
    """
    if isinstance(tokens, (str, bytes)) or hasattr(tokens, "__fspath__"):
        tokens = np.load(tokens, mmap_mode="r")
    if hasattr(tokens, "detach") and hasattr(tokens, "cpu"):  # torch.Tensor, without importing torch
        tokens = tokens.detach().cpu().numpy()
    if not isinstance(tokens, np.ndarray):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, L) array of token ids, got shape {tokens.shape}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tokens.shape}")
    if tokens.dtype == np.bool_ or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype (uint16, int32, int64, ...), got {tokens.dtype}")
    return tokens


def validate_tokens(tokens: Any, schedule: CodebookSchedule | None = None, *, name: str = "tokens") -> np.ndarray:
    """Check every token is in [0, K(i)) (or just >= 0 without a schedule); return the array.

    Reads the array in row blocks, so a memory-mapped file is never loaded whole.
    """
    arr = as_token_array(tokens, name)
    n, length = arr.shape
    if schedule is not None and schedule.seq_len != length:
        raise ValueError(f"{name} has {length} positions but the schedule has seq_len={schedule.seq_len}")
    sizes = None if schedule is None else schedule.sizes.numpy()
    step = max(1, _BLOCK_BYTES // (length * 8))
    for a in range(0, n, step):
        blk = np.asarray(arr[a : a + step])
        mins = blk.min(axis=0)
        if np.issubdtype(blk.dtype, np.signedinteger) and (mins < 0).any():
            i = int(np.nonzero(mins < 0)[0][0])
            raise ValueError(f"{name} must be >= 0, got {int(mins[i])} at position {i}")
        if sizes is not None:
            maxs = blk.max(axis=0).astype(np.int64)
            bad = np.nonzero(maxs >= sizes)[0]
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"{name} at position {i} must be < K({i}) = {int(sizes[i])} of the declared schedule, "
                    f"got {int(maxs[i])}"
                )
    return arr


def _refine(ids: np.ndarray, num_groups: int, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each group by the next token: new dense ids (int64 [n]) and group sizes (int64 [g])."""
    alpha = int(col.max()) + 1 if col.size else 1
    if num_groups * alpha >= 1 << 62:  # huge token values: compact the alphabet first (exact)
        _, col = np.unique(col, return_inverse=True)
        col = col.reshape(-1)
        alpha = int(col.max()) + 1
    if col.dtype == np.uint64:
        col = col.astype(np.int64)  # values < 2**62 here; uint64 + int64 would promote to float64
    key = ids * alpha + col if num_groups > 1 else col.astype(np.int64)
    space = num_groups * alpha
    if space <= 4 * key.size + _DENSE_SLACK:
        counts = np.bincount(key, minlength=space)
        present = counts > 0
        remap = np.cumsum(present) - 1
        return remap[key], counts[present]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), counts.astype(np.int64, copy=False)


def _xlogx_sum(counts: np.ndarray) -> float:
    c = counts[counts > 1].astype(np.float64)
    return float(np.dot(c, np.log2(c))) if c.size else 0.0


def prefix_entropy_profile(
    tokens: Any,
    *,
    miller_madow: bool = False,
    progress: bool = False,
    schedule: CodebookSchedule | str | dict | None = None,
) -> EntropyProfile:
    """Exact per-position prefix entropies of an (N, L) integer token array.

    Args:
        tokens: (N, L) integer array: numpy (memory-mapped .npy files are read in column blocks),
            a torch tensor, or a path to a .npy file.
        miller_madow: add the Miller-Madow bias correction (m - 1) / (2 N ln 2) bits to every
            joint entropy H(x_<=i), m = number of distinct prefixes.
        progress: show a tqdm bar over positions.
        schedule: optional; if given, every token is checked against [0, K(i)) first.
            Signed token arrays are always checked for negative values (one pass in row
            blocks); unsigned arrays without a schedule need no check.

    Returns:
        an :class:`EntropyProfile`; ``conditional`` is H(x_i | x_<i) in bits, float64 [L].
    """
    arr = as_token_array(tokens)
    n, length = arr.shape
    sched = None if schedule is None else CodebookSchedule.from_spec(schedule)
    if sched is not None and sched.seq_len != length:
        raise ValueError(f"tokens has {length} positions but the schedule has seq_len={sched.seq_len}")
    if sched is not None or np.issubdtype(arr.dtype, np.signedinteger):
        validate_tokens(arr, sched)
    log2n = math.log2(n)
    mm = (1.0 / (2.0 * n * math.log(2.0))) if miller_madow else 0.0

    joint = np.empty(length, dtype=np.float64)
    distinct = np.empty(length, dtype=np.int64)
    rows = None  # original row indices of the working set (None = all rows)
    ids = np.zeros(n, dtype=np.int64)
    num_groups = 1
    dropped = 0  # rows whose prefix became unique: each one is its own group forever
    saturated_at = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc="conditional entropy", unit="pos")

    i = 0
    while i < length:
        width = min(length - i, max(1, min(32, _BLOCK_BYTES // max(1, ids.size * arr.itemsize))))
        blk = np.asarray(arr[:, i : i + width] if rows is None else arr[rows, i : i + width])
        pos = None  # rows of blk still in the working set (None = all of them)
        for j in range(width):
            col = blk[:, j] if pos is None else blk[pos, j]
            ids, counts = _refine(ids, num_groups, col)
            h = max(0.0, log2n - _xlogx_sum(counts) / n)  # >= 0; rounding gave -1e-16 for a single group
            m = dropped + counts.size
            joint[i + j] = h + (m - 1) * mm
            distinct[i + j] = m
            keep_group = counts > 1
            if not keep_group.all():  # drop rows whose prefix is now unique
                idx = np.flatnonzero(keep_group[ids])
                dropped += int(counts.size - np.count_nonzero(keep_group))
                ids = (np.cumsum(keep_group) - 1)[ids[idx]]
                rows = idx if rows is None else rows[idx]
                pos = idx if pos is None else pos[idx]
                if 2 * pos.size < blk.shape[0]:  # compact the block once it is mostly dead rows
                    blk, pos = blk[pos], None
                counts = counts[keep_group]
            num_groups = int(counts.size)
            if num_groups == 0:
                saturated_at = i + j + 1
                break
        if bar is not None:
            bar.update((saturated_at - i) if saturated_at is not None else width)
        if saturated_at is not None:
            break
        i += width
    if bar is not None:
        bar.close()

    if saturated_at is not None:
        joint[saturated_at:] = joint[saturated_at - 1]
        distinct[saturated_at:] = n
    prev = np.concatenate([[0.0], joint[:-1]])
    cond = joint - prev
    if saturated_at is not None:
        cond[saturated_at:] = 0.0
    # exact arithmetic can leave -1e-15 where a position adds nothing: a conditional entropy is >= 0
    cond = np.where(np.abs(cond) < 1e-9, 0.0, cond)
    return EntropyProfile(cond, joint, distinct, n, saturated_at, miller_madow)


def conditional_entropy(tokens: Any, *, miller_madow: bool = False, progress: bool = False) -> np.ndarray:
    """Per-position conditional entropy H(x_i | x_<i) in bits, float64 [L], of an (N, L) token array.

    Exact plug-in estimate (see the module docstring); ``miller_madow=True`` applies the
    Miller-Madow correction to every prefix entropy. Use :func:`prefix_entropy_profile` for the
    joint entropies, distinct-prefix counts and the saturation position as well.
    """
    return prefix_entropy_profile(tokens, miller_madow=miller_madow, progress=progress).conditional


def codebook_usage(tokens: Any, schedule: CodebookSchedule | str | dict, *, progress: bool = False) -> np.ndarray:
    """Per-position codebook use: how many distinct codes occur at position i, int64 [L] in [1, K(i)].

    Raises ValueError naming the position and value of any token outside [0, K(i)).
    """
    sched = CodebookSchedule.from_spec(schedule)
    arr = as_token_array(tokens)
    n, length = arr.shape
    if sched.seq_len != length:
        raise ValueError(f"tokens has {length} positions but the schedule has seq_len={sched.seq_len}")
    sizes = sched.sizes.numpy()
    seen = np.zeros(length * sched.k_max, dtype=bool)
    offsets = np.arange(length, dtype=np.int64) * sched.k_max
    step = max(1, _BLOCK_BYTES // (length * 8 * 4))
    starts = range(0, n, step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="codebook utilisation", unit="block")
    for a in starts:
        blk = np.asarray(arr[a : a + step]).astype(np.int64)
        lo = blk.min(axis=0)
        if (lo < 0).any():
            i = int(np.nonzero(lo < 0)[0][0])
            raise ValueError(f"tokens must be >= 0, got {int(lo[i])} at position {i}")
        hi = blk.max(axis=0)
        bad = np.nonzero(hi >= sizes)[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"tokens at position {i} must be < K({i}) = {int(sizes[i])} of the declared schedule, got {int(hi[i])}"
            )
        seen[(blk + offsets).ravel()] = True
    return seen.reshape(length, sched.k_max).sum(axis=1).astype(np.int64)


def codebook_utilisation(tokens: Any, schedule: CodebookSchedule | str | dict, *, progress: bool = False) -> np.ndarray:
    """Per-position utilisation: distinct codes used at position i / K(i), float64 [L] in (0, 1].

    Raises ValueError naming the position and value of any token outside [0, K(i)).
    """
    sched = CodebookSchedule.from_spec(schedule)
    return codebook_usage(tokens, sched, progress=progress) / sched.sizes.numpy().astype(np.float64)


def prefix_entropy(tokens: Any) -> np.ndarray:
    """Plug-in joint entropy of each prefix, H(x_<=i) = sum_{j<=i} H(x_j | x_<j), bits, float64 [L].

    Exact (prefixes identified by re-indexing, see the module docstring); non-decreasing and at most
    log2 N, which it reaches exactly when every prefix x_<=i of the N rows is unique.
    """
    return prefix_entropy_profile(tokens).joint


def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.integer, np.floating)):
        raise TypeError(f"tolerance must be a number of bits, got {type(tolerance).__name__} {tolerance!r}")
    if not (math.isfinite(float(tolerance)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number of bits >= 0, got {tolerance!r}")
    return float(tolerance)


def measured_transition_position(tokens: Any, tolerance: float = DEFAULT_TOLERANCE_BITS) -> int | None:
    """Measured i*: the first 1-based prefix length whose prefix entropy is within ``tolerance`` bits of log2 N.

    ``tokens`` is an (N, L) token array (anything :func:`prefix_entropy_profile` takes) or an
    :class:`EntropyProfile` already computed. N is the number of token sequences measured.

    By the chain rule the prefix entropy H(x_<=i) = sum_{j<=i} H(x_j | x_<j) is the information the
    first i tokens carry about which of the N sequences this is; it reaches log2 N exactly when every
    prefix is unique, after which every conditional entropy is 0 and an AR model can only memorise.
    That is the cliff of Eq. 2 (C(i) >= log2 N, with C the capacity the schedule allows), measured
    on the data. The rule "first position with H(x_i | x_<i) below a threshold" is not used: a
    position with a tiny codebook is capped at log2 K(i) bits (K = 2: at most 1 bit) and would read
    as a cliff at the start of every VCQ schedule. Returns ``None`` if the prefix entropy never comes
    within ``tolerance`` of log2 N (e.g. many duplicate sequences). Plug-in entropies (the
    Miller-Madow correction, if a given profile has it, is taken off).
    """
    tolerance = _check_tolerance(tolerance)
    prof = tokens if isinstance(tokens, EntropyProfile) else prefix_entropy_profile(tokens)
    return prof.transition_position(tolerance)
