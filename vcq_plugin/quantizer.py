"""VariableCodebookQuantizer: a drop-in vector quantizer whose position i uses codes ``0..K(i)-1``.

One shared ``nn.Embedding(K_max, D)`` named ``embedding`` (so a LlamaGen / TiTok checkpoint's
``quantize.embedding.weight`` loads unchanged); the per-position sizes come from a
:class:`~vcq_plugin.schedule.CodebookSchedule`. Losses, straight-through estimator and the
optional l2-normalisation follow the hosts' ``VectorQuantizer`` exactly; the nearest-code search
is the prefix search of :mod:`vcq_plugin.prefix_search`.

The forward pass never waits for the device: on CUDA it makes no host synchronisation (value
checks become asynchronous asserts, the usage record is updated with sort / gather / index_add).
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._errors import check_int
from .prefix_search import prefix_argmin
from .registry import register_quantizer
from .schedule import CodebookSchedule

SIZES_KEY = "codebook_sizes"  # state-dict entry holding K(i), int64 [L]


def _host_checks(t: torch.Tensor) -> bool:
    """Whether value checks on ``t`` may read it on the host (CPU tensors). Elsewhere reading a
    value would synchronise the device, so checks become asynchronous asserts."""
    return t.device.type == "cpu"


class CodeUsage:
    """Which codes each position has picked: one bit per (position i, code k < K(i)).

    Position i's bits live in int64 words ``word_start[i] .. word_start[i + 1] - 1`` (bit k of the
    run is bit ``k % 64`` of word ``word_start[i] + k // 64``), so the record takes
    ``8 * sum_i ceil(K(i) / 64)`` bytes: 186 MiB for the cosine schedule at K_max = 2**24, L = 256,
    against 4 GiB for a dense bool [L, K_max]. Updates never synchronise the device.
    """

    def __init__(self, sizes: Sequence[int], device: torch.device) -> None:
        words = [(int(k) + 63) // 64 for k in sizes]  # host-side layout: no tensor is read to build it
        self.word_start_host = [0, *itertools.accumulate(words)]
        self.first_bit = torch.tensor([64 * w for w in self.word_start_host[:-1]], dtype=torch.long).to(device)
        self.words = torch.zeros(self.word_start_host[-1], dtype=torch.long, device=device)

    @staticmethod
    def nbytes_for(sizes: Sequence[int]) -> int:
        return 8 * sum((int(k) + 63) // 64 for k in sizes)

    def to(self, device: torch.device) -> "CodeUsage":
        if self.words.device != device:
            self.first_bit, self.words = self.first_bit.to(device), self.words.to(device)
        return self

    @torch.no_grad()
    def add(self, indices: torch.Tensor) -> None:
        """Set the bits of ``indices`` (B, L), each already in ``[0, K(i))`` (not checked here).

        A word gains the sum of its new, distinct bits, which equals their OR: duplicates are dropped
        after a sort and bits already set are masked out, so no addition ever carries."""
        bits = (self.first_bit + indices.long()).reshape(-1).sort().values
        first = torch.ones_like(bits, dtype=torch.bool)
        first[1:] = bits[1:] != bits[:-1]
        word = bits >> 6
        value = torch.bitwise_left_shift(first.long(), bits & 63)  # 0 for a repeated bit
        self.words.index_add_(0, word, value & ~self.words[word])

    def position_words(self, position: int) -> torch.Tensor:
        return self.words[self.word_start_host[position]:self.word_start_host[position + 1]]

    @staticmethod
    def unpack(words: torch.Tensor, k: int) -> torch.Tensor:
        """bool [k]: the first k bits of ``words`` (little-endian bit order within each word)."""
        shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
        byte_view = words.contiguous().view(torch.uint8)
        return ((byte_view.unsqueeze(1) >> shifts) & 1).view(-1)[:k].bool()

    def counts(self, words: torch.Tensor, chunk_words: int = 1 << 20) -> torch.Tensor:
        """int64 [L]: set bits per position in ``words`` (this record's layout), ``chunk_words`` at a time."""
        starts = torch.tensor(self.word_start_host[:-1], device=words.device)
        out = torch.zeros(len(starts), dtype=torch.long, device=words.device)
        for a in range(0, words.numel(), chunk_words):
            part = words[a:a + chunk_words]
            owner = torch.searchsorted(starts, torch.arange(a, a + part.numel(), device=words.device), right=True) - 1
            out.index_add_(0, owner, _popcount(part))
        return out


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each int64 word (SWAR; the masks make the arithmetic shifts act as logical ones)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56  # the top byte sums the byte counts (<= 64: never negative)


def _or_across_ranks(words: torch.Tensor, chunk_words: int = 1 << 22) -> torch.Tensor:
    """Bitwise OR of ``words`` over every rank (a collective). all_gather works on every backend
    (NCCL has no bitwise reduction); chunks bound the extra memory to world_size x 32 MiB."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return words
    out = torch.empty_like(words)
    for a in range(0, words.numel(), chunk_words):
        part = words[a:a + chunk_words].contiguous()
        gathered = [torch.empty_like(part) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, part)
        acc = gathered[0]
        for other in gathered[1:]:
            acc = acc | other
        out[a:a + chunk_words] = acc
    return out


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


class VariableCodebookQuantizer(nn.Module):
    """Vector quantizer with a per-position codebook size K(i) over one shared codebook.

    Args:
        schedule: a built :class:`CodebookSchedule` (``CodebookSchedule.from_spec("vcq_cosine",
            k_max=16384, seq_len=256)``); by name: ``create_quantizer("vcq_cosine", dim=8, ...)``.
        dim: code dimension D.
        commitment_cost: beta; ``commitment_loss`` is returned already multiplied by it.
        use_l2_norm: l2-normalise inputs and codes before the search (TiTok / LlamaGen option);
            ``z_q`` is then the normalised code.
        entropy_loss_ratio: weight of LlamaGen's entropy loss (0 = off), computed over the
            allowed codes of each position, in training mode.
        entropy_temperature: temperature of that loss (LlamaGen's 0.01).
        chunk_size: fp32 distances held at a time by the search (default: prefix_search's).
        save_schedule: keep K(i) in the state dict as ``codebook_sizes`` (default). Host adapters whose
            config carries the schedule pass False so checkpoints have exactly upstream's keys.

    ``forward(z)``: z (B, L, D) -> ``(z_q (B, L, D) fp32, info)``, info = ``indices`` (B, L) int64,
    ``loss``, ``codebook_loss``, ``commitment_loss`` (+ ``entropy_loss`` when its ratio > 0).
    Training forwards record which codes each position picked (:meth:`codes_used`,
    :meth:`used_codes`, :meth:`position_usage`; one bit per allowed code, ``sum_i K(i) / 8`` bytes).

    A codebook (fp32 embedding + usage record) larger than this machine's memory is refused here,
    with the sizes, rather than failing inside the allocator.
    """

    def __init__(
        self,
        schedule: CodebookSchedule,
        dim: int,
        *,
        commitment_cost: float = 0.25,
        use_l2_norm: bool = False,
        entropy_loss_ratio: float = 0.0,
        entropy_temperature: float = 0.01,
        chunk_size: int | None = None,
        save_schedule: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, CodebookSchedule):
            raise TypeError(
                f"schedule must be a CodebookSchedule, got {type(schedule).__name__} {schedule!r}; build one with "
                "CodebookSchedule.from_spec('vcq_cosine', k_max=..., seq_len=...) or use "
                "create_quantizer('vcq_cosine', dim=..., k_max=..., seq_len=...)"
            )
        self.schedule = schedule
        dim = check_int("dim", dim, minimum=1)
        for name, value in (("commitment_cost", commitment_cost), ("entropy_loss_ratio", entropy_loss_ratio)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(entropy_temperature, (int, float)) or not entropy_temperature > 0:
            raise ValueError(f"entropy_temperature must be a number > 0, got {entropy_temperature!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
        self.dim = dim
        self.k_max = self.schedule.k_max
        self.seq_len = self.schedule.seq_len
        _check_fits_in_memory(self.schedule, dim)
        self.commitment_cost = float(commitment_cost)
        self.use_l2_norm = bool(use_l2_norm)
        self.entropy_loss_ratio = float(entropy_loss_ratio)
        self.entropy_temperature = float(entropy_temperature)
        self.chunk_size = chunk_size
        self._sizes = tuple(int(k) for k in self.schedule.sizes)

        self.embedding = nn.Embedding(self.k_max, dim)
        self.embedding.weight.data.uniform_(-1.0 / self.k_max, 1.0 / self.k_max)
        # save_schedule=False: host adapters whose config carries the schedule keep checkpoints to
        # exactly upstream's keys; a checkpoint that has the entry is still checked against it.
        self.register_buffer(SIZES_KEY, self.schedule.sizes.clone(), persistent=bool(save_schedule))
        # codes seen at each position since reset_usage(), created on first use. Deliberately not a
        # buffer: DDP would broadcast rank 0's copy over the others every step; ranks are combined
        # when the statistics are read with sync=True instead.
        self._usage: CodeUsage | None = None

    def extra_repr(self) -> str:
        return (
            f"schedule={self.schedule!r}, dim={self.dim}, commitment_cost={self.commitment_cost}, "
            f"use_l2_norm={self.use_l2_norm}, entropy_loss_ratio={self.entropy_loss_ratio}"
        )

    # ------------------------------------------------------------------ checks
    def _check_input(self, z: torch.Tensor, name: str = "z") -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, L, D), got {type(z).__name__}")
        if z.dim() != 3:
            raise ValueError(
                f"{name} must have rank 3 (batch, seq_len={self.seq_len}, dim={self.dim}), tokens before "
                f"channels; got rank {z.dim()} with shape {tuple(z.shape)}"
            )
        if z.shape[1] != self.seq_len:
            raise ValueError(f"{name} sequence length must equal the schedule's seq_len={self.seq_len}, got {z.shape[1]} (shape {tuple(z.shape)})")
        if z.shape[2] != self.dim:
            raise ValueError(f"{name} last dimension must equal dim={self.dim}, got {z.shape[2]} (shape {tuple(z.shape)})")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
        if not _host_checks(z):  # no host sync: a non-finite input stops the job with a device-side assert
            torch._assert_async(torch.isfinite(z).all(), f"{name} passed to VariableCodebookQuantizer must be finite")
        elif not bool(torch.isfinite(z.sum())):  # one reduction (NaN / inf propagate); else locate the culprit
            bad = (~torch.isfinite(z)).nonzero()
            if len(bad):  # (a finite sum can only overflow when |z| ~ 1e38)
                where = tuple(bad[0].tolist())
                raise ValueError(f"{name} must be finite; found {z[where].item()} at (batch, position, channel)={where}")

    def _codebook(self) -> torch.Tensor:
        """(K_max, D) fp32 codes used for the search and for z_q (normalised if use_l2_norm)."""
        w = self.embedding.weight.float()
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    # ------------------------------------------------------------------ search / lookup
    @torch.no_grad()
    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L) int64 nearest allowed code; ``indices[:, i] < K(i)``. No gradients."""
        self._check_input(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            if self.use_l2_norm:
                zf = F.normalize(zf, dim=-1)
            return prefix_argmin(zf, self._codebook(), self._sizes, chunk_size=self.chunk_size)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) int codes -> (B, L, D) fp32 vectors (normalised when use_l2_norm).

        Raises ValueError when an index is negative or >= K(i) at its position i.
        """
        indices = self._check_indices(indices)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return F.embedding(indices, self._codebook())

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` as int64 (B, L), or TypeError / ValueError naming the first index outside [0, K(i))."""
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor of shape (B, L={self.seq_len}), got {getattr(indices, 'dtype', type(indices).__name__)}")
        if indices.dim() != 2 or indices.shape[1] != self.seq_len:
            raise ValueError(f"indices must have shape (B, L={self.seq_len}), got {tuple(indices.shape)}")
        indices = indices.long()
        sizes = getattr(self, SIZES_KEY).to(indices.device)
        bad = (indices < 0) | (indices >= sizes)
        if bool(bad.any()):
            b, i = bad.nonzero()[0].tolist()
            raise ValueError(
                f"indices out of range for the schedule: batch {b}, position {i} has index "
                f"{int(indices[b, i])} but K({i})={int(sizes[i])} allows 0..{int(sizes[i]) - 1}"
            )
        return indices

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        self._check_input(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()
            if self.use_l2_norm:
                zf = F.normalize(zf, dim=-1)
            codebook = self._codebook()
            indices = prefix_argmin(zf, codebook, self._sizes, chunk_size=self.chunk_size)
            z_q = F.embedding(indices, codebook)
            diff = z_q - zf
            if torch.is_grad_enabled() and (zf.requires_grad or z_q.requires_grad):
                commitment_loss = self.commitment_cost * torch.mean((z_q.detach() - zf) ** 2)
                codebook_loss = torch.mean((z_q - zf.detach()) ** 2)
            else:  # no graph to build: both losses are the same mean, computed once (4 ops fewer)
                codebook_loss = torch.mean(diff**2)
                commitment_loss = self.commitment_cost * codebook_loss
            loss = codebook_loss + commitment_loss
            info: dict[str, Any] = {"indices": indices}
            if self.entropy_loss_ratio > 0:
                if self.training:
                    entropy_loss = self.entropy_loss_ratio * self._entropy_loss(zf, codebook)
                else:
                    entropy_loss = zf.new_zeros(())
                loss = loss + entropy_loss
                info["entropy_loss"] = entropy_loss
            z_q = zf + diff.detach()  # straight-through
        if self.training:  # the search's indices are in range: recorded without a (host-syncing) check
            self._usage_on(indices.device).add(indices)
        info.update(loss=loss, commitment_loss=commitment_loss, codebook_loss=codebook_loss)
        return z_q, info

    def _entropy_loss(self, zf: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """LlamaGen's ``compute_entropy_loss(-d)`` with each position restricted to its K(i) codes.

        sample entropy (mean over tokens of H(softmax(-d / T))) minus the entropy of the mean
        distribution over the K_max codes; disallowed codes have probability exactly 0.
        """
        b, l, d = zf.shape
        n_tok = b * l
        esq = codebook.pow(2).sum(1)
        avg_probs = zf.new_zeros(self.k_max)
        sample_entropy = zf.new_zeros(())
        for start, stop, k in self.schedule.segments():
            rows = zf[:, start:stop].reshape(-1, d)
            dist = rows.pow(2).sum(1, keepdim=True) + esq[:k] - 2 * rows @ codebook[:k].t()
            logits = -dist / self.entropy_temperature
            probs = F.softmax(logits, dim=-1)
            log_probs = F.log_softmax(logits + 1e-5, dim=-1)
            sample_entropy = sample_entropy - torch.sum(probs * log_probs) / n_tok
            avg_probs = avg_probs + F.pad(probs.sum(0), (0, self.k_max - k)) / n_tok
        avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + 1e-5))
        return sample_entropy - avg_entropy

    # ------------------------------------------------------------------ usage statistics
    @torch.no_grad()
    def update_usage(self, indices: torch.Tensor) -> None:
        """Mark codes ``indices`` (B, L) as used at their positions (training forwards do this; call
        it yourself to collect statistics in eval mode). Indices are checked as by
        :meth:`get_codebook_entry`: one outside ``[0, K(i))`` raises ValueError naming it."""
        indices = self._check_indices(indices)
        self._usage_on(indices.device).add(indices)

    def _usage_on(self, device: torch.device) -> CodeUsage:
        if self._usage is None:
            self._usage = CodeUsage(self._sizes, device)
        return self._usage.to(device)

    def _usage_words(self, sync: bool, position: int | None = None) -> torch.Tensor:
        usage = self._usage_on(self._usage.words.device if self._usage is not None else self.embedding.weight.device)
        words = usage.words if position is None else usage.position_words(position)
        return _or_across_ranks(words) if sync else words

    @property
    def usage(self) -> torch.Tensor:
        """bool [L, K_max] dense view of this rank's record (small codebooks only: L x K_max bytes;
        prefer :meth:`used_codes` per position)."""
        if self.seq_len * self.k_max > 1 << 28:
            raise MemoryError(
                f"the dense usage view needs L x K_max = {self.seq_len} x {self.k_max} bytes (limit 2**28); "
                "read it per position with used_codes(position, sync=False)"
            )
        rows = [self.used_codes(i, sync=False) for i in range(self.seq_len)]
        return torch.stack([F.pad(r, (0, self.k_max - r.numel())) for r in rows])

    def reset_usage(self) -> None:
        """Forget the usage statistics (this rank)."""
        self._usage = None

    def usage_state(self, sync: bool = False) -> dict[str, Any]:
        """The usage record as saved in a checkpoint: ``{"sizes": [K(i)], "words": int64 [W] (CPU)}``,
        the packed bits of :class:`CodeUsage` (one bit per allowed code, ``8 * sum_i ceil(K(i) / 64)``
        bytes). ``sync=True`` ORs the words over ranks first (a collective: every rank must call it);
        ``sync=False`` is this rank's record. :meth:`load_usage_state` puts it back."""
        words = self._usage_words(sync).detach().cpu().clone()
        return {"sizes": list(self._sizes), "words": words}

    def load_usage_state(self, state: Any) -> None:
        """Replace the usage record with one :meth:`usage_state` returned (on this codebook's device).

        Checked: the schedule must be this quantizer's, ``words`` an int64 vector of this record's
        length with no bit set at a code ``>= K(i)``; anything else is a ValueError naming what differs."""
        if not isinstance(state, dict) or "words" not in state or "sizes" not in state:
            raise ValueError(f"a usage state is the dict usage_state() returns ({{'sizes', 'words'}}), got "
                             f"{type(state).__name__}{sorted(state) if isinstance(state, dict) else ''}")
        sizes = [int(k) for k in state["sizes"]]
        if sizes != list(self._sizes):
            raise ValueError(f"usage state of another codebook schedule ({describe_sizes(sizes)}); this quantizer has "
                             f"{describe_sizes(list(self._sizes))}")
        words = state["words"]
        record = CodeUsage(self._sizes, self.embedding.weight.device)
        if not isinstance(words, torch.Tensor) or words.dtype != torch.long or words.dim() != 1 \
                or words.numel() != record.words.numel():
            got = f"{words.dtype} {tuple(words.shape)}" if isinstance(words, torch.Tensor) else type(words).__name__
            raise ValueError(f"usage state 'words' must be int64 [{record.words.numel()}] (the packed record of this "
                             f"schedule), got {got}")
        words = words.to(record.words.device)
        for i, k in enumerate(self._sizes):  # bits past K(i) in a position's last word must be clear
            if k % 64:
                last = words[record.word_start_host[i + 1] - 1]
                if int(last) & ~((1 << (k % 64)) - 1):
                    raise ValueError(f"usage state marks a code >= K({i}) = {k} as used at position {i}: not a "
                                     "record of this schedule")
        record.words.copy_(words)
        self._usage = record

    def used_codes(self, position: int, sync: bool = True) -> torch.Tensor:
        """bool [K(position)]: which of position ``position``'s codes were picked there since
        :meth:`reset_usage`.

        Collective when ``sync=True`` under torch.distributed (the default): every rank must call it,
        with the same position, as for ``all_reduce``; it returns the union over ranks. ``sync=False``
        gives this rank's statistics without communication (e.g. logging on rank 0 only)."""
        position = check_int("position", position)
        if not 0 <= position < self.seq_len:
            raise ValueError(f"position must be in [0, {self.seq_len}), got {position}")
        return CodeUsage.unpack(self._usage_words(sync, position), self.schedule.size_at(position))

    def codes_used(self, sync: bool = True) -> torch.Tensor:
        """int64 [L]: distinct codes used at each position since :meth:`reset_usage`.

        Collective when ``sync=True`` under torch.distributed (the default): every rank must call it,
        as for ``all_reduce`` (called on rank 0 alone it waits for the others forever); it counts the
        union over ranks. ``sync=False`` counts this rank's codes without communication."""
        usage = self._usage_on(self._usage.words.device if self._usage is not None else self.embedding.weight.device)
        return usage.counts(self._usage_words(sync))

    def position_usage(self, sync: bool = True) -> torch.Tensor:
        """float [L]: fraction of position i's K(i) codes used since :meth:`reset_usage`.

        Collective when ``sync=True`` (see :meth:`codes_used`); ``sync=False``: this rank only."""
        used = self.codes_used(sync=sync)
        return used.double().div(getattr(self, SIZES_KEY).to(used.device).double()).float()

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + SIZES_KEY
        if key in state_dict:
            theirs = state_dict[key]
            mine = getattr(self, SIZES_KEY)
            if tuple(theirs.shape) != tuple(mine.shape) or not torch.equal(theirs.cpu().long(), mine.cpu()):
                raise ValueError(
                    f"checkpoint was made with another codebook schedule ({key}):\n"
                    f"  checkpoint: {describe_sizes(theirs)}\n"
                    f"  this model: {describe_sizes(mine)}\n"
                    f"To start from it anyway (e.g. a uniform tokenizer), delete {key!r} from the state dict."
                )
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            if key in unexpected_keys:  # not saved by this module (save_schedule=False), but it matched
                unexpected_keys.remove(key)
        else:  # a host checkpoint: only embedding.weight
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            if key in missing_keys:
                missing_keys.remove(key)


def describe_sizes(sizes: torch.Tensor | list[int]) -> str:
    """Readable name of a sizes vector: the named schedule it equals, else a short summary."""
    s = [int(k) for k in (sizes.tolist() if isinstance(sizes, torch.Tensor) else sizes)]
    if not s:
        return "empty schedule"
    try:
        explicit = CodebookSchedule.from_sizes(s)
    except (TypeError, ValueError):
        explicit = None
    if explicit is not None:
        for kind in ("constant", "linear", "cosine", "power"):  # to_dict()'s layout: from_spec drops a constant's k_min
            try:
                cand = CodebookSchedule.from_spec({"kind": kind, "k_min": s[0], "k_max": s[-1], "seq_len": len(s)})
            except (TypeError, ValueError):
                continue
            if cand == explicit:
                return repr(cand)
    head = ", ".join(map(str, s[:4]))
    tail = ", ".join(map(str, s[-2:]))
    return f"explicit sizes (L={len(s)}) [{head}, ..., {tail}], mean {sum(s) / len(s):.1f}"


def _check_fits_in_memory(schedule: CodebookSchedule, dim: int) -> None:
    """Refuse a codebook whose fp32 embedding plus usage record exceeds this machine's memory."""
    usage = CodeUsage.nbytes_for(schedule.sizes.tolist())
    need = schedule.k_max * dim * 4 + usage
    limit = _physical_memory_bytes()
    if limit is not None and need > limit:
        raise ValueError(
            f"K_max={schedule.k_max} x dim={dim} needs {need / 2**30:.3g} GiB (fp32 codebook "
            f"{schedule.k_max * dim * 4 / 2**30:.3g} GiB + usage record {usage / 2**30:.3g} GiB), "
            f"more than this machine's {limit / 2**30:.3g} GiB of memory; the limit is the machine's memory"
        )


# ---------------------------------------------------------------------- registry
def _factory(schedule_name: str):
    def make(dim: int = 8, k_max: int = 16384, seq_len: int = 256, k_min: int | None = None,
             power: float | None = None, **kwargs: Any) -> VariableCodebookQuantizer:
        schedule = CodebookSchedule.from_spec(schedule_name, k_min=k_min, k_max=k_max, seq_len=seq_len, power=power)
        return VariableCodebookQuantizer(schedule, dim, **kwargs)

    make.__name__ = f"create_{schedule_name.replace('.', '_')}"
    make.__doc__ = (f"VariableCodebookQuantizer with the {schedule_name!r} schedule: dim, k_max=16384, seq_len=256, "
                    "k_min / power as CodebookSchedule.from_spec, loss options as the class.")
    return make


for _name in ("vcq_cosine", "vcq_linear", "vcq_power", "vcq_power2.5", "constant"):
    register_quantizer(_name, _factory(_name))
