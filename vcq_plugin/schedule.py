"""Per-position codebook sizes K(i): the single source of truth for VCQ.

Paper Eq. 3, positions 0-based, ``t_i = i / (L - 1)``::

    K(i) = round(K_min + (K_max - K_min) * f(t_i))
    linear f(t) = t;  cosine f(t) = 1 - cos(pi t / 2);  power f(t) = t ** p;  constant K(i) = K_max

Everything else in the package (quantizer, sampler, analysis, host patches) asks a
:class:`CodebookSchedule` for sizes instead of recomputing them.
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from ._errors import check_int, unknown_name_error

KINDS = ("constant", "linear", "cosine", "power", "explicit")
# Largest codebook size: Eq. 3 and the statistics (mean K, log2 K, capacity) are computed in float64,
# which holds every integer exactly only up to 2**53; beyond it K(i) would be rounded or overflow int64.
MAX_CODEBOOK_SIZE = 2**53
SCHEDULE_NAMES = ("vcq_linear", "vcq_cosine", "vcq_power", "constant")
_POWER_NAME = re.compile(r"^vcq_power(?P<p>\d+(?:\.\d+)?)$")


def _profile(kind: str, t: np.ndarray, power: float) -> np.ndarray:
    if kind == "linear":
        return t
    if kind == "cosine":
        return 1.0 - np.cos(np.pi * t / 2.0)
    if kind == "power":
        return t**power
    raise AssertionError(kind)


class CodebookSchedule:
    """Codebook size K(i) for each of ``seq_len`` positions.

    Args:
        kind: ``constant | linear | cosine | power``.
        k_min: size at position 0 (ignored by ``constant``, which uses ``k_max`` everywhere).
        k_max: size at the last position; also the shared codebook's number of entries.
        seq_len: number of token positions L.
        power: exponent p of the ``power`` schedule.

    Attributes ``k_min`` / ``k_max`` are the smallest / largest size the schedule actually has.
    """

    def __init__(
        self,
        kind: str = "cosine",
        k_min: int = 2,
        k_max: int = 16384,
        seq_len: int = 256,
        power: float = 2.5,
    ) -> None:
        if kind not in KINDS or kind == "explicit":
            raise unknown_name_error("schedule kind", kind, [k for k in KINDS if k != "explicit"])
        k_min = check_int("k_min", k_min, minimum=1)
        k_max = check_int("k_max", k_max, minimum=1)
        seq_len = check_int("seq_len", seq_len, minimum=1)
        if k_min > k_max:
            raise ValueError(f"k_min must be <= k_max, got k_min={k_min} > k_max={k_max}")
        if k_max > MAX_CODEBOOK_SIZE:
            raise ValueError(f"k_max must be <= 2**53 = {MAX_CODEBOOK_SIZE} (K(i) is computed in float64, exact only "
                             f"up to 2**53), got {k_max}")
        if isinstance(power, bool) or not isinstance(power, (int, float)):
            raise TypeError(f"power must be a number, got {type(power).__name__} {power!r}")
        if not math.isfinite(power) or power <= 0:
            raise ValueError(f"power must be a finite number > 0, got {power}")
        self.kind = kind
        self.power = float(power)
        self._k_min_arg = k_min
        if kind == "constant":
            sizes = np.full(seq_len, k_max, dtype=np.int64)
        else:
            t = np.arange(seq_len, dtype=np.float64) / max(seq_len - 1, 1)
            raw = k_min + (k_max - k_min) * _profile(kind, t, self.power)
            sizes = np.floor(raw + 0.5).astype(np.int64)  # round half up, as the paper's tables
        self._set_sizes(sizes)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_sizes(cls, sizes: Sequence[int] | np.ndarray | torch.Tensor) -> "CodebookSchedule":
        """An explicit, non-decreasing schedule of integer sizes in ``[1, 2**53]``."""
        arr = sizes.detach().cpu().numpy() if isinstance(sizes, torch.Tensor) else np.asarray(sizes)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"sizes must be a non-empty 1-D sequence, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            integral = np.all(np.isfinite(arr) & (arr == np.round(arr)))
        elif arr.dtype == object:
            integral = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr)
        else:
            integral = arr.dtype.kind in "iu"
        if not integral:
            raise TypeError(f"sizes must be integers, got dtype {arr.dtype}: {_preview(arr)}")
        # the range is checked on exact Python ints: a uint64 or object array would wrap when cast to int64
        values = [int(v) for v in arr] if arr.dtype == object else None
        lo, hi = (min(values), max(values)) if values is not None else (int(arr.min()), int(arr.max()))
        if lo < 1:
            raise ValueError(f"sizes must all be >= 1, got minimum {lo}")
        if hi > MAX_CODEBOOK_SIZE:
            j = next(j for j, v in enumerate(arr.tolist()) if int(v) == hi)
            raise ValueError(f"sizes must all be <= 2**53 = {MAX_CODEBOOK_SIZE} (exact in float64 and int64), "
                             f"got {hi} at position {j}")
        arr = arr.astype(np.int64)
        drops = np.nonzero(np.diff(arr) < 0)[0]
        if drops.size:
            j = int(drops[0])
            raise ValueError(
                "sizes must be non-decreasing along the sequence, got "
                f"sizes[{j}]={int(arr[j])} > sizes[{j + 1}]={int(arr[j + 1])}"
            )
        self = cls.__new__(cls)
        self.kind = "explicit"
        self.power = 1.0
        self._k_min_arg = int(arr[0])
        self._set_sizes(arr)
        return self

    @classmethod
    def from_spec(
        cls,
        spec: "CodebookSchedule | str | Mapping[str, Any] | Sequence[int] | np.ndarray | torch.Tensor",
        *,
        k_min: int | None = None,
        k_max: int | None = None,
        seq_len: int | None = None,
        power: float | None = None,
    ) -> "CodebookSchedule":
        """The one builder of a schedule from a description; every other entry point calls it.

        ``spec`` is one of:

        - a :class:`CodebookSchedule` (returned as is; a keyword that disagrees with it is an error);
        - a registry name: ``vcq_cosine | vcq_linear | vcq_power | vcq_power<p> | constant``, with
          ``k_max`` / ``seq_len`` (defaults 16384 / 256), ``k_min`` (default 2) and ``power``
          (``vcq_power`` only, default 2.5);
        - a dict as in a YAML config or a checkpoint: ``to_dict()``'s ``{"kind": ...}`` layout, or
          ``{"name": "vcq_cosine", "k_min": 2, ...}``; keywords fill keys the dict lacks;
        - a non-decreasing sequence of integer sizes (list, numpy array or tensor).

        Options that cannot apply are refused, never ignored: a constant schedule has no ``k_min``
        (it uses ``k_max`` everywhere) and only the power schedule has a ``power``.
        """
        given = {k: v for k, v in (("k_min", k_min), ("k_max", k_max), ("seq_len", seq_len), ("power", power))
                 if v is not None}
        if isinstance(spec, CodebookSchedule):
            return _check_agrees(spec, given)
        if isinstance(spec, str):
            return cls._from_name(spec, given)
        if isinstance(spec, Mapping):
            d = dict(spec)
            if "kind" in d and "name" in d:
                raise ValueError(f"a schedule dict has either 'kind' or 'name', not both: {d!r}")
            if d.get("kind") == "explicit":
                if "sizes" not in d:
                    raise ValueError(f"an explicit schedule dict needs 'sizes', got {d!r}")
                return _check_agrees(cls.from_sizes(d["sizes"]), given)
            if "kind" in d:
                kind = d.pop("kind")
                if kind not in KINDS or kind == "explicit":
                    raise unknown_name_error("schedule kind", kind, [k for k in KINDS if k != "explicit"])
                name = "constant" if kind == "constant" else f"vcq_{kind}"
                if kind == "constant":  # to_dict() of version 0.1.0 also wrote the unused k_min
                    d.pop("k_min", None)
            elif "name" in d:
                name = d.pop("name")
            else:
                raise ValueError(f"a schedule dict needs a 'kind' (as to_dict() writes) or a 'name' key, got {d!r}")
            unknown = sorted(set(d) - {"k_min", "k_max", "seq_len", "power"})
            if unknown:
                raise ValueError(f"unknown schedule key(s) {unknown}; allowed: k_min, k_max, seq_len, power")
            for key, value in given.items():
                if key in d and d[key] != value:
                    raise ValueError(f"schedule {key}={d[key]!r} in the description but {key}={value!r} was also given")
            return cls._from_name(name, {**given, **{k: v for k, v in d.items() if v is not None}})
        if isinstance(spec, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(spec, (bytes, bytearray)):
            return _check_agrees(cls.from_sizes(spec), given)
        raise TypeError(
            "a schedule is described by a CodebookSchedule, a registry name such as 'vcq_cosine', a dict or a "
            f"list of sizes, got {type(spec).__name__}"
        )

    @classmethod
    def _from_name(cls, name: str, kw: dict[str, Any]) -> "CodebookSchedule":
        kw = {"k_max": 16384, "seq_len": 256, **kw}
        if name == "constant":
            if "k_min" in kw and kw["k_min"] != kw["k_max"]:
                raise ValueError(f"a constant schedule has no k_min (it uses K = k_max = {kw['k_max']} everywhere), "
                                 f"got k_min={kw['k_min']}; drop k_min or pick a vcq_* schedule")
            if "power" in kw:
                raise ValueError(f"power applies only to vcq_power, got power={kw['power']} with 'constant'")
            kw.pop("k_min", None)
            return cls("constant", **kw)
        m = _POWER_NAME.match(name)
        if m:
            if "power" in kw and float(kw["power"]) != float(m["p"]):
                raise ValueError(f"{name!r} fixes power={m['p']}, but power={kw['power']} was also given")
            return cls("power", **{**kw, "power": float(m["p"])})
        if name not in SCHEDULE_NAMES:
            raise unknown_name_error("schedule name", name, list(SCHEDULE_NAMES) + ["vcq_power2.5"])
        if name != "vcq_power" and "power" in kw:
            raise ValueError(f"power applies only to vcq_power, got power={kw['power']} with {name!r}")
        return cls(name[len("vcq_"):], **kw)

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "CodebookSchedule":
        """Deprecated alias of :meth:`from_spec` (``from_spec(name, **kwargs)``)."""
        _deprecated("CodebookSchedule.from_name(name, **kw)", "CodebookSchedule.from_spec(name, **kw)")
        return cls.from_spec(name, **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CodebookSchedule":
        """Deprecated alias of :meth:`from_spec` (``from_spec(d)``, the inverse of :meth:`to_dict`)."""
        _deprecated("CodebookSchedule.from_dict(d)", "CodebookSchedule.from_spec(d)")
        return cls.from_spec(d)

    # ------------------------------------------------------------------ state
    def _set_sizes(self, sizes: np.ndarray) -> None:
        self._sizes_np = sizes.astype(np.int64)
        self._sizes_np.setflags(write=False)
        self.sizes = torch.from_numpy(self._sizes_np.copy())  # int64 [seq_len]
        self.seq_len = int(sizes.shape[0])
        self.k_min = int(sizes.min())
        self.k_max = int(sizes.max())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML configs and checkpoints (read back by :meth:`from_spec`)."""
        if self.kind == "explicit":
            return {"kind": "explicit", "sizes": [int(k) for k in self._sizes_np]}
        d: dict[str, Any] = {"kind": self.kind, "k_min": self._k_min_arg, "k_max": self.k_max, "seq_len": self.seq_len}
        if self.kind == "constant":
            del d["k_min"]  # a constant schedule has no k_min
        if self.kind == "power":
            d["power"] = self.power
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodebookSchedule) and np.array_equal(self._sizes_np, other._sizes_np)

    def __hash__(self) -> int:
        return hash(self._sizes_np.tobytes())

    def __len__(self) -> int:
        return self.seq_len

    def __repr__(self) -> str:
        extra = f", power={self.power:g}" if self.kind == "power" else ""
        return (
            f"CodebookSchedule(kind={self.kind!r}, k_min={self.k_min}, k_max={self.k_max}, "
            f"seq_len={self.seq_len}{extra}, mean_size={self.mean_size:.1f})"
        )

    # ------------------------------------------------------------------ derived quantities
    @property
    def is_constant(self) -> bool:
        return self.k_min == self.k_max

    @property
    def mean_size(self) -> float:
        """Mean codebook size over positions (paper Table 2's mean K)."""
        return float(self._sizes_np.mean())

    def size_at(self, position: int) -> int:
        """K(position) for a 0-based position."""
        if not 0 <= int(position) < self.seq_len:
            raise ValueError(f"position must be in [0, {self.seq_len}), got {position}")
        return int(self._sizes_np[int(position)])

    def log2_sizes(self) -> torch.Tensor:
        """log2 K(i), float64 [seq_len] (bits each position can carry)."""
        return torch.from_numpy(np.log2(self._sizes_np.astype(np.float64)))

    def bits_per_pixel(self, image_size: int | tuple[int, int] = 256) -> float:
        """sum_i log2 K(i) / (H * W) for an H x W image (paper Table 2's BPP)."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h < 1 or w < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        return float(np.log2(self._sizes_np.astype(np.float64)).sum() / (h * w))

    def capacity_bits(self) -> torch.Tensor:
        """Cumulative capacity C(i) = sum_{j<=i} log2 K(j) in bits, float64 [seq_len] (Eq. 2)."""
        return torch.cumsum(self.log2_sizes(), 0)

    def transition_position(self, num_samples: int | float) -> int | None:
        """i*: the smallest 1-based count of positions whose capacity reaches log2 N (Eq. 2).

        ``None`` when the whole sequence never reaches log2 N bits.
        """
        budget = _log2_samples(num_samples)
        reached = np.nonzero(self.capacity_bits().numpy() >= budget - 1e-12)[0]
        return int(reached[0]) + 1 if reached.size else None

    def remaining_budget(self, num_samples: int | float) -> torch.Tensor:
        """R(i) = log2 N - C(i-1) in bits, float64 [seq_len], with C(-1) = 0 (Fig. 2(a)).

        Not clipped: a negative value says how far past the budget the capacity already is.
        """
        c = self.capacity_bits()
        prev = torch.cat([torch.zeros(1, dtype=torch.float64), c[:-1]])
        return _log2_samples(num_samples) - prev

    def segments(self) -> list[tuple[int, int, int]]:
        """Runs of equal size: ``[(start, stop, K), ...]`` with positions start..stop-1 sharing K."""
        s = self._sizes_np
        cuts = np.concatenate([[0], np.nonzero(np.diff(s))[0] + 1, [self.seq_len]])
        return [(int(a), int(b), int(s[a])) for a, b in zip(cuts[:-1], cuts[1:])]


@dataclasses.dataclass
class ScheduleConfig:
    """A schedule as a typed config (OmegaConf structured configs, YAML): the fields of
    :meth:`CodebookSchedule.from_spec`'s registry-name form. ``k_min`` / ``power`` left ``None`` take
    the builder's defaults (2 / 2.5) where they apply."""

    name: str = "vcq_cosine"
    k_max: int = 16384
    seq_len: int = 256
    k_min: Optional[int] = None
    power: Optional[float] = None

    def build(self) -> CodebookSchedule:
        return CodebookSchedule.from_spec(self.name, k_min=self.k_min, k_max=self.k_max, seq_len=self.seq_len,
                                          power=self.power)


def _check_agrees(schedule: CodebookSchedule, given: dict[str, Any]) -> CodebookSchedule:
    """``schedule`` itself, or a ValueError when an explicitly given k_min/k_max/seq_len/power differs."""
    have = {"k_min": schedule.k_min, "k_max": schedule.k_max, "seq_len": schedule.seq_len}
    if schedule.kind == "power":
        have["power"] = schedule.power
    bad = {k: (have.get(k), v) for k, v in given.items() if have.get(k) != v}
    if bad:
        desc = ", ".join(f"{k}: schedule has {h!r}, given {v!r}" for k, (h, v) in bad.items())
        raise ValueError(f"the given schedule {schedule!r} disagrees with the arguments ({desc})")
    return schedule


def _log2_samples(num_samples: int | float) -> float:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, float, np.integer, np.floating)):
        raise TypeError(f"num_samples must be a number, got {type(num_samples).__name__}")
    if not num_samples >= 1 or not math.isfinite(float(num_samples)):
        raise ValueError(f"num_samples must be a finite number >= 1, got {num_samples}")
    return math.log2(float(num_samples))


def uniform_transition_position(num_samples: int | float, k: int) -> int:
    """Paper Eq. 1 for a constant codebook of size ``k``: i* = ceil(log2 N / log2 K)."""
    k = check_int("k", k, minimum=2)
    bits = _log2_samples(num_samples) / math.log2(k)
    return max(1, math.ceil(bits - 1e-12))


def coerce_schedule(schedule: "CodebookSchedule | str | Mapping[str, Any]", **kwargs: Any) -> CodebookSchedule:
    """Deprecated alias of :meth:`CodebookSchedule.from_spec` (``from_spec(schedule, **kwargs)``)."""
    _deprecated("coerce_schedule(spec, **kw)", "CodebookSchedule.from_spec(spec, **kw)")
    return CodebookSchedule.from_spec(schedule, **kwargs)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new} (the one schedule builder)", DeprecationWarning, stacklevel=3)


def _preview(arr: np.ndarray) -> str:
    items = [repr(v) for v in arr[:4].tolist()]
    return "[" + ", ".join(items) + (", ...]" if arr.size > 4 else "]")
