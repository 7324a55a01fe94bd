"""Prefix nearest-neighbour search: position i looks only at the first K(i) codebook entries.

For a schedule with sizes ``K(0) <= ... <= K(L-1)`` the naive way builds the full
``(B*L) x K_max`` squared-distance matrix, masks the columns ``k >= K(i)`` and takes an argmin.
Here positions are grouped (a contiguous run ``a..b-1`` of positions is one group) and a group
is only compared against the first ``K(b-1)`` codes, so the work is close to ``B * sum_i K(i)``
instead of ``B * L * K_max``. The grouping is an exact dynamic programme over a cost model
(distances computed, masked ones included, plus a fixed cost per tile). Each group is processed
in tiles of at most ``chunk_size`` fp32 distances held in one preallocated buffer, so peak memory
is bounded whatever the codebook size (4 MiB on CPU, 128 MiB on GPU by default).

A tile is laid out (codes, queries): ``K_g`` rows, ``n`` columns (queries ordered by position,
then batch), so the argmin runs down columns. On CPU it is done in two vectorised levels
(block minima with ``amin``, then the first hit inside the winning block), because
``torch.argmin`` over a long axis is not vectorised there; the result is the same.

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

# fp32 distances computed at a time on CPU (4 MiB): small enough to stay in cache, big enough that
# per-tile overhead is amortised. Tuned on a 2-core AVX2 CPU; see benchmarks/quantizer.py.
DEFAULT_CHUNK_SIZE = 1 << 20
# On accelerators: 128 MiB of distances per tile (fewer, larger kernels).
DEFAULT_CHUNK_SIZE_ACCEL = 1 << 25
# Fixed cost of one tile, in "distance elements" (the ~20 small ops around add/addmm/argmin).
TILE_OVERHEAD = 1 << 17

Group = tuple[int, int, int]  # (start, stop, K_max of the group)


def _tiles(n_pos: int, rows_per_position: int, k_g: int, chunk: int) -> int:
    """Number of (k_g, n) tiles of at most ``chunk`` distances for a group of ``n_pos`` positions
    (the cost model; the search pads ``k_g`` up to a multiple of 64 rows)."""
    cols_fit = max(1, chunk // k_g)
    if cols_fit >= rows_per_position:
        return -(-n_pos // (cols_fit // rows_per_position))
    return n_pos * -(-rows_per_position // cols_fit)


@lru_cache(maxsize=64)
def plan_groups(
    sizes: tuple[int, ...], rows_per_position: int, chunk: int = DEFAULT_CHUNK_SIZE, overhead: int = TILE_OVERHEAD
) -> tuple[Group, ...]:
    """Split positions ``0..L-1`` into contiguous groups minimising the modelled cost
    ``sum_g (rows_per_position * n_g * K(stop_g - 1) + overhead * tiles_g)``: distances computed
    (including the masked ones) plus a fixed cost per tile of at most ``chunk`` distances.

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
    best = [0.0] + [float("inf")] * s  # best[j]: cost of runs[:j]
    cut = [0] * (s + 1)
    for j in range(1, s + 1):
        k_g = runs[j - 1][2]
        stop = runs[j - 1][1]
        for i in range(j - 1, -1, -1):
            n_pos = stop - runs[i][0]
            work = rows_per_position * n_pos * k_g
            if work > best[j]:  # longer groups only cost more
                break
            cost = best[i] + work + overhead * _tiles(n_pos, rows_per_position, k_g, chunk)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[Group] = []
    j = s
    while j > 0:
        i = cut[j]
        groups.append((runs[i][0], runs[j - 1][1], runs[j - 1][2]))
        j = i
    return tuple(reversed(groups))


_MAX_BLOCK = 64


def _block_for(n: int) -> int:
    """Rows per block of the two-level argmin: its second stage costs ~block * n."""
    return 64 if n <= 128 else 32 if n <= 512 else 16


def _argmin_dim0(
    dist: torch.Tensor, block: int | None = None, out: torch.Tensor | None = None, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """``dist.argmin(0)`` for a (K, n) matrix, lowest index on ties, in two levels.

    ``torch.argmin`` over a long axis is not vectorised on CPU; ``amin`` is. So take the minimum
    of each block of ``block`` rows (vectorised over the n columns), pick the first block holding
    the column minimum, then the first row of that block equal to it. Same result as argmin.
    ``offsets`` may pass ``arange(block)`` to save an allocation.
    """
    k, n = dist.shape
    block = block or _block_for(n)
    nb = k // block
    if nb < 2 or dist.device.type != "cpu":  # GPU argmin is already parallel over the long axis
        return torch.argmin(dist, 0, out=out) if out is not None else dist.argmin(0)
    head = dist.as_strided((nb, block, n), (block * n, n, 1)).amin(1)  # (nb, n) block minima
    if nb * block < k:
        head = torch.cat([head, dist[nb * block :].amin(0, keepdim=True)])
    best, blk = head.min(0)  # first block holding the minimum
    if offsets is None or offsets.numel() != block:
        offsets = torch.arange(block, device=dist.device)
    rows = torch.add(offsets, blk.unsqueeze(1), alpha=block)  # (n, block) rows of the winning block
    if nb * block < k:
        rows.clamp_(max=k - 1)  # the short last block repeats its last row: the first match wins
    hit = torch.gather(dist.t(), 1, rows).eq(best.unsqueeze(1)).view(torch.uint8)  # (n, block) 0/1
    pos = hit.argmax(1)
    return torch.add(pos, blk, alpha=block, out=out) if out is not None else pos.add_(blk, alpha=block)


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
        chunk_size: max fp32 distances held at a time (default :data:`DEFAULT_CHUNK_SIZE` on
            CPU, :data:`DEFAULT_CHUNK_SIZE_ACCEL` elsewhere; at least one column of ``max(sizes)``).

    Returns:
        (B, L) int64 indices, ``indices[:, i] < sizes[i]``.

    Work is done on transposed (K_g, n) distance tiles: codes along rows, queries (ordered by
    position, then batch) along columns; each tile is ``||z||^2 + ||e||^2`` then ``addmm_``.
    """
    sizes = tuple(int(k) for k in sizes)
    if z.dim() != 3 or codebook.dim() != 2 or z.shape[2] != codebook.shape[1]:
        raise ValueError(f"z must be (B, L, D) and codebook (K, D) with the same D, got {tuple(z.shape)} and {tuple(codebook.shape)}")
    if len(sizes) != z.shape[1]:
        raise ValueError(f"sizes must have one entry per position (L={z.shape[1]}), got {len(sizes)}")
    if sizes and (min(sizes) < 1 or max(sizes) > codebook.shape[0] or any(a > b for a, b in zip(sizes, sizes[1:]))):
        raise ValueError(f"sizes must be non-decreasing integers in [1, {codebook.shape[0]}] (the codebook size)")
    with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 distances, always
        return _prefix_argmin(z, codebook, sizes, chunk_size)


def _prefix_argmin(z: torch.Tensor, codebook: torch.Tensor, sizes: tuple[int, ...], chunk_size: int | None) -> torch.Tensor:
    b, l, d = z.shape
    chunk = int(chunk_size or (DEFAULT_CHUNK_SIZE if z.device.type == "cpu" else DEFAULT_CHUNK_SIZE_ACCEL))
    k_top = sizes[-1]
    n_all = l * b
    out = torch.empty(n_all, dtype=torch.long, device=z.device)
    if n_all == 0:
        return out.view(b, l)
    zf = z.detach().float()
    # ||z||^2 exactly as the hosts compute it (row sums of the (B*L, D) matrix), then (L, B) order
    zsq = zf.reshape(b * l, d).pow(2).sum(1).view(b, l).t().reshape(n_all)
    zt = zf.permute(2, 1, 0).reshape(d, n_all)  # (D, L*B), column = (position, batch)
    e = codebook.detach()[:k_top].float().contiguous()
    esq = e.pow(2).sum(1).unsqueeze(1)  # ||e||^2 once per call, (K, 1)
    # at least one column of K_max distances, at most what the whole problem needs
    buf = torch.empty(max(min(chunk, n_all * k_top), k_top), dtype=torch.float32, device=z.device)
    inf = float("inf")
    offsets = {blk: torch.arange(blk, device=z.device) for blk in (16, 32, 64, 128, 256)}
    for start, stop, k_g in plan_groups(sizes, b, chunk):
        # rows rounded up to a whole number of argmin blocks (extra rows masked) when codes exist
        k_pad = min(-(-k_g // _MAX_BLOCK) * _MAX_BLOCK, k_top)
        e_g, esq_g = e[:k_pad], esq[:k_pad]
        cols_fit = max(1, chunk // k_pad)
        if cols_fit >= b:  # tiles of whole positions; rows >= K(i) of smaller positions masked
            per = cols_fit // b
            tiles = [(p0 * b, min(p0 + per, stop) * b) for p0 in range(start, stop, per)]
        else:  # a tile holds part of one position's queries
            tiles = [(c0, min(c0 + cols_fit, (p + 1) * b)) for p in range(start, stop) for c0 in range(p * b, (p + 1) * b, cols_fit)]
        short = [p for p in range(start, stop) if sizes[p] < k_g]
        for c0, c1 in tiles:
            n = c1 - c0
            dist = buf.as_strided((k_pad, n), (n, 1))
            torch.add(esq_g, zsq[c0:c1], out=dist)
            dist.addmm_(e_g, zt[:, c0:c1], alpha=-2)
            if k_pad > k_g:
                dist[k_g:] = inf
            for p in short:
                lo, hi = max(p * b, c0), min((p + 1) * b, c1)
                if lo < hi:
                    dist[sizes[p] :, lo - c0 : hi - c0] = inf
            blk = _block_for(n)
            _argmin_dim0(dist, blk, out=out[c0:c1], offsets=offsets[blk])
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
