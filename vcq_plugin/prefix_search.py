"""Prefix nearest-neighbour search: position i looks only at the first K(i) codebook entries.

The semantics, in :func:`segment_argmin` (the reference, ~15 lines): positions that share one size
K form a run; every query of the run takes the argmin, over ``codebook[:K]``, of the hosts'
distance (LlamaGen / TiTok ``VectorQuantizer``)::

    d[n, k] = (||z_n||^2 + ||e_k||^2) - 2 <z_n, e_k>        (fp32, ties -> lowest index)

It is the path on GPUs (a few large kernels per run) and the oracle of the tests.
:func:`prefix_argmin` dispatches, as timm's ``use_fused_attn``: :func:`use_tiled_search` picks the
tuned CPU path on CPU tensors and the reference elsewhere (``VCQ_TILED_SEARCH=0|1`` or
:func:`set_tiled_search` override it). Both give identical indices.

The tuned CPU path (:func:`tiled_prefix_argmin`). A run of small K costs little work but a full set
of kernel calls, so positions are grouped (a contiguous run ``a..b-1`` of positions is one group,
compared against the first ``K(b-1)`` codes, the rows a position may not use masked): the work is
close to ``B * sum_i K(i)`` instead of ``B * L * K_max``. The grouping is an exact dynamic
programme over a cost model (distances computed, masked ones included, plus a fixed cost per
tile). Each group is processed in tiles of at most ``chunk_size`` fp32 distances held in one
preallocated buffer, so peak memory is bounded whatever the codebook size (4 MiB by default).

A tile is laid out (codes, queries): ``K_g`` rows, ``n`` columns (queries ordered by position,
then batch), so the reduction runs down columns. A tile holds the *negated* distances,
``(-||z||^2 + -||e||^2) + 2 <z, e>``: one ``add`` into the buffer, then, on the tile's rows a
position may not use, an in-place ``add_`` of a cached 0 / -inf mask per (row, position) (adding 0
is exact and -inf stays -inf; this beat building -||e||^2 + mask for every masked row per call, a
serial gather, by 1-3 % on VCQ-cosine at 2 threads, measured), then an in-place ``addmm_`` with
``alpha=2`` (``beta=-1`` would spare the negations but makes MKL's addmm 25 % slower, measured). Scaling by 2
is exact and IEEE rounding is symmetric in sign, so every entry is exactly ``-d`` and the argmax
of a column is the hosts' argmin. Negating lets CPU
use a channels-last ``max_pool2d`` with indices as the column argmax: vectorised across columns,
where ``torch.argmax`` over a long leading axis is a scalar loop; with several threads each column
is pooled in bands (one per thread) and the first band holding the maximum wins.

On CPU with n torch threads, the tiles are shared by the calling thread and n - 1 single-threaded
worker threads (:mod:`vcq_plugin._search_workers`): one tile's ops then run on one core without
OpenMP's fork and join per op, and a column's argmax is one band. ``VCQ_SEARCH_WORKERS=0`` keeps
every op on the calling thread. The ops of a span's tiles are one function, :func:`_unit_argmax`,
compiled by TorchScript so that they run without taking the GIL between them
(``VCQ_SCRIPTED_TILES=0``, or ``torch.compile`` tracing, run it in Python). Either way each tile is
computed with the same ops, so the indices are the same.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
import warnings
from concurrent import futures
from functools import lru_cache
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence

import torch

from ._search_workers import Once, Turns, compiling, search_workers, single_threaded

# fp32 distances computed at a time on CPU (4 MiB): small enough to stay in cache, big enough that
# per-tile overhead is amortised. Tuned on a 2-core AVX2 CPU; see benchmarks/quantizer.py.
DEFAULT_CHUNK_SIZE = 1 << 20
# On accelerators: 128 MiB of distances per tile (fewer, larger kernels).
DEFAULT_CHUNK_SIZE_ACCEL = 1 << 25
# Fixed cost of one tile, in "distance elements" (the few small ops around add/addmm/argmax).
TILE_OVERHEAD = 1 << 17

Group = tuple[int, int, int]  # (start, stop, K_max of the group)

_TILED: bool | None = {"0": False, "1": True}.get(os.environ.get("VCQ_TILED_SEARCH", ""))


def use_tiled_search(device: torch.device | str) -> bool:
    """Whether :func:`prefix_argmin` takes the tuned tiled path (True) or :func:`segment_argmin`
    (False) for tensors on ``device``: tiled on CPU, the reference elsewhere, unless
    ``VCQ_TILED_SEARCH=0|1`` or :func:`set_tiled_search` says otherwise."""
    return _TILED if _TILED is not None else torch.device(device).type == "cpu"


def set_tiled_search(enable: bool | None) -> None:
    """Force the tiled path (True), the reference (False), or restore the per-device default (None)."""
    global _TILED
    _TILED = enable


@contextlib.contextmanager
def tiled_search(enable: bool | None) -> Iterator[None]:
    """:func:`set_tiled_search` for the duration of a ``with`` block."""
    global _TILED
    saved, _TILED = _TILED, enable
    try:
        yield
    finally:
        _TILED = saved


def _sq_norms(x: torch.Tensor, rows_at_once: int = 1 << 16) -> torch.Tensor:
    """``torch.sum(x ** 2, dim=1)`` as the hosts compute it, a block of rows at a time: no (K, D)
    temporary (512 MiB at K_max 2**24, dim 8). Rows are reduced independently, so the values are
    the same bit for bit."""
    if x.shape[0] <= rows_at_once:
        return torch.sum(x**2, dim=1)
    # into one output through one reused square buffer: blocks of squares freed between long-lived
    # row sums fragmented the heap (512 MiB stayed resident after one call at K_max 2**24, measured)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    squares = torch.empty(rows_at_once, x.shape[1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], rows_at_once):
        part = x[start : start + rows_at_once]
        torch.sum(torch.pow(part, 2, out=squares[: part.shape[0]]), dim=1, out=out[start : start + part.shape[0]])
    return out


def _runs(sizes: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """``(start, stop, K)`` for each run of equal sizes (``CodebookSchedule.segments()``)."""
    start = 0
    for k, run in itertools.groupby(sizes):
        stop = start + sum(1 for _ in run)
        yield start, stop, k
        start = stop


@torch.no_grad()
def segment_argmin(z: torch.Tensor, codebook: torch.Tensor, sizes: Sequence[int], *, chunk_size: int | None = None) -> torch.Tensor:
    """The reference prefix search, run by run of equal K: (B, L, D) -> (B, L) int64, ``out[:, i] < sizes[i]``.

    Each run's queries take the argmin of the hosts' distance over ``codebook[:K]`` (fp32, ties to
    the lowest index), ``chunk_size`` distances at a time (default :data:`DEFAULT_CHUNK_SIZE_ACCEL`).
    """
    b, _, d = z.shape
    zf, e = z.detach().float(), codebook.detach().float()
    esq = _sq_norms(e)
    out = torch.empty(z.shape[:2], dtype=torch.long, device=z.device)
    for start, stop, k in _runs(sizes):
        queries = zf[:, start:stop].reshape(-1, d)  # (B * run, D), batch-major
        rows_at_once = max(1, (chunk_size or DEFAULT_CHUNK_SIZE_ACCEL) // k)
        picks = [(torch.sum(q**2, dim=1, keepdim=True) + esq[:k] - 2 * q @ e[:k].t()).argmin(dim=1)
                 for q in queries.split(rows_at_once)]
        out[:, start:stop] = torch.cat(picks).view(b, stop - start)
    return out


# A tile never has fewer columns than this when the problem has them: the channels-last max-pool
# vectorises over columns, and over one column it is a scalar loop (15 ns per distance, measured,
# against 0.3 ns at 64 columns). Codebooks too large for that many columns per chunk are split into
# row blocks whose column maxima are merged.
MIN_COLUMNS = 64
# A position split over several tiles is split evenly, in widths that are a multiple of this when they
# fit: at batch 128 the split at chunk // K (e.g. 95 + 33 columns) ran at 0.56-0.75 ns per distance
# against 0.41 at 64 + 64 (odd widths leave a remainder loop in the max-pool and the GEMM), measured.
_COLUMN_MULTIPLE = 16


def _layout(k: int, batch: int, chunk: int) -> int:
    """Columns per tile for a group of ``k`` rows: whole positions when at least MIN_COLUMNS of them
    fit in a chunk, else an even part of one position when at least MIN_COLUMNS fit; else
    MIN_COLUMNS (or whole positions near it), and the rows are split into blocks (:func:`_row_block`)."""
    cols_fit = max(1, chunk // k)
    if cols_fit >= max(batch, MIN_COLUMNS):
        return cols_fit // batch * batch
    if cols_fit >= MIN_COLUMNS:
        return _even_part(batch, cols_fit, _COLUMN_MULTIPLE)
    return max(batch, MIN_COLUMNS // batch * batch) if batch <= MIN_COLUMNS else MIN_COLUMNS


def _row_block(k: int, cols: int, chunk: int) -> int:
    """Rows per block for ``cols`` columns of ``k`` rows: all ``k`` when they fit in a chunk, else
    the fewest blocks of at most ``chunk // cols`` rows, balanced, a multiple of 16."""
    if k * cols <= chunk:
        return k
    return _even_part(k, max(_ROW_MULTIPLE, chunk // cols // _ROW_MULTIPLE * _ROW_MULTIPLE), _ROW_MULTIPLE)


def _even_part(total: int, most: int, multiple: int) -> int:
    """Size of each of the fewest equal parts of ``total`` that are at most ``most``, rounded up to a
    multiple of ``multiple`` when that is still at most ``most`` (the last part takes the rest)."""
    even = -(-total // -(-total // most))  # total over ceil(total / most) parts, rounded up
    rounded = -(-even // multiple) * multiple
    return rounded if rounded <= most else even


def _tiles(n_pos: int, rows_per_position: int, k_g: int, chunk: int) -> int:
    """Number of tiles of about ``chunk`` distances for a group of ``n_pos`` positions of ``k_g``
    rows (the cost model; the search pads ``k_g`` up to a multiple of 16 rows)."""
    cols = _layout(k_g, rows_per_position, chunk)
    if cols % rows_per_position == 0:
        column_tiles = -(-n_pos // (cols // rows_per_position))
    else:
        column_tiles = n_pos * -(-rows_per_position // cols)
    return column_tiles * -(-k_g // _row_block(k_g, cols, chunk))


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


_ROW_MULTIPLE = 16  # a tile's rows are rounded up to this (when the codebook has them): splits evenly


def _split_for(rows: int, threads: int) -> int:
    """Row bands per column for the CPU argmax (one per thread): the largest divisor of ``rows``
    that is at most ``threads``."""
    split = 1
    for h in range(2, threads + 1):
        if rows % h == 0:
            split = h
    return split


def _argmax_dim0(scores: torch.Tensor, out: torch.Tensor, split: int = 1, values: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[:] = scores.argmax(0)`` for a contiguous (K, n) matrix, first row on ties (and
    ``values[:] = scores.amax(0)`` when given).

    On CPU ``argmax`` over a long leading axis is a scalar loop; a channels-last max-pool with a
    (K, 1) window is the same reduction vectorised over the n columns (it keeps the first maximum:
    only a strictly greater value replaces it). ``split`` > 1 pools ``split`` bands of ``K /
    split`` rows in parallel (max-pool parallelises over its output pixels), then keeps the first
    band holding the maximum. Elsewhere it is ``torch.argmax``. TorchScript compiles it (see
    :func:`_unit_argmax`).
    """
    k, n = scores.shape[0], scores.shape[1]
    if scores.device.type != "cpu":
        best_values, best_rows = torch.max(scores, 0)
        if values is not None:
            values.copy_(best_values)
        return out.copy_(best_rows)
    if split < 1 or k % split != 0:
        raise ValueError("split must divide the " + str(k) + " rows, got " + str(split))
    scores = scores.contiguous()  # a no-op for the search's tiles
    # (1, n, split, K/split) channels-last view of the (K, n) rows
    bands = scores.as_strided([1, n, split, k // split], [k * n, 1, (k // split) * n, n], scores.storage_offset())
    best, rows = torch.nn.functional.max_pool2d_with_indices(bands, [1, k // split])  # rows: index in (split, K/split)
    if split == 1:
        if values is not None:
            values.copy_(best.view(n))
        return out.copy_(rows.view(n))
    best, rows = best.view(n, split), rows.view(n, split)
    if split == 2:  # the common case (2 threads) in two small ops
        if values is not None:
            torch.maximum(best[:, 0], best[:, 1], out=values)
        return torch.where(best[:, 1] > best[:, 0], rows[:, 1], rows[:, 0], out=out)
    band = best.argmax(1, keepdim=True)  # first band holding the maximum
    if values is not None:
        torch.gather(best, 1, band, out=values.view(n, 1))
    return torch.gather(rows, 1, band, out=out.view(n, 1)).view(n)


# Masks cached per plan hold at most this many entries (else they are built per tile).
_MASK_CACHE_LIMIT = 1 << 21


class _Masks(NamedTuple):
    """The additive masks of a plan's tiles, 0 (kept) or -inf (row >= K(position)) (:meth:`of`).

    ``per_unit[u]``: unit u's list of its tiles' (tail rows * positions,) blocks, views into one
    tensor cached with the plan (empty: the tile masks nothing), so a call does no per-tile work to
    find them; None past :data:`_MASK_CACHE_LIMIT`, when each block is built from ``size`` (K(i) per
    position, int32) as its unit is computed."""

    per_unit: tuple[list[torch.Tensor], ...] | None
    size: torch.Tensor
    batch: int

    def of(self, unit: _Unit, tiles: tuple[Tile, ...]) -> list[torch.Tensor]:
        """(tail rows * n_pos,) fp32 per tile of ``unit``: its mask of rows ``masked_from..r1-1`` per position."""
        if self.per_unit is not None:
            return self.per_unit[unit.index]
        return [_tail_mask(self.size, tiles[t], self.batch).view(-1) for t in range(unit.first, unit.stop)]


@lru_cache(maxsize=8)
def _tile_masks(sizes: tuple[int, ...], batch: int, chunk: int, device: torch.device) -> _Masks:
    """The :class:`_Masks` of :func:`_loop_layout`'s units, cached with the plan; their blocks are
    built per unit instead when they would hold more than :data:`_MASK_CACHE_LIMIT` floats."""
    layout = _loop_layout(sizes, batch, chunk)
    tiles = layout.tiles
    size = torch.tensor(sizes, dtype=torch.int32, device=device)
    if sum((tile.r1 - tile.masked_from) * tile.n_pos for tile in tiles) > _MASK_CACHE_LIMIT:
        return _Masks(None, size, batch)
    parts = [_tail_mask(size, tile, batch).view(-1) for tile in tiles]  # empty where a tile masks nothing
    blocks = torch.cat(parts).split([p.numel() for p in parts])
    return _Masks(tuple(list(blocks[u.first : u.stop]) for u in layout.units), size, batch)


def _tail_mask(size: torch.Tensor, tile: Tile, batch: int) -> torch.Tensor:
    """(tail, n_pos) fp32: the additive mask of the tile's rows ``masked_from..r1-1`` per position,
    -inf where row >= K(position), else 0."""
    rows = torch.arange(tile.masked_from, tile.r1, device=size.device).unsqueeze(1)
    first = tile.c0 // batch
    dropped = rows >= size[first : first + tile.n_pos]
    return torch.zeros(dropped.shape, device=size.device).masked_fill_(dropped, float("-inf"))


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
        chunk_size: fp32 distances held at a time (default :data:`DEFAULT_CHUNK_SIZE` on CPU,
            :data:`DEFAULT_CHUNK_SIZE_ACCEL` elsewhere; a tile has at least 16 rows and up to
            MIN_COLUMNS columns, so a tiny chunk_size is rounded up to that).

    Returns:
        (B, L) int64 indices, ``indices[:, i] < sizes[i]``.
    """
    sizes = tuple(int(k) for k in sizes)
    if z.dim() != 3 or codebook.dim() != 2 or z.shape[2] != codebook.shape[1]:
        raise ValueError(f"z must be (B, L, D) and codebook (K, D) with the same D, got {tuple(z.shape)} and {tuple(codebook.shape)}")
    if len(sizes) != z.shape[1]:
        raise ValueError(f"sizes must have one entry per position (L={z.shape[1]}), got {len(sizes)}")
    if sizes and (min(sizes) < 1 or max(sizes) > codebook.shape[0] or any(a > b for a, b in zip(sizes, sizes[1:]))):
        raise ValueError(f"sizes must be non-decreasing integers in [1, {codebook.shape[0]}] (the codebook size)")
    with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 distances, always
        if not use_tiled_search(z.device):
            return segment_argmin(z, codebook, sizes, chunk_size=chunk_size)
        return tiled_prefix_argmin(z, codebook, sizes, chunk_size)


class Tile(NamedTuple):
    """Columns ``c0..c1-1`` and rows ``r0..r1-1`` of one group: ``n_pos`` positions (whole ones, or
    part of one); rows ``>= mask_from`` may be masked (row >= K(position))."""

    c0: int
    c1: int
    r0: int
    r1: int
    mask_from: int
    n_pos: int

    @property
    def masked_from(self) -> int:
        """First row of this tile that may be masked (``r1``: none)."""
        return min(max(self.mask_from, self.r0), self.r1)


@lru_cache(maxsize=64)
def plan_tiles(sizes: tuple[int, ...], batch: int, chunk: int = DEFAULT_CHUNK_SIZE) -> tuple[Tile, ...]:
    """The tiles :func:`prefix_argmin` computes for ``sizes`` at batch size ``batch``.

    Columns are queries ordered (position, batch), so position ``p`` owns columns
    ``p * batch .. (p + 1) * batch - 1``. A group of :func:`plan_groups` computes ``k_pad`` rows (its
    K rounded up to a multiple of 16 when the codebook has them); each tile covers columns
    ``c0..c1-1`` of one group (``n_pos`` whole positions, or part of one: ``n_pos == 1``) and its rows
    ``r0..r1-1`` (all of them, unless the codebook is too large for MIN_COLUMNS columns per chunk:
    then consecutive tiles are row blocks of the same columns). Rows ``>= K(position)`` must be
    masked; all of them lie at or below row ``mask_from``.
    """
    k_top = sizes[-1]
    tiles: list[Tile] = []
    for start, stop, k_g in plan_groups(sizes, batch, chunk):
        k_pad = min(-(-k_g // _ROW_MULTIPLE) * _ROW_MULTIPLE, k_top)
        cols = _layout(k_pad, batch, chunk)
        if cols % batch == 0:  # tiles of whole positions
            per = cols // batch
            spans = [(p0 * batch, min(p0 + per, stop) * batch) for p0 in range(start, stop, per)]
        else:  # a tile holds part of one position's queries
            spans = [(c0, min(c0 + cols, (p + 1) * batch)) for p in range(start, stop) for c0 in range(p * batch, (p + 1) * batch, cols)]
        for c0, c1 in spans:
            rows = _row_block(k_pad, c1 - c0, chunk)
            for r0 in range(0, k_pad, rows):
                tiles.append(Tile(c0, c1, r0, min(r0 + rows, k_pad), min(sizes[c0 // batch], k_pad), max(1, (c1 - c0) // batch)))
    return tuple(tiles)


class _Unit(NamedTuple):
    """One column span of the plan and its row blocks, the work one thread takes at a time."""

    index: int  # its place in :attr:`_Layout.units`
    first: int  # its tiles are first..stop-1 (row blocks in order)
    stop: int
    c0: int  # its columns c0..c1-1
    c1: int
    blocks: list[list[int]]  # [r0, r1, masked_from, n_pos] per tile, as :func:`_unit_argmax` takes them


class _Layout(NamedTuple):
    """What the search loop needs besides the tiles, per plan (:func:`_loop_layout`)."""

    tiles: tuple[Tile, ...]
    buf_size: int  # floats of the largest tile
    width: int  # columns of the widest tile
    units: tuple[_Unit, ...]


@lru_cache(maxsize=64)
def _loop_layout(sizes: tuple[int, ...], batch: int, chunk: int) -> _Layout:
    tiles = plan_tiles(sizes, batch, chunk)
    firsts = [t for t, tile in enumerate(tiles) if tile.r0 == 0]  # a span's row blocks follow its first tile
    units = tuple(_Unit(u, first, stop, tiles[first].c0, tiles[first].c1,
                        [[t.r0, t.r1, t.masked_from, t.n_pos] for t in tiles[first:stop]])
                  for u, (first, stop) in enumerate(zip(firsts, firsts[1:] + [len(tiles)])))
    return _Layout(tiles, max((t.c1 - t.c0) * (t.r1 - t.r0) for t in tiles), max(t.c1 - t.c0 for t in tiles), units)


class _Queries(NamedTuple):
    """The queries of one search in (position, batch) order (:func:`_prepare_queries`)."""

    zn: torch.Tensor  # (L*B, D) fp32, row = (position, batch)
    neg_zsq: torch.Tensor  # (L*B,) -||z||^2


class _Codes(NamedTuple):
    """The codes of one search (:func:`_prepare_codes`)."""

    e: torch.Tensor  # (K, D) fp32 codes
    neg_esq: torch.Tensor  # (K, 1) -||e||^2
    masks: _Masks  # the tiles' masks (cached per plan)


def _prepare_queries(z: torch.Tensor) -> _Queries:
    b, l, d = z.shape
    zn = z.detach().float().transpose(0, 1).reshape(l * b, d)
    # -||z||^2 as the hosts compute ||z||^2 (row sums: the same rows, so the same values bit for bit)
    return _Queries(zn, zn.pow(2).sum(1).neg_())


def _prepare_codes(codebook: torch.Tensor, sizes: tuple[int, ...], batch: int, chunk: int) -> _Codes:
    e = codebook.detach()[: sizes[-1]].float().contiguous()
    neg_esq = _sq_norms(e).neg_().unsqueeze(1)  # -||e||^2 once per call, (K, 1)
    return _Codes(e, neg_esq, _tile_masks(sizes, batch, chunk, e.device))


class _Scratch:
    """A tile buffer and the running column maxima of row blocks; grown on demand, reused per thread."""

    def __init__(self) -> None:
        self.buf = self.best = self.block_best = self.block_idx = torch.empty(0)

    def ensure(self, layout: _Layout, device: torch.device) -> "_Scratch":
        width = layout.width
        if self.buf.numel() < layout.buf_size or self.buf.device != device:
            self.buf = torch.empty(layout.buf_size, dtype=torch.float32, device=device)
        if self.best.numel() < width or self.best.device != device:
            self.best, self.block_best = (torch.empty(width, device=device) for _ in range(2))
            self.block_idx = torch.empty(width, dtype=torch.long, device=device)
        return self


def _unit_argmax(buf: torch.Tensor, neg_esq: torch.Tensor, neg_zsq: torch.Tensor, zn: torch.Tensor, e: torch.Tensor,
                 out: torch.Tensor, best: torch.Tensor, block_best: torch.Tensor, block_idx: torch.Tensor,
                 c0: int, c1: int, blocks: List[List[int]], masks: List[torch.Tensor], split: int) -> None:
    """One unit: the argmax over its row blocks of columns ``c0..c1-1`` into ``out[c0:c1]``.

    ``blocks[j] = [r0, r1, masked_from, n_pos]`` (:class:`Tile`), in row order; ``masks[j]`` the
    additive mask of block j's rows ``masked_from..r1-1`` ((tail rows * n_pos,) fp32, 0 / -inf,
    :meth:`_Masks.of`; unused when it masks nothing). ``buf``: at least the largest block's floats;
    ``best`` / ``block_best`` / ``block_idx``: running column maxima of row blocks (:class:`_Scratch`).

    TorchScript compiles this function (:func:`_tile_loop`): a scripted call runs its ~12 ops per
    tile without taking the GIL between them. Two worker threads each re-taking the GIL after every
    op made ~100 context switches per VCQ-cosine search at K_max 16384, L 256, B 32 (2 threads),
    against ~20 scripted, and the search took 9-16 % longer (measured interleaved, same indices).
    """
    n = c1 - c0
    zsq, zcols, out_cols = neg_zsq[c0:c1], zn[c0:c1].t(), out[c0:c1]
    for j in range(len(blocks)):
        r0, r1, m, n_pos = blocks[j][0], blocks[j][1], blocks[j][2], blocks[j][3]
        scores = buf[: (r1 - r0) * n].view(r1 - r0, n)  # -distance: the nearest code is the argmax
        torch.add(neg_esq[r0:r1], zsq, out=scores)
        if m < r1:  # rows >= m: + mask (0 or -inf) per position; -inf stays -inf through the addmm
            tail = buf[(m - r0) * n : (r1 - r0) * n].view(r1 - m, n_pos, n // n_pos)
            tail.add_(masks[j].view(r1 - m, n_pos, 1))
        scores.addmm_(e[r0:r1], zcols, alpha=2)  # + 2 <e, z>
        band = _split_for(r1 - r0, split)
        if len(blocks) == 1:  # the span's only row block
            _argmax_dim0(scores, out_cols, band)
        elif r0 == 0:
            _argmax_dim0(scores, out_cols, band, best[:n])
        else:  # a later row block replaces a column's best only where strictly greater (first on ties)
            _argmax_dim0(scores, block_idx[:n], band, block_best[:n])
            better = torch.gt(block_best[:n], best[:n])
            torch.where(better, block_best[:n], best[:n], out=best[:n])
            torch.where(better, block_idx[:n] + r0, out_cols, out=out_cols)


_SCRIPTED = os.environ.get("VCQ_SCRIPTED_TILES", "") != "0"


@lru_cache(maxsize=1)
def _scripted_unit_argmax() -> Callable[..., None] | None:
    """:func:`_unit_argmax` compiled by TorchScript, or None (with a warning) where it cannot be."""
    try:
        with warnings.catch_warnings():
            # torch 2.10+ marks torch.jit.script deprecated in favour of torch.compile, which does not
            # run the loop without the GIL (and needs a C++ compiler); this use has a fallback below
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.script(_unit_argmax)
    except Exception as err:  # TorchScript absent or unable: the same function, run by Python
        warnings.warn(f"vcq_plugin: TorchScript could not compile the CPU search's tile loop ({err!r}); "
                      "it runs in Python (slower with several threads)", RuntimeWarning, stacklevel=2)
        return None


def _tile_loop() -> Callable[..., None]:
    """The function that computes a unit: :func:`_unit_argmax` scripted, unless ``VCQ_SCRIPTED_TILES=0``,
    TorchScript cannot compile it, or torch.compile is tracing (it traces the Python function)."""
    if not _SCRIPTED or compiling():
        return _unit_argmax
    return _scripted_unit_argmax() or _unit_argmax


def _compute_tiles(layout: _Layout, q: _Queries, c: _Codes, out: torch.Tensor, units: Iterable[_Unit],
                   scratch: _Scratch, split: int, unit_argmax: Callable[..., None]) -> None:
    """Compute every unit (a column span: its one tile, or its row blocks in order) with
    ``unit_argmax`` (:func:`_tile_loop`) into ``out`` ((L*B,) int64, (position, batch) order);
    ``split`` row bands per argmax (see :func:`_argmax_dim0`)."""
    for unit in units:
        unit_argmax(scratch.buf, c.neg_esq, q.neg_zsq, q.zn, c.e, out, scratch.best, scratch.block_best,
                    scratch.block_idx, unit.c0, unit.c1, unit.blocks, c.masks.of(unit, layout.tiles), split)


_worker_scratch = threading.local()


def _worker_compute(layout: _Layout, queries: Once[_Queries], codes: Once[_Codes], codes_first: bool, out: torch.Tensor,
                    units: Turns[_Unit], unit_argmax: Callable[..., None]) -> None:
    """One thread's share (a worker's or the caller's): the queries and the codes, each computed by
    the first thread that asks (one starts with the queries, another with the codes, so they are
    prepared side by side: 0.5-0.7 ms less per call than one thread preparing both, measured at
    K_max 16384, L 256, B 32), then units until none is left. The tile buffer is kept per thread
    (the largest tile of the plans seen, 4 MiB at the default chunk size)."""
    with torch.no_grad():
        if codes_first:
            c, q = codes.get(), queries.get()
        else:
            q, c = queries.get(), codes.get()
        if not hasattr(_worker_scratch, "value"):
            _worker_scratch.value = _Scratch()
        _compute_tiles(layout, q, c, out, units, _worker_scratch.value.ensure(layout, c.e.device), 1, unit_argmax)


def tiled_prefix_argmin(z: torch.Tensor, codebook: torch.Tensor, sizes: tuple[int, ...], chunk_size: int | None = None) -> torch.Tensor:
    """The tuned path (module docstring): same arguments and indices as :func:`segment_argmin`.

    On CPU with several threads the tiles are computed by this thread and single-threaded worker
    threads (:mod:`vcq_plugin._search_workers`, ``VCQ_SEARCH_WORKERS=0`` turns them off); each tile is
    computed the same way either way, so the indices are the same."""
    b, l, _ = z.shape
    chunk = int(chunk_size or (DEFAULT_CHUNK_SIZE if z.device.type == "cpu" else DEFAULT_CHUNK_SIZE_ACCEL))
    out = torch.empty(l * b, dtype=torch.long, device=z.device)
    if out.numel() == 0:
        return out.view(b, l)
    layout = _loop_layout(sizes, b, chunk)
    workers, unit_argmax = search_workers(z.device, len(layout.units)), _tile_loop()
    if workers is None:  # this thread issues every op (ATen's intra-op threads split each one)
        threads = torch.get_num_threads() if z.device.type == "cpu" else 1
        _compute_tiles(layout, _prepare_queries(z), _prepare_codes(codebook, sizes, b, chunk), out, layout.units,
                       _Scratch().ensure(layout, z.device), threads, unit_argmax)
    else:  # this thread and the workers prepare the codes and the queries side by side, then take units in turn
        queries = Once(lambda: _prepare_queries(z))
        codes = Once(lambda: _prepare_codes(codebook, sizes, b, chunk))
        units = Turns(layout.units)
        jobs = [workers.submit(_worker_compute, layout, queries, codes, i % 2 == 1, out, units, unit_argmax)
                for i in range(workers.size)]
        try:
            with single_threaded():
                _worker_compute(layout, queries, codes, True, out, units, unit_argmax)
        finally:  # no worker left writing into ``out`` when this returns or raises
            futures.wait(jobs)
        for job in jobs:
            job.result()  # a worker's error, raised here
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
