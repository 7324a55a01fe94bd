"""Prefix nearest-neighbour search: position i looks only at the first K(i) codebook entries.

For a schedule with sizes ``K(0) <= ... <= K(L-1)`` the naive way builds the full
``(B*L) x K_max`` squared-distance matrix, masks the columns ``k >= K(i)`` and takes an argmin.
Here positions are grouped (a contiguous run ``a..b-1`` of positions is one group) and a group
is only compared against the first ``K(b-1)`` codes, so the work is close to ``B * sum_i K(i)``
instead of ``B * L * K_max``. Rows are processed in chunks that fit a fixed buffer of
``chunk_size`` fp32 distances, so peak memory is bounded whatever the codebook size.

Distances use the hosts' formula (LlamaGen / TiTok ``VectorQuantizer``)::

    d[n, k] = (||z_n||^2 + ||e_k||^2) - 2 <z_n, e_k>        (fp32)

computed as one ``add`` into the buffer followed by an in-place ``addmm_`` with ``alpha=-2``, so
it matches :func:`brute_force_prefix_argmin` (the reference the tests compare against). Ties go to
the lowest index, as ``torch.argmin`` does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

# fp32 distances computed at a time (4 MiB): small enough to stay in cache, big enough that
# per-call overhead is amortised. Tuned on a 2-core AVX2 CPU; see benchmarks/quantizer.py.
DEFAULT_CHUNK_SIZE = 1 << 20
# Cost of one extra group in "distance elements" (per-call overhead of add/addmm/argmin).
GROUP_OVERHEAD = 1 << 14
# Rows per block of the two-level argmin (see _argmin_dim0).
ARGMIN_BLOCK = 64

Group = tuple[int, int, int]  # (start, stop, K_max of the group)


@lru_cache(maxsize=64)
def plan_groups(sizes: tuple[int, ...], rows_per_position: int, overhead: int = GROUP_OVERHEAD) -> tuple[Group, ...]:
    """Split positions ``0..L-1`` into contiguous groups minimising
    ``sum_g rows_per_position * n_g * K(stop_g - 1) + overhead * (#groups)``.

    ``sizes`` must be non-decreasing. Exact dynamic programme over runs of equal size
    (O(S^2) for S runs; S <= L). Returns ``((start, stop, k_group), ...)``.
    """
    runs: list[list[int]] = []  # [start, stop, K]
    for i, k in enumerate(sizes):
        if runs and runs[-1][2] == k:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, k])
    s = len(runs)
    inf = float("inf")
    best = [0.0] + [inf] * s  # best[j]: cost of runs[:j]
    cut = [0] * (s + 1)
    for j in range(1, s + 1):
        k_g = runs[j - 1][2]
        stop = runs[j - 1][1]
        for i in range(j - 1, -1, -1):
            cost = best[i] + overhead + rows_per_position * (stop - runs[i][0]) * k_g
            if cost < best[j]:
                best[j], cut[j] = cost, i
            # once the group alone costs more than the best total, longer groups cannot win
            if rows_per_position * (stop - runs[i][0]) * k_g > best[j]:
                break
    groups: list[Group] = []
    j = s
    while j > 0:
        i = cut[j]
        groups.append((runs[i][0], runs[j - 1][1], runs[j - 1][2]))
        j = i
    return tuple(reversed(groups))


def _argmin_dim0(dist: torch.Tensor, block: int = ARGMIN_BLOCK) -> torch.Tensor:
    """``dist.argmin(0)`` for a (K, n) matrix, lowest index on ties, in two levels.

    ``torch.argmin`` over a long axis is not vectorised on CPU; ``amin`` is. So take the minimum
    of each block of ``block`` rows (vectorised over the n columns), pick the first block holding
    the column minimum, then the first minimal row inside that block. Same result as argmin.
    """
    k, n = dist.shape
    nb = k // block
    if nb < 2:
        return dist.argmin(0)
    head = dist[: nb * block].view(nb, block, n).amin(1)  # (nb, n)
    if nb * block < k:
        head = torch.cat([head, dist[nb * block :].amin(0, keepdim=True)])
    first = head.argmin(0) * block  # (n,) first row of the winning block
    rows = first.unsqueeze(0) + torch.arange(block, device=dist.device).unsqueeze(1)
    rows.clamp_(max=k - 1)  # the short last block repeats its last row: argmin keeps the first
    return first + torch.gather(dist, 0, rows).argmin(0)


@torch.no_grad()
def prefix_argmin(
    z: torch.Tensor,
    codebook: torch.Tensor,
    sizes: Sequence[int],
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Index of the nearest of the first ``sizes[i]`` codes for every ``z[:, i]``.

    Args:
        z: (B, L, D) queries (computed in fp32).
        codebook: (K_max, D) codes (computed in fp32).
        sizes: L non-decreasing ints in ``[1, K_max]`` (``CodebookSchedule.sizes``).
        chunk_size: max fp32 distances held at a time (default :data:`DEFAULT_CHUNK_SIZE`).

    Returns:
        (B, L) int64 indices, ``indices[:, i] < sizes[i]``.

    Work is done on transposed (K_g, n) distance tiles: codes along rows, queries (ordered by
    position, then batch) along columns; each tile is ``||e||^2 + ||z||^2`` then ``addmm_``.
    """
    b, l, d = z.shape
    sizes = tuple(int(k) for k in sizes)
    chunk = int(chunk_size or DEFAULT_CHUNK_SIZE)
    k_top = sizes[-1]
    n_all = l * b
    out = torch.empty(n_all, dtype=torch.long, device=z.device)
    if n_all == 0:
        return out.view(b, l)
    zt = z.detach().float().permute(2, 1, 0).reshape(d, n_all)  # (D, L*B), column = (position, batch)
    zsq = zt.pow(2).sum(0)
    e = codebook.detach()[:k_top].float().contiguous()
    esq = e.pow(2).sum(1)  # ||e||^2 once per call
    # at least one column of K_max distances, at most what the whole problem needs
    buf = torch.empty(max(min(chunk, n_all * k_top), k_top), dtype=torch.float32, device=z.device)
    inf = float("inf")
    for start, stop, k_g in plan_groups(sizes, b):
        e_g = e[:k_g]
        esq_g = esq[:k_g].unsqueeze(1)
        cols_fit = max(1, chunk // k_g)
        if cols_fit >= b:  # tiles of whole positions; rows >= K(i) of smaller positions masked
            per = cols_fit // b
            spans = [(p0, min(p0 + per, stop)) for p0 in range(start, stop, per)]
        else:  # a tile holds part of one position's queries
            spans = [(p, p + 1) for p in range(start, stop)]
        for p0, p1 in spans:
            step = cols_fit if cols_fit < b else (p1 - p0) * b
            for c0 in range(p0 * b, p1 * b, step):
                c1 = min(c0 + step, p1 * b)
                dist = buf[: k_g * (c1 - c0)].view(k_g, c1 - c0)
                torch.add(esq_g, zsq[c0:c1].unsqueeze(0), out=dist)
                dist.addmm_(e_g, zt[:, c0:c1], alpha=-2)
                for p in range(p0, p1):
                    if sizes[p] < k_g:
                        lo, hi = max(p * b, c0) - c0, min((p + 1) * b, c1) - c0
                        dist[sizes[p] :, lo:hi] = inf
                out[c0:c1] = _argmin_dim0(dist)
    return out.view(l, b).t().contiguous()


@torch.no_grad()
def brute_force_prefix_argmin(z: torch.Tensor, codebook: torch.Tensor, sizes: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Reference: the full (B*L) x K_max distance matrix, host formula, masked, argmin.

    Same arithmetic as :func:`prefix_argmin` (``(||z||^2 + ||e||^2) - 2 z.e``), built the way
    LlamaGen/TiTok do. Memory O(B * L * K_max): for tests and the benchmark's variant (b).
    """
    b, l, d = z.shape
    zf = z.detach().float().reshape(b * l, d)
    e = codebook.detach().float()
    dist = torch.sum(zf**2, dim=1, keepdim=True) + torch.sum(e**2, dim=1) - 2 * torch.einsum("bd,dn->bn", zf, e.t())
    sizes_t = torch.as_tensor(sizes, dtype=torch.long, device=z.device)
    cols = torch.arange(e.shape[0], device=z.device)
    invalid = cols.unsqueeze(0) >= sizes_t.repeat(b).unsqueeze(1)
    dist.masked_fill_(invalid, float("inf"))
    return dist.argmin(dim=1).view(b, l)
