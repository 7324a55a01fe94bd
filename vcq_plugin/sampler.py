"""CodebookSize-Aware classifier-free guidance and per-position vocabulary masks (DESIGN.md Eq. 4).

At position i the sampler mixes the conditional and unconditional logits with a scale that
follows the codebook size, then forbids every token >= K(i)::

    logits_i = uncond_i + scale_i * (cond_i - uncond_i)
    scale_i  = 1 + (w - 1) * s(t_i),   s(t) = (1 - cos(pi * t ** p)) / 2   (RAR's power cosine)
    aware:    t_i = (log2 K(i) - log2 K_min) / (log2 K_max - log2 K_min)   (falls back to i / L
              when the schedule is constant)
    cosine:   t_i = i / L  (RAR: step / image_seq_len);  linear: s(t) = t;  constant: s(t) = 1

``w = 0`` (or ``guidance="none"``) turns guidance off, as in RAR. :func:`guidance_scales` is the one
implementation of these lines; every sampling path (this sampler's loop, the LlamaGen and RAR hooks,
the transformers logits processor) goes through the sampler, hence through it. The paper's Table 7 sampling
settings are registered as presets (``vcq_bb``, ``vcq_lxl``, ``constant_16k``, ... and their
``*_nocfg`` rows); ``aware_cfg`` / ``cosine_cfg`` / ``linear_cfg`` / ``constant_cfg`` /
``no_cfg`` are the plain modes.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from ._errors import check_int, unknown_name_error
from .registry import register_sampler
from .schedule import CodebookSchedule

GUIDANCE_MODES = ("aware", "cosine", "linear", "constant", "none")
_NEG_INF = float("-inf")

StepOutput = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
ScheduleSpec = Union[CodebookSchedule, str, dict]


def guidance_scales(schedule: CodebookSchedule, scale: float, power: float = 1.0, mode: str = "aware") -> torch.Tensor:
    """CFG scale per position, float32 [L]: paper Eq. 4 (DESIGN.md) in RAR's convention.

    ``scale_i = 1 + (w - 1) * s(t_i)`` with w = ``scale`` and

    - ``aware``: ``s(t) = (1 - cos(pi * t ** p)) / 2``, ``t_i = (log2 K(i) - log2 K_min) /
      (log2 K_max - log2 K_min)`` (K_min / K_max: the schedule's smallest / largest size), so
      ``scale_i = 1`` where K(i) = K_min and ``w`` where K(i) = K_max; a constant schedule falls back
      to ``t_i = i / L``, i.e. standard CFG;
    - ``cosine``: the same s with RAR's ``t_i = i / L`` (``step / image_seq_len``);
    - ``linear``: ``s(t) = t``, ``t_i = i / L``; ``constant``: ``s = 1`` (scale w everywhere);
    - ``none``, or ``w = 0`` (RAR's "cfg=0"): no guidance, all ones.

    Computed position by position with RAR's float32 tensor ops (bytedance/1d-tokenizer
    ``modeling/rar.py`` ``generate``), so a constant schedule reproduces RAR's scales bit for bit.
    The one implementation of Eq. 4: the sampler, and through it the LlamaGen and RAR hooks and the
    transformers logits processor, use it.
    """
    if mode not in GUIDANCE_MODES:
        raise unknown_name_error("guidance", mode, GUIDANCE_MODES)
    L = schedule.seq_len
    if mode == "none" or scale == 0:
        return torch.ones(L, dtype=torch.float32)
    if mode == "aware" and not schedule.is_constant:
        lo, hi = math.log2(schedule.k_min), math.log2(schedule.k_max)
        t = [(math.log2(k) - lo) / (hi - lo) for k in schedule.sizes.tolist()]
    else:
        t = [i / L for i in range(L)]
    out = []
    for t_i in t:
        if mode in ("aware", "cosine"):
            s = (1 - torch.cos((t_i ** (torch.ones(1) * power)) * torch.pi)) * 1 / 2
        else:
            s = torch.ones(1) * (t_i if mode == "linear" else 1.0)
        out.append((scale - 1) * s + 1)
    return torch.cat(out)


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class AwareCFGSampler:
    """Guidance, masking and filtering for next-token sampling under a codebook schedule.

    Args:
        schedule: a :class:`CodebookSchedule` or its description for
            :meth:`CodebookSchedule.from_spec` (a name such as ``"vcq_cosine"``, a dict).
        guidance_scale: base CFG scale w (>= 0); 0 means no guidance (RAR's convention).
        guidance_power: p of the power-cosine shape (``aware`` and ``cosine``; ignored by
            ``linear`` / ``constant`` / ``none``).
        guidance: ``aware | cosine | linear | constant | none`` (:func:`guidance_scales`).
        temperature: > 0; logits are divided by it after masking.
        top_k: keep the k largest logits per row; 0 = off.
        top_p: nucleus filtering, in (0, 1]; 1 = off.
        check_finite: refuse logits with a NaN or +inf at a token the position allows (ValueError
            naming batch row, position and token). The check costs one reduction and, on a GPU, one
            host sync per call; ``False`` skips it (then a NaN or +inf there is masked like a
            forbidden token, or surfaces as a sampling error).

    ``process`` order: CFG mix -> -inf for tokens >= K(i) -> temperature -> top-k -> top-p.
    """

    def __init__(
        self,
        schedule: ScheduleSpec,
        guidance_scale: float = 0.0,
        guidance_power: float = 1.0,
        guidance: str = "aware",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        check_finite: bool = True,
    ) -> None:
        self.schedule = CodebookSchedule.from_spec(schedule)
        if guidance not in GUIDANCE_MODES:
            raise unknown_name_error("guidance", guidance, GUIDANCE_MODES)
        self.guidance = guidance
        self.guidance_scale = _check_float("guidance_scale", guidance_scale)
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (0 = no guidance), got {self.guidance_scale}")
        self.guidance_power = _check_float("guidance_power", guidance_power)
        if self.guidance_power <= 0:
            raise ValueError(f"guidance_power must be > 0, got {self.guidance_power}")
        self.temperature = _check_float("temperature", temperature)
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0, got {self.temperature}; for greedy decoding use top_k=1"
            )
        self.top_k = check_int("top_k", top_k, minimum=0)
        self.top_p = _check_float("top_p", top_p)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be True or False, got {check_finite!r}")
        self.check_finite = check_finite

        self.seq_len = self.schedule.seq_len
        self._sizes: list[int] = [int(k) for k in self.schedule.sizes.tolist()]
        self._scales_t = guidance_scales(self.schedule, self.guidance_scale, self.guidance_power, self.guidance)
        self._scales: list[float] = self._scales_t.tolist()
        self.uses_guidance = any(s != 1.0 for s in self._scales)
        self._cache: Dict[Any, torch.Tensor] = {}

    # ------------------------------------------------------------------ schedule of scales
    @property
    def guidance_scales(self) -> torch.Tensor:
        """CFG scale per position, float32 [seq_len]; all ones when guidance is off."""
        return self._scales_t.clone()

    def scale_at(self, position: int) -> float:
        return self._scales[self._check_position(position)]

    def needs_uncond(self, position: int) -> bool:
        """Whether position needs unconditional logits (False when its scale is exactly 1)."""
        return self._scales[self._check_position(position)] != 1.0

    def _check_position(self, position: object) -> int:
        position = check_int("position", position)
        if not 0 <= position < self.seq_len:
            raise ValueError(f"position must be in [0, {self.seq_len}), got {position}")
        return position

    # ------------------------------------------------------------------ masks
    def vocab_mask(self, vocab_size: int, device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
        """Bool [seq_len, vocab_size], True where token k < K(i) is allowed at position i."""
        vocab_size = check_int("vocab_size", vocab_size, minimum=1)
        self._check_vocab(vocab_size)
        sizes = self.schedule.sizes.to(device)
        return torch.arange(vocab_size, device=device)[None, :] < sizes[:, None]

    def _check_vocab(self, vocab_size: int) -> None:
        if vocab_size < self.schedule.k_max:
            raise ValueError(
                f"logits vocabulary size {vocab_size} is smaller than the schedule's K_max "
                f"{self.schedule.k_max}; the model head must cover the whole shared codebook"
            )

    def _cached(self, key: Tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = make()
        return t

    # ------------------------------------------------------------------ logits processing
    def process(
        self,
        position: Optional[int],
        cond_logits: torch.Tensor,
        uncond_logits: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """CFG mix, -inf for tokens >= K(i), temperature, top-k, top-p. Inputs are not modified.

        Shapes: ``(B, V)`` at one ``position``; or ``(B, n, V)`` for positions
        ``start .. start + n - 1`` with ``position=start`` (``None`` = 0), e.g. a whole
        teacher-forced sequence; one code path serves both (a step is the n = 1 case).
        ``V >= K_max`` (extra host entries beyond K_max are masked). ``uncond_logits`` is required
        where the scale is not 1 and ignored elsewhere. A NaN or +inf at an allowed token raises
        ValueError (see ``check_finite``); -inf is allowed (a model may rule tokens out), and a token
        that the mix turns into NaN (-inf in both passes) is masked.
        """
        if not isinstance(cond_logits, torch.Tensor) or not cond_logits.is_floating_point():
            raise TypeError(f"cond_logits must be a floating-point tensor, got {_describe(cond_logits)}")
        if uncond_logits is not None and (
            not isinstance(uncond_logits, torch.Tensor) or uncond_logits.shape != cond_logits.shape
        ):
            raise ValueError(
                f"uncond_logits must be a tensor shaped like cond_logits {tuple(cond_logits.shape)}, "
                f"got {_describe(uncond_logits)}"
            )
        self._check_vocab(cond_logits.shape[-1])
        if cond_logits.dim() == 2:
            if position is None:
                raise ValueError("position is required for (B, V) logits; use position=None only with (B, n, V)")
            step = self._check_position(position)
            uncond = None if uncond_logits is None else uncond_logits.unsqueeze(1)
            return self._process(step, cond_logits.unsqueeze(1), uncond).squeeze(1)
        if cond_logits.dim() == 3:
            return self._process(0 if position is None else position, cond_logits, uncond_logits)
        raise ValueError(
            f"cond_logits must be (B, V) at one position or (B, n, V) for a run of positions, "
            f"got shape {tuple(cond_logits.shape)}"
        )

    def _process(self, start: object, cond: torch.Tensor, uncond: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, n, V) logits of positions start .. start + n - 1 -> processed (B, n, V)."""
        start = check_int("position", start)
        n = cond.shape[1]
        if not (0 <= start and start + n <= self.seq_len):
            raise ValueError(
                f"(B, n, V) logits cover positions [{start}, {start + n}) which must lie in [0, {self.seq_len}); "
                f"got n={n}, position={start}"
            )
        dev, V = cond.device, cond.shape[-1]
        guided = [j for j, s in enumerate(self._scales[start : start + n]) if s != 1.0]
        if guided and uncond is None:
            i = start + guided[0]
            raise ValueError(f"uncond_logits are required at position {i}: guidance scale there is {self._scales[i]:g}")
        allowed = self._cached(("mask", dev, V), lambda: self.vocab_mask(V, dev))[start : start + n]
        if self.check_finite:
            _check_finite("cond_logits", cond, allowed, start, range(n))
            if guided:
                _check_finite("uncond_logits", uncond, allowed, start, guided)
        if guided:
            scales = self._cached(("scales", dev, cond.dtype), lambda: self._scales_t.to(dev, cond.dtype))
            out = torch.lerp(uncond, cond, scales[start : start + n, None])  # uncond + scale * (cond - uncond)
            out.nan_to_num_(nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF)
            if len(guided) < n:  # scale 1 means exactly the conditional logits
                plain = [j for j in range(n) if j not in set(guided)]
                out[:, plain] = cond[:, plain]
        else:
            out = cond.clone()
        if self.temperature != 1.0:
            out.div_(self.temperature)
        if n == 1:  # one position: its forbidden tokens are one slice (cheaper than the mask)
            out[:, 0, self._sizes[start]:] = _NEG_INF
        else:
            out.masked_fill_(~allowed, _NEG_INF)
        return self._filter(out)

    def _filter(self, out: torch.Tensor) -> torch.Tensor:
        """Top-k then top-p, in place (tokens beyond K(i) are already -inf)."""
        if 0 < self.top_k < out.shape[-1]:
            kth = torch.topk(out, self.top_k, dim=-1).values[..., -1:]
            out.masked_fill_(out < kth, _NEG_INF)
        if self.top_p < 1.0:
            sorted_logits, idx = torch.sort(out, dim=-1, descending=True)
            cum = sorted_logits.float().softmax(-1).cumsum(-1)
            remove = cum > self.top_p
            remove[..., 1:] = remove[..., :-1].clone()  # keep the token that crosses top_p
            remove[..., 0] = False
            out.masked_fill_(remove.scatter(-1, idx, remove), _NEG_INF)
        return out

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def sample_logits(logits: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One token per row from processed logits (..., V) by softmax + multinomial -> int64 (...)."""
        if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
            raise TypeError(f"logits must be a tensor (..., V), got {_describe(logits)}")
        flat = logits.reshape(-1, logits.shape[-1])
        if flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        probs = torch.softmax(flat, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])

    def sample(
        self,
        step_fn: Callable[[torch.Tensor, int, bool], StepOutput],
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> torch.Tensor:
        """Sample ``(batch_size, seq_len)`` int64 tokens, one position at a time.

        ``step_fn(tokens, position, need_uncond)`` gets the tokens so far (a ``(B, position)``
        int64 view; copy it to keep it) and returns the conditional logits ``(B, V)``, or the
        pair ``(cond, uncond)`` when ``need_uncond`` is True. ``need_uncond`` is False wherever
        the scale is 1 (always, when guidance is off), so that forward pass can be skipped; a pair
        returned anyway is accepted and its uncond part ignored. The model keeps its own KV cache.
        Each step's logits go through :meth:`process`, with the same checks.
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        tokens = torch.empty(batch_size, self.seq_len, dtype=torch.long, device=device)
        for i in range(self.seq_len):
            need = self._scales[i] != 1.0
            cond, uncond = _split_step_output(step_fn(tokens[:, :i], i, need), i)
            if need and uncond is None:
                raise ValueError(
                    f"step_fn returned only cond logits at position {i}, where guidance scale is "
                    f"{self._scales[i]:g}; return (cond, uncond) when need_uncond is True"
                )
            if not isinstance(cond, torch.Tensor) or cond.dim() != 2 or cond.shape[0] != batch_size:
                raise ValueError(
                    f"step_fn must return logits shaped (batch_size={batch_size}, V) at position {i}, "
                    f"got {_describe(cond)}"
                )
            if i == 0 and cond.device != tokens.device:
                tokens = tokens.to(cond.device)
            tokens[:, i] = self.sample_logits(self.process(i, cond, uncond if need else None), generator)
        return tokens

    # ------------------------------------------------------------------ config
    def to_dict(self) -> Dict[str, Any]:
        """Plain dict for configs (inverse: :meth:`from_dict`)."""
        return {
            "schedule": self.schedule.to_dict(),
            "guidance": self.guidance,
            "guidance_scale": self.guidance_scale,
            "guidance_power": self.guidance_power,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "check_finite": self.check_finite,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "AwareCFGSampler":
        if not isinstance(d, dict) or "schedule" not in d:
            raise ValueError(f"a sampler dict needs a 'schedule' key, got {d!r}")
        return cls(**d)

    def __repr__(self) -> str:
        return (
            f"AwareCFGSampler(guidance={self.guidance!r}, guidance_scale={self.guidance_scale:g}, "
            f"guidance_power={self.guidance_power:g}, temperature={self.temperature:g}, "
            f"top_k={self.top_k}, top_p={self.top_p:g}, schedule={self.schedule!r})"
        )


def _check_finite(name: str, logits: torch.Tensor, allowed: torch.Tensor, start: int, rows: Any) -> None:
    """ValueError naming batch row, position and token of the first NaN / +inf at an allowed token
    of ``logits`` (B, n, V), positions ``start + j`` for j in ``rows``. One reduction when clean."""
    top = logits.amax()  # NaN propagates; +inf is the largest value
    if bool(top < math.inf):
        return
    bad = (torch.isnan(logits) | torch.isposinf(logits)) & allowed
    if not isinstance(rows, range):
        keep = torch.zeros(bad.shape[1], dtype=torch.bool, device=bad.device)
        keep[list(rows)] = True
        bad &= keep[:, None]
    if bool(bad.any()):
        b, j, k = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{name} has {float(logits[b, j, k])} at batch row {b}, position {start + j}, token {k}, a token "
            f"that position allows (K({start + j})={int(allowed[j].sum())}); logits must be finite or -inf there. "
            "Pass check_finite=False to AwareCFGSampler to skip this check"
        )


def _split_step_output(out: StepOutput, position: int) -> Tuple[Any, Optional[torch.Tensor]]:
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"step_fn must return cond logits or (cond, uncond), got {len(out)} items at position {position}")
        return out[0], out[1]
    return out, None


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


# ---------------------------------------------------------------------- registry
def _mode_factory(mode: str) -> Callable[..., AwareCFGSampler]:
    def factory(schedule: Optional[ScheduleSpec] = None, **kwargs: Any) -> AwareCFGSampler:
        if schedule is None:
            raise ValueError(f"sampler {mode}_cfg needs schedule=... (a CodebookSchedule, name or dict)")
        if "guidance" in kwargs and kwargs["guidance"] != mode:
            raise ValueError(f"this sampler fixes guidance={mode!r}; got guidance={kwargs['guidance']!r}")
        kwargs["guidance"] = mode
        return AwareCFGSampler(schedule, **kwargs)

    factory.__name__ = f"{mode}_cfg"
    factory.__doc__ = f"AwareCFGSampler with guidance={mode!r}; other arguments as the class."
    return factory


for _mode, _name in (("aware", "aware_cfg"), ("cosine", "cosine_cfg"), ("linear", "linear_cfg"),
                     ("constant", "constant_cfg"), ("none", "no_cfg")):
    register_sampler(_name, _mode_factory(_mode))

_B_TOK = {"kind": "cosine", "k_min": 2, "k_max": 16384, "seq_len": 256}
_L_TOK = {"kind": "cosine", "k_min": 2, "k_max": 11264, "seq_len": 256}

# Paper Table 7: (name, schedule, guidance, scale w, power p, no-CFG temperature, gFID, gFID w/o CFG).
# Constant-codebook rows use RAR's standard cosine CFG; VCQ rows use the aware schedule.
_TABLE7 = (
    ("constant_16k", {"kind": "constant", "k_max": 16384, "seq_len": 256}, "cosine", 20, 1.5, 0.85, 6.43, 27.98),
    ("constant_8k", {"kind": "constant", "k_max": 8192, "seq_len": 256}, "cosine", 20, 2.0, 0.85, 5.87, 18.16),
    ("vcq_linear", {"kind": "linear", "k_min": 2, "k_max": 16384, "seq_len": 256}, "aware", 14, 1.75, 0.85, 5.32, 14.70),
    ("vcq_bb", _B_TOK, "aware", 10, 1.5, 0.85, 4.79, 14.80),
    ("vcq_power", {"kind": "power", "k_min": 2, "k_max": 16384, "seq_len": 256, "power": 2.5}, "aware", 10, 1.75, 0.85, 5.14, 16.19),
    ("vcq_bl", _B_TOK, "aware", 4, 0.75, 0.85, 2.75, 7.47),
    ("vcq_bxl", _B_TOK, "aware", 5, 0.75, 0.85, 2.38, 6.82),
    ("vcq_lb", _L_TOK, "aware", 4, 1.25, 0.90, 2.73, 5.14),
    ("vcq_ll", _L_TOK, "aware", 4, 1.25, 0.90, 1.90, 2.72),
    ("vcq_lxl", _L_TOK, "aware", 3, 1.0, 0.95, 1.71, 2.29),
)

PRESETS: Dict[str, Dict[str, Any]] = {}
"""Paper Table 7 sampling settings by name: the sampler's keyword arguments (with the paper's ``schedule``)."""
PAPER_GFID: Dict[str, float] = {}
"""The gFID the paper's Table 7 reports for each preset (metadata, kept apart from the arguments)."""
for _name, _sched, _mode, _w, _p, _t0, _gfid, _gfid0 in _TABLE7:
    PRESETS[_name] = dict(schedule=_sched, guidance=_mode, guidance_scale=float(_w), guidance_power=float(_p),
                          temperature=1.0)
    PRESETS[_name + "_nocfg"] = dict(schedule=_sched, guidance="none", guidance_scale=0.0, guidance_power=1.0,
                                     temperature=_t0)
    PAPER_GFID[_name], PAPER_GFID[_name + "_nocfg"] = _gfid, _gfid0
for _suffix in ("", "_nocfg"):
    PRESETS["vcq_cosine" + _suffix] = PRESETS["vcq_bb" + _suffix]
    PAPER_GFID["vcq_cosine" + _suffix] = PAPER_GFID["vcq_bb" + _suffix]


def preset_factory(name: str) -> Callable[..., AwareCFGSampler]:
    """Factory for ``PRESETS[name]``: ``schedule=`` (default: the paper's) and any overrides."""
    def factory(schedule: Optional[ScheduleSpec] = None, **overrides: Any) -> AwareCFGSampler:
        cfg = {**PRESETS[name], **overrides}
        if schedule is not None:
            cfg["schedule"] = schedule
        return AwareCFGSampler(**cfg)

    factory.__name__ = name
    factory.__doc__ = f"Paper Table 7 preset {name!r} (paper gFID {PAPER_GFID[name]}): {PRESETS[name]}"
    return factory


for _name in PRESETS:
    register_sampler(_name, preset_factory(_name))
