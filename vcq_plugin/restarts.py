"""Per-position dead-code restarts for a shared VCQ codebook learned by gradient.

A code k of the shared codebook is allowed at every position i with K(i) > k; its *home* is the
first of them, i.e. the run of positions with the smallest K(i) > k (a run of equal sizes is a
*group*: a constant schedule is one group of L positions, a VCQ schedule mostly groups of one,
with ties where K grows slowly, e.g. K = 2 at the first two positions of a power-2.5 schedule of
16). Every ``every`` training steps, positions taken in order (smallest K first)::

    1. code k is restarted  iff  no position of its home group picked it since the last restart,
       onto an encoder output taken at a random position of that group;
    2. a position that picked a single code although K(i) >= 2 (it carries 0 bits) and got no
       code in 1. takes one more code: one it did not use and no EARLIER position used (the one
       used at the fewest later positions, then the largest), onto one of its own outputs.

New vectors are l2-normalised when the quantizer searches by cosine. No rule ever takes a code
from an earlier position (a code's home comes first; 2. skips codes earlier positions use), so
two positions never trade a code back and forth, and a constant schedule (one group) gets the
older rule: codes no position used, moved onto an output at a random position.

Why. The older rule (the recipes' former ``CodebookRestarts``, now replaced by this one) restarted only
codes no position used; the few codes of the first positions (K(0) = 2) are also allowed at every
later position, stay in use there, and so were never restarted: in seed 1 of the CPU demo every
image took the same code at the first two positions (0 bits where the global content should go).
Limits (measured, see the study report): with K(0) = 2 and K(1) = 3 the first two positions share
three codes; when position 0 keeps codes 0 and 1 and position 1's outputs sit by its own code 2,
no restart can give position 1 a second code without taking one from position 0.

Distributed (DDP): usage is combined over ranks (one ``all_reduce`` of the [L, K_max] usage, MAX),
the captured encoder outputs are gathered from every rank, rank 0 draws the replacements with its
own generator (seeded from ``seed`` and the step, so a resumed run draws the same) and broadcasts
the restarted code ids and vectors: every rank ends with an identical codebook, as in
vector-quantize-pytorch's ``expire_codes_`` / ``sample_vectors_distributed``. The restart is a
collective: every rank must call it at the same step (training loops do).

Training mode only: nothing is captured or restarted while the quantizer is in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._errors import check_int

__all__ = ["CodebookRestarts", "RestartResult", "home_groups", "codes_to_restart", "restart_plan"]


@dataclass(frozen=True)
class RestartResult:
    """What one restart did: ``codes`` (int64 [n]) moved onto encoder outputs taken at
    ``positions`` (int64 [n], 0-based); ``step`` the optimizer step it followed (or -1)."""

    codes: torch.Tensor
    positions: torch.Tensor
    step: int = -1

    def __len__(self) -> int:
        return int(self.codes.numel())

    def per_position(self, seq_len: int) -> list[int]:
        """Number of codes restarted at each of ``seq_len`` positions."""
        return torch.bincount(self.positions.cpu(), minlength=seq_len).tolist()


def home_groups(sizes: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Runs of equal K(i) with the codes they are home to: ``[(start, stop, k_lo, k_hi), ...]``.

    Positions ``start..stop-1`` share size ``k_hi``; codes ``k_lo..k_hi-1`` first appear there
    (``k_lo`` is the previous run's size, 0 for the first run). ``sizes`` must be non-decreasing.
    """
    s = [int(k) for k in sizes.tolist()]
    if any(b < a for a, b in zip(s, s[1:])):
        raise ValueError(f"codebook sizes must be non-decreasing along the sequence, got {s}")
    groups, start, prev = [], 0, 0
    for i in range(1, len(s) + 1):
        if i == len(s) or s[i] != s[start]:
            groups.append((start, i, prev, s[start]))
            prev, start = s[start], i
    return groups


def codes_to_restart(usage: torch.Tensor, sizes: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """The rule of the module docstring on a usage table.

    Args:
        usage: bool [L, K_max], ``usage[i, k]``: code k was picked at position i (entries k >= K(i)
            are ignored).
        sizes: int [L], K(i), non-decreasing.

    Returns ``[(start, stop, codes), ...]``: per home group, the int64 codes (ascending) none of its
    positions used; groups with nothing to restart are left out.
    """
    if usage.dim() != 2 or usage.shape[0] != sizes.numel():
        raise ValueError(f"usage must be bool [L={sizes.numel()}, K_max], got shape {tuple(usage.shape)}")
    out = []
    for start, stop, lo, hi in home_groups(sizes):
        used = usage[start:stop, lo:hi].any(0)
        dead = (~used).nonzero()[:, 0] + lo
        if dead.numel():
            out.append((start, stop, dead.long()))
    return out


def restart_plan(usage: torch.Tensor, sizes: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """Both rules of the module docstring: ``[(start, stop, codes), ...]``, each entry's codes to be
    moved onto outputs taken at positions ``start..stop-1`` (rule 1 per group, then rule 2 per
    starved position, earliest first). No code appears twice."""
    plan = codes_to_restart(usage, sizes)
    taken = set(int(k) for *_, c in plan for k in c.tolist())
    served = set()
    for start, stop, _ in plan:
        served.update(range(start, stop))
    sizes_l = [int(k) for k in sizes.tolist()]
    for i, k_i in enumerate(sizes_l):
        row = usage[i, :k_i]
        if k_i < 2 or int(row.sum()) > 1 or i in served:
            continue
        earlier = usage[:i, :k_i].any(0) if i else torch.zeros(k_i, dtype=torch.bool)
        free = [k for k in (~row & ~earlier).nonzero()[:, 0].tolist() if k not in taken]
        if not free:
            continue
        later_use = usage[i + 1:, :k_i].sum(0) if i + 1 < len(sizes_l) else torch.zeros(k_i, dtype=torch.long)
        code = min(free, key=lambda k: (int(later_use[k]), -k))
        taken.add(code)
        plan.append((i, i + 1, torch.tensor([code], dtype=torch.long)))
    return plan


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CodebookRestarts:
    """Every ``every`` steps, restart the codes their home positions stopped using (module docstring).

    Args:
        vq: a quantizer with ``schedule`` (``sizes``, ``seq_len``, ``k_max``), ``embedding``
            (``nn.Embedding(K_max, D)``), ``use_l2_norm``, ``used_codes(position, sync)`` and
            ``reset_usage()`` -- :class:`~vcq_plugin.quantizer.VariableCodebookQuantizer`.
        every: restart interval in optimizer steps (>= 1).
        seed: seeds rank 0's draws (with the step number: a pure function of (seed, step)).

    Use as the training loop's ``after_step(step)`` callback: ``__call__(step)`` restarts after
    steps ``every - 1, 2 * every - 1, ...`` and returns the number of codes restarted. The encoder
    outputs come from the quantizer's latest training forward (a forward pre-hook). Checkpoint
    :meth:`state_dict` with the model: a run resumed at any step (a multiple of ``every`` or not)
    restarts exactly the codes an uninterrupted run does.
    """

    def __init__(self, vq: nn.Module, every: int, *, seed: int = 0) -> None:
        self.every = check_int("codebook restart interval (every)", every, minimum=1)
        for attr in ("schedule", "embedding", "used_codes", "reset_usage"):
            if not hasattr(vq, attr):
                raise TypeError(f"{type(vq).__name__} has no {attr!r}: CodebookRestarts needs a VCQ quantizer "
                                "(vcq_plugin.VariableCodebookQuantizer)")
        self.vq, self.seed = vq, int(seed)
        self.sizes = vq.schedule.sizes.detach().cpu().long()
        self.last: RestartResult | None = None
        self._z: torch.Tensor | None = None
        self._handle = vq.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            self._z = args[0].detach()

    def __call__(self, step: int) -> int:
        """Call after optimizer step ``step`` (0-based); restarts on every ``every``-th step."""
        if (step + 1) % self.every or not self.vq.training:
            return 0
        return len(self.restart(step))

    # ------------------------------------------------------------------ the restart
    def _usage(self) -> torch.Tensor:
        """bool [L, K_max] on the codebook's device, OR-ed over ranks.

        One all_reduce of the whole table (rather than ``used_codes(i, sync=True)`` per position:
        L collectives of one row each)."""
        vq, length = self.vq, self.sizes.numel()
        device = vq.embedding.weight.device
        table = torch.zeros(length, int(self.sizes[-1]), dtype=torch.uint8, device=device)
        for i in range(length):
            used = vq.used_codes(i, sync=False)
            table[i, : used.numel()] = used.to(device=device, dtype=torch.uint8)
        if _distributed():
            dist.all_reduce(table, op=dist.ReduceOp.MAX)
        return table.bool()

    def _gathered_outputs(self) -> torch.Tensor:
        """Encoder outputs (B_total, L, D) of the latest training forward, from every rank."""
        vq = self.vq
        device, dim = vq.embedding.weight.device, vq.embedding.weight.shape[1]
        z = self._z
        if z is None:
            z = torch.zeros(0, self.sizes.numel(), dim, device=device)
        z = z.to(device=device, dtype=torch.float32)
        if not _distributed():
            return z
        n = torch.tensor([z.shape[0]], device=device)
        counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, n)
        most = int(max(int(c) for c in counts))
        padded = torch.zeros(most, *z.shape[1:], device=device)
        padded[: z.shape[0]] = z
        parts = [torch.zeros_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(c)] for p, c in zip(parts, counts)])

    @torch.no_grad()
    def restart(self, step: int = -1) -> RestartResult:
        """Restart now (a collective under torch.distributed) and reset the usage statistics."""
        vq = self.vq
        weight = vq.embedding.weight
        usage = self._usage()
        z = self._gathered_outputs()
        rank0 = not _distributed() or dist.get_rank() == 0
        codes = torch.zeros(0, dtype=torch.long)
        positions = torch.zeros(0, dtype=torch.long)
        vectors = torch.zeros(0, weight.shape[1])
        if rank0 and z.shape[0] > 0:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step) + 1)
            picks_c, picks_p, picks_v = [], [], []
            for start, stop, dead in restart_plan(usage.cpu(), self.sizes):
                # distinct (row, position) samples from the group while there are enough of them
                pool = z.shape[0] * (stop - start)
                flat = torch.randperm(pool, generator=gen)[: dead.numel()] if dead.numel() <= pool else \
                    torch.randint(0, pool, (dead.numel(),), generator=gen)
                rows, pos = flat // (stop - start), start + flat % (stop - start)
                picks_c.append(dead)
                picks_p.append(pos)
                picks_v.append(z[rows.to(z.device), pos.to(z.device)].cpu())
            if picks_c:
                codes, positions, vectors = torch.cat(picks_c), torch.cat(picks_p), torch.cat(picks_v)
                if getattr(vq, "use_l2_norm", False):
                    vectors = F.normalize(vectors, dim=-1)
        if _distributed():
            codes, positions, vectors = self._broadcast(codes, positions, vectors, weight.device)
        if codes.numel():
            weight.data[codes.to(weight.device)] = vectors.to(device=weight.device, dtype=weight.dtype)
        vq.reset_usage()
        self.last = RestartResult(codes.cpu(), positions.cpu(), int(step))
        return self.last

    @staticmethod
    def _broadcast(codes: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor, device: torch.device):
        n = torch.tensor([codes.numel()], device=device)
        dist.broadcast(n, src=0)
        n = int(n)
        packed = torch.zeros(n, 2 + vectors.shape[1], device=device)
        if dist.get_rank() == 0 and n:
            packed[:, 0], packed[:, 1], packed[:, 2:] = codes.to(device), positions.to(device), vectors.to(device)
        dist.broadcast(packed, src=0)
        return packed[:, 0].long(), packed[:, 1].long(), packed[:, 2:]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, sync: bool = False) -> dict:
        """What a resumed run needs to restart the same codes as an uninterrupted one: the quantizer's
        usage record since the last restart (:meth:`VariableCodebookQuantizer.usage_state`, packed bits)
        and the settings it was made with. Nothing else matters: the draws are a pure function of
        (seed, step) and the encoder outputs come from the restart step's own forward.

        ``sync=True`` ORs the record over ranks (a collective, every rank calls it) so a checkpoint
        written by rank 0 carries every rank's usage; ``sync=False`` is this rank's record."""
        return {"every": self.every, "seed": self.seed, "usage": self.vq.usage_state(sync=sync)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (an empty dict = nothing recorded yet: usage starts empty). A
        state made with another ``every`` or ``seed`` is refused: the restarts would differ."""
        if not state:
            self.vq.reset_usage()
            return
        if not isinstance(state, dict) or "usage" not in state:
            raise ValueError(f"not a CodebookRestarts state (keys {sorted(state) if isinstance(state, dict) else state!r}); "
                             "expected {'every', 'seed', 'usage'}")
        for key in ("every", "seed"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"CodebookRestarts state was saved with {key}={state[key]}, this one has "
                                 f"{key}={getattr(self, key)}: a resumed run would restart other codes")
        self.vq.load_usage_state(state["usage"])

    def remove(self) -> None:
        """Detach the forward pre-hook."""
        self._handle.remove()
