"""VariableCodebookQuantizer: a drop-in vector quantizer whose position i uses codes ``0..K(i)-1``.

One shared ``nn.Embedding(K_max, D)`` named ``embedding`` (so a LlamaGen / TiTok checkpoint's
``quantize.embedding.weight`` loads unchanged); the per-position sizes come from a
:class:`~vcq_plugin.schedule.CodebookSchedule`. Losses, straight-through estimator and the
optional l2-normalisation follow the hosts' ``VectorQuantizer`` exactly; the nearest-code search
is the prefix search of :mod:`vcq_plugin.prefix_search`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._errors import check_int
from .prefix_search import prefix_argmin
from .registry import register_quantizer
from .schedule import CodebookSchedule, coerce_schedule

SIZES_KEY = "codebook_sizes"  # state-dict entry holding K(i), int64 [L]


class VariableCodebookQuantizer(nn.Module):
    """Vector quantizer with a per-position codebook size K(i) over one shared codebook.

    Args:
        schedule: a :class:`CodebookSchedule`, a registry name (``"vcq_cosine"``, ``"vcq_linear"``,
            ``"vcq_power"``, ``"vcq_power2.5"``, ``"constant"``) or a ``to_dict()`` dict.
        dim: code dimension D.
        k_min, k_max, seq_len, power: schedule arguments, used with a name or dict.
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
    """

    def __init__(
        self,
        schedule: CodebookSchedule | str | dict = "vcq_cosine",
        dim: int = 8,
        *,
        k_min: int | None = None,
        k_max: int | None = None,
        seq_len: int | None = None,
        power: float | None = None,
        commitment_cost: float = 0.25,
        use_l2_norm: bool = False,
        entropy_loss_ratio: float = 0.0,
        entropy_temperature: float = 0.01,
        chunk_size: int | None = None,
        save_schedule: bool = True,
    ) -> None:
        super().__init__()
        kw = {k: v for k, v in dict(k_min=k_min, k_max=k_max, seq_len=seq_len, power=power).items() if v is not None}
        self.schedule = coerce_schedule(schedule, **kw)
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
        # codes seen at each position since reset_usage(): bool [L, K_max] (4 MiB at 256 x 16384),
        # created on first use. Deliberately not a buffer: DDP would broadcast rank 0's copy over
        # the others every step; ranks are combined when the statistics are read instead.
        self._usage: torch.Tensor | None = None

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
        if not bool(torch.isfinite(z).all()):
            bad = (~torch.isfinite(z)).nonzero()[0].tolist()
            raise ValueError(f"{name} must be finite; found {z[tuple(bad)].item()} at (batch, position, channel)={tuple(bad)}")

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
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return F.embedding(indices, self._codebook())

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
            commitment_loss = self.commitment_cost * torch.mean((z_q.detach() - zf) ** 2)
            codebook_loss = torch.mean((z_q - zf.detach()) ** 2)
            loss = codebook_loss + commitment_loss
            info: dict[str, Any] = {"indices": indices}
            if self.entropy_loss_ratio > 0:
                if self.training:
                    entropy_loss = self.entropy_loss_ratio * self._entropy_loss(zf, codebook)
                else:
                    entropy_loss = zf.new_zeros(())
                loss = loss + entropy_loss
                info["entropy_loss"] = entropy_loss
            z_q = zf + (z_q - zf).detach()  # straight-through
        if self.training:
            self.update_usage(indices)
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
        """Mark codes ``indices`` (B, L) as used at their positions (done by training forwards;
        call it yourself to collect statistics in eval mode)."""
        if indices.dim() != 2 or indices.shape[1] != self.seq_len:
            raise ValueError(f"indices must have shape (B, L={self.seq_len}), got {tuple(indices.shape)}")
        usage = self._usage_on(indices.device)
        flat = indices.long() + torch.arange(self.seq_len, device=indices.device) * self.k_max
        usage.view(-1)[flat.reshape(-1)] = True

    def _usage_on(self, device: torch.device) -> torch.Tensor:
        if self._usage is None:
            self._usage = torch.zeros(self.seq_len, self.k_max, dtype=torch.bool, device=device)
        elif self._usage.device != device:
            self._usage = self._usage.to(device)
        return self._usage

    @property
    def usage(self) -> torch.Tensor:
        """bool [L, K_max]: codes seen at each position since :meth:`reset_usage` (this rank)."""
        return self._usage_on(self._usage.device if self._usage is not None else self.embedding.weight.device)

    def reset_usage(self) -> None:
        """Forget the usage statistics."""
        self._usage = None

    @torch.no_grad()
    def _global_usage(self) -> torch.Tensor:
        """Usage OR-ed over ranks when torch.distributed is initialised (a collective: call on every rank)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            u = self.usage.to(torch.uint8)
            dist.all_reduce(u, op=dist.ReduceOp.MAX)
            return u.bool()
        return self.usage

    def used_codes(self, position: int, sync: bool = True) -> torch.Tensor:
        """bool [K(position)]: which of position ``position``'s codes were picked there since
        :meth:`reset_usage`. ``sync=True`` combines all ranks (a collective under torch.distributed:
        every rank must call it); ``sync=False`` gives this rank's statistics without communication."""
        if not 0 <= int(position) < self.seq_len:
            raise ValueError(f"position must be in [0, {self.seq_len}), got {position}")
        usage = self._global_usage() if sync else self.usage
        return usage[int(position), : self.schedule.size_at(int(position))]

    def codes_used(self) -> torch.Tensor:
        """int64 [L]: distinct codes used at each position since :meth:`reset_usage` (all ranks)."""
        return self._global_usage().sum(1)

    def position_usage(self) -> torch.Tensor:
        """float [L]: fraction of position i's K(i) codes used since :meth:`reset_usage` (all ranks)."""
        used = self.codes_used()
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
        for kind in ("constant", "linear", "cosine", "power"):
            try:
                cand = CodebookSchedule(kind, k_min=s[0], k_max=s[-1], seq_len=len(s))
            except (TypeError, ValueError):
                continue
            if cand == explicit:
                return repr(cand)
    head = ", ".join(map(str, s[:4]))
    tail = ", ".join(map(str, s[-2:]))
    return f"explicit sizes (L={len(s)}) [{head}, ..., {tail}], mean {sum(s) / len(s):.1f}"


# ---------------------------------------------------------------------- registry
def _factory(schedule_name: str, default_power: float | None = None):
    def make(dim: int = 8, k_max: int = 16384, seq_len: int = 256, k_min: int = 2, power: float | None = default_power, **kwargs: Any) -> VariableCodebookQuantizer:
        sched_kw: dict[str, Any] = dict(k_max=k_max, seq_len=seq_len)
        if schedule_name != "constant":
            sched_kw["k_min"] = k_min
        if schedule_name.startswith("vcq_power") and power is not None:
            sched_kw["power"] = power
        elif power is not None and schedule_name != "vcq_power":
            raise ValueError(f"quantizer {schedule_name!r} takes no power argument, got power={power}")
        return VariableCodebookQuantizer(CodebookSchedule.from_name(schedule_name, **sched_kw), dim, **kwargs)

    make.__name__ = f"create_{schedule_name.replace('.', '_')}"
    make.__doc__ = f"VariableCodebookQuantizer with the {schedule_name!r} schedule (dim, k_max=16384, seq_len=256, k_min=2, ...)."
    return make


register_quantizer("vcq_cosine", _factory("vcq_cosine"))
register_quantizer("vcq_linear", _factory("vcq_linear"))
register_quantizer("vcq_power", _factory("vcq_power", 2.5))
register_quantizer("vcq_power2.5", _factory("vcq_power2.5"))
register_quantizer("constant", _factory("constant"))
