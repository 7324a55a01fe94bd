"""Host patch for FoundationVision/LlamaGen, pinned at commit ce98ec41.

Tokenizer (``tokenizer/tokenizer_image/vq_model.py``):

- ``ModelArgs`` becomes a subclass with five extra fields (all off by default)::

      quantizer: Optional[str] = None     # vcq_cosine | vcq_linear | vcq_power | vcq_power2.5 | constant
      vcq_k_min: Optional[int] = None     # default 2 (vcq_* schedules; a constant one has none)
      vcq_power: Optional[float] = None   # vcq_power only (default 2.5)
      vcq_seq_len: Optional[int] = None   # = (image_size // 2 ** (len(encoder_ch_mult) - 1)) ** 2
      vcq_image_size: Optional[int] = None  # alternative to vcq_seq_len

  so ``VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8, quantizer="vcq_cosine",
  vcq_image_size=256)`` works unchanged in LlamaGen's scripts.
- ``VQModel.__init__``: with ``config.quantizer`` set, ``model.quantize`` is a
  :class:`LlamaGenVCQ` over the raster order (position = h * W + w), returning LlamaGen's
  structure ``(z_q, (vq_loss, commit_loss, entropy_loss, usage), (perplexity, min_encodings,
  indices))`` and supporting ``get_codebook_entry(indices, shape, channel_first)`` (so
  ``decode_code`` works). Its state dict has upstream's keys.

Sampling (``autoregressive/models/generate.py``): ``generate(model, cond, max_new_tokens, ...,
sampler=AwareCFGSampler(...))`` (or a registry name, with ``vcq_schedule=`` or
``model.vcq_schedule``) applies the per-position scale and the K(i) mask in the prefill and in
every decoded token, with LlamaGen's CFG batch doubling; ``cfg_interval`` still ends guidance.
Without ``sampler`` the original functions run (bit for bit).

Models (``autoregressive/models/gpt.py``): ``GPT_models`` gains ``GPT-VCQ-XL``, the paper's XL
(32 layers, 20 heads, 1280 wide; LlamaGen's own GPT-XL has 36 layers), built like ``GPT_XL``.

Training (off by default; the paper leaves the loss unchanged): ``Transformer.forward`` is hooked so
that :func:`enable_masked_loss` can make one GPT's training loss ignore logits of tokens >= K(i);
a GPT without it runs upstream's forward.

Every hook is drift-checked against the upstream code it replaces and the code it relies on
(``decode_n_tokens`` for the sampling hooks, ``VectorQuantizer`` for the tokenizer's adapter, ...)
and undone by :func:`vcq_plugin.unregister`.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
from typing import Any, List, Optional

import torch
import torch.nn.functional as F

from ._base import Hook, module_available

HOST = "llamagen"
COMMIT = "ce98ec41803a74a90ce68c40ababa9eaeffeb4ec"
PIN = f"FoundationVision/LlamaGen @ {COMMIT}"
HOW_TO_FIX = (
    f"check out the pinned commit (git -C third_party/LlamaGen checkout {COMMIT}, or "
    "`git submodule update --init third_party/LlamaGen` in a vcq-plugin checkout)"
)
HOW_TO_GET = (
    "run `git submodule update --init third_party/LlamaGen` and put third_party/LlamaGen on sys.path "
    "(run from that directory, as its scripts expect); pip install 'vcq-plugin[llamagen]'"
)
VQ_MODULE = "tokenizer.tokenizer_image.vq_model"
GEN_MODULE = "autoregressive.models.generate"
GPT_MODULE = "autoregressive.models.gpt"

SHA256 = {  # source_sha256 of each checked symbol at COMMIT
    "ModelArgs": "ced9283bc183f2442d983f829b7482703de7fce28b5320333369dae1a3a16f90",
    "VQModel": "9da9667049ad2b9a4a25d9e95a84f2bbd43b49d73224034678a3a35469732da0",
    "VectorQuantizer": "ae7e54b8e7a38e5517b9a35e4c2638f86e74f22c6c0fb62bd3096b6a60e2cfe4",
    "compute_entropy_loss": "be05d1761341dcfb0e867c2ce613dc84eee68d641b8075c79f9c9fcc28b9672a",
    "generate": "d5963931c5c884269b30d4d620d774096c7f55e3f138ac99e25befaaa8156f92",
    "prefill": "61e3c87e7d4298d2c7cc81b2c91d7f99d6c0f2817bda9de2928cd4a75cc76f96",
    "decode_one_token": "d905d6b36fdd748e5866f64c09071aadc51ca59e749c2b9c4eb67b5e0af89861",
    "decode_n_tokens": "5e77d8453256ba71080d11276c0a95bbda14adb1d6e2bcc5cf78d51d5af5ca54",
    "gpt.ModelArgs": "46d77d51f27708be66517339f268b9c5cb8ee023f3753ed905dc9a93dbd9832f",
    "GPT_XL": "9c22a596e42e38cdaf89516e2df17e240945af79e3f8c6c37db7218c6f15f00a",
    "Transformer.forward": "bc6a72a906c708fa244a8eddb388cad0137f290549a5c289b4ea0986d74b080f",
}

# GPT_models entries the hook adds: the paper's XL (LlamaGen's GPT-XL has 36 layers, the paper's 32).
EXTRA_GPT_MODELS = {"GPT-VCQ-XL": dict(n_layer=32, n_head=20, dim=1280)}

UPSTREAM_NAMES = (None, "vq")
_SAMPLING_KEYS = ("temperature", "top_k", "top_p")


# ---------------------------------------------------------------------- tokenizer
def schedule_from_args(config: Any):
    """The :class:`CodebookSchedule` for a (patched) VQ ``ModelArgs`` with ``quantizer`` set: maps the
    ``vcq_*`` fields onto :meth:`CodebookSchedule.from_spec` (which owns the rules)."""
    from vcq_plugin.schedule import CodebookSchedule

    seq_len = getattr(config, "vcq_seq_len", None)
    if seq_len is None:
        image_size = getattr(config, "vcq_image_size", None)
        if image_size is None:
            raise ValueError(
                f"quantizer={config.quantizer!r} needs the number of token positions: set vcq_seq_len "
                "(= (H/16)*(W/16) for VQ-16) or vcq_image_size in the VQ ModelArgs"
            )
        down = 2 ** (len(config.encoder_ch_mult) - 1)
        if image_size % down:
            raise ValueError(f"vcq_image_size {image_size} is not divisible by the downsampling factor {down}")
        seq_len = (image_size // down) ** 2
    return CodebookSchedule.from_spec(str(config.quantizer), k_max=int(config.codebook_size), seq_len=int(seq_len),
                                      k_min=getattr(config, "vcq_k_min", None), power=getattr(config, "vcq_power", None))


def _make_adapter_class():
    from vcq_plugin.quantizer import VariableCodebookQuantizer

    class LlamaGenVCQ(VariableCodebookQuantizer):
        """VCQ with LlamaGen's ``VectorQuantizer`` interface (positions in raster order h * W + w).

        The schedule lives in the VQ ``ModelArgs``, so ``codebook_sizes`` is kept out of the state
        dict: checkpoints have exactly upstream's keys (``embedding.weight``, ``codebook_used``).
        """

        USAGE_WINDOW = 65536

        def __init__(self, schedule: Any, dim: int, beta: float, entropy_loss_ratio: float,
                     l2_norm: bool, show_usage: bool) -> None:
            super().__init__(schedule=schedule, dim=dim, commitment_cost=beta, use_l2_norm=l2_norm,
                             entropy_loss_ratio=entropy_loss_ratio, save_schedule=False)
            self.n_e = int(schedule.k_max)
            self.e_dim = int(dim)
            self.beta = beta
            self.l2_norm = l2_norm
            self.show_usage = show_usage
            if show_usage:  # same key, dtype and size as upstream's rolling window of recent ids
                self.register_buffer("codebook_used", torch.zeros(self.USAGE_WINDOW))

        def forward(self, z: torch.Tensor):  # type: ignore[override]
            if z.dim() != 4:
                raise ValueError(f"LlamaGenVCQ expects z of shape (B, C, H, W), got {tuple(z.shape)}")
            B, C, H, W = z.shape
            seq = z.permute(0, 2, 3, 1).reshape(B, H * W, C)
            z_q, info = super().forward(seq)
            indices = info["indices"].reshape(-1)
            usage = 0
            if self.show_usage and self.training:
                recent = indices[-self.USAGE_WINDOW:].to(self.codebook_used.dtype)
                n = recent.shape[0]
                self.codebook_used.copy_(torch.cat([self.codebook_used[n:], recent]))
                usage = len(torch.unique(self.codebook_used)) / self.n_e
            if self.training:
                entropy = info.get("entropy_loss")
                if entropy is None:
                    entropy = z_q.new_zeros(())
                losses = (info["codebook_loss"], info["commitment_loss"], entropy, usage)
            else:
                losses = (None, None, None, usage)
            z_q = z_q.reshape(B, H, W, C).permute(0, 3, 1, 2)
            return z_q, losses, (None, None, indices)

        def get_codebook_entry(self, indices: torch.Tensor, shape=None, channel_first: bool = True):  # type: ignore[override]
            """ids -> codes like LlamaGen: (..., C), reshaped to ``shape`` when given. Ids laid out
            as whole images ((B, L) or (B*L,)) are checked against K(i) at their positions."""
            if not indices.is_floating_point() and indices.numel() % self.seq_len == 0 and (
                    indices.dim() == 1 or (indices.dim() == 2 and indices.shape[1] == self.seq_len)):
                flat = super().get_codebook_entry(indices.reshape(-1, self.seq_len))
                z_q = flat.reshape(*indices.shape, -1)
            else:
                z_q = F.embedding(indices, self._codebook())
            if shape is not None:
                if channel_first:
                    z_q = z_q.reshape(shape[0], shape[2], shape[3], shape[1]).permute(0, 3, 1, 2).contiguous()
                else:
                    z_q = z_q.view(shape)
            return z_q

    return LlamaGenVCQ


@functools.cache
def adapter_class():
    """The adapter class (built on first use, so importing this module stays cheap)."""
    return _make_adapter_class()


def build_quantizer(config: Any):
    """A :class:`LlamaGenVCQ` from a (patched) VQ ``ModelArgs``."""
    return adapter_class()(schedule_from_args(config), config.codebook_embed_dim, config.commit_loss_beta,
                           config.entropy_loss_ratio, config.codebook_l2_norm, config.codebook_show_usage)


def _make_model_args(original: Any) -> Any:
    @dataclasses.dataclass
    class ModelArgs(original):
        quantizer: Optional[str] = None
        vcq_k_min: Optional[int] = None
        vcq_power: Optional[float] = None
        vcq_seq_len: Optional[int] = None
        vcq_image_size: Optional[int] = None

    ModelArgs.__qualname__ = original.__qualname__
    ModelArgs.__module__ = original.__module__
    ModelArgs.__doc__ = "LlamaGen's VQ ModelArgs plus vcq_plugin's quantizer fields (off by default)."
    return ModelArgs


def _make_vq_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, config: Any) -> None:
        original(self, config)
        if getattr(config, "quantizer", None) in UPSTREAM_NAMES:
            return
        self.quantize = build_quantizer(config)

    return __init__


# ---------------------------------------------------------------------- sampling
class _SamplingState:
    def __init__(self, sampler: Any, greedy: bool, generator: Optional[torch.Generator]) -> None:
        self.sampler = sampler
        self.greedy = greedy
        self.generator = generator
        self.position = 0

    def pick(self, cond: torch.Tensor, uncond: Optional[torch.Tensor]):
        """Processed logits -> (idx (B, 1), probs (B, V)) at the current position."""
        logits = self.sampler.process(self.position, cond.float(), None if uncond is None else uncond.float())
        self.position += 1
        probs = torch.softmax(logits, dim=-1)
        if self.greedy:
            idx = torch.argmax(logits, dim=-1)
        else:
            idx = self.sampler.sample_logits(logits, generator=self.generator)
        return idx.view(-1, 1), probs


_ACTIVE: contextvars.ContextVar[Optional[_SamplingState]] = contextvars.ContextVar("vcq_llamagen_sampler", default=None)


def _split(logits: torch.Tensor, cfg_scale: float):
    logits = logits[:, -1]
    if cfg_scale > 1.0:
        cond, uncond = torch.split(logits, len(logits) // 2, dim=0)
        return cond, uncond
    return logits, None


def _make_prefill(original: Any) -> Any:
    @functools.wraps(original)
    def prefill(model, cond_idx, input_pos, cfg_scale, **sampling_kwargs):
        state = _ACTIVE.get()
        if state is None:
            return original(model, cond_idx, input_pos, cfg_scale, **sampling_kwargs)
        logits, _ = model(None, cond_idx, input_pos)
        return state.pick(*_split(logits, cfg_scale))[0]

    return prefill


def _make_decode_one_token(original: Any) -> Any:
    @functools.wraps(original)
    def decode_one_token(model, x, input_pos, cfg_scale, cfg_flag, **sampling_kwargs):
        state = _ACTIVE.get()
        if state is None:
            return original(model, x, input_pos, cfg_scale, cfg_flag, **sampling_kwargs)
        if cfg_scale > 1.0:
            logits, _ = model(torch.cat([x, x]), cond_idx=None, input_pos=input_pos)
            cond, uncond = _split(logits, cfg_scale)
            if not cfg_flag:  # past cfg_interval: conditional logits only (lerp(c, c, s) == c)
                uncond = cond
        else:
            logits, _ = model(x, cond_idx=None, input_pos=input_pos)
            cond, uncond = _split(logits, cfg_scale)
        return state.pick(cond, uncond)

    return decode_one_token


def _coerce_sampler(sampler: Any, model: Any, schedule: Any) -> Any:
    if isinstance(sampler, str):
        from vcq_plugin.registry import create_sampler

        schedule = schedule if schedule is not None else getattr(model, "vcq_schedule", None)
        return create_sampler(sampler, **({} if schedule is None else {"schedule": schedule}))
    for attr in ("process", "sample_logits", "seq_len", "uses_guidance"):
        if not hasattr(sampler, attr):
            raise TypeError(f"sampler must be an AwareCFGSampler or a sampler registry name, got {type(sampler).__name__}")
    return sampler


def _make_generate(original: Any) -> Any:
    @functools.wraps(original)
    def generate(model, cond, max_new_tokens, emb_masks=None, cfg_scale=1.0, cfg_interval=-1,
                 sampler=None, vcq_schedule=None, generator=None, **sampling_kwargs):
        if sampler is None:
            if vcq_schedule is not None or generator is not None:
                raise ValueError("vcq_schedule= and generator= need sampler=...")
            return original(model, cond, max_new_tokens, emb_masks=emb_masks, cfg_scale=cfg_scale,
                            cfg_interval=cfg_interval, **sampling_kwargs)
        sampler = _coerce_sampler(sampler, model, vcq_schedule)
        if sampler.seq_len != max_new_tokens:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} but the sampler's schedule covers {sampler.seq_len} positions"
            )
        greedy = not sampling_kwargs.pop("sample_logits", True)
        for key in _SAMPLING_KEYS:
            if key in sampling_kwargs and sampling_kwargs[key] != getattr(sampler, key):
                raise ValueError(
                    f"{key}={sampling_kwargs[key]!r} conflicts with the sampler's {key}={getattr(sampler, key)!r}; "
                    "set it on the sampler (AwareCFGSampler(..., temperature=, top_k=, top_p=))"
                )
            sampling_kwargs.pop(key, None)
        if sampling_kwargs:
            raise TypeError(f"unexpected sampling arguments with a sampler: {sorted(sampling_kwargs)}")
        if cfg_scale not in (1.0, sampler.guidance_scale):
            raise ValueError(
                f"cfg_scale={cfg_scale} conflicts with the sampler's guidance_scale={sampler.guidance_scale}; "
                "leave cfg_scale at its default when passing a sampler"
            )
        token = _ACTIVE.set(_SamplingState(sampler, greedy, generator))
        try:
            # cfg_scale > 1 only tells upstream to double the batch (cond + null); the mix is the sampler's.
            return original(model, cond, max_new_tokens, emb_masks=emb_masks,
                            cfg_scale=2.0 if sampler.uses_guidance else 1.0, cfg_interval=cfg_interval)
        finally:
            _ACTIVE.reset(token)

    return generate


# ---------------------------------------------------------------------- models
class _GPTModels(dict):
    """LlamaGen's ``GPT_models`` plus :data:`EXTRA_GPT_MODELS` (a dict subclass, so the hook can mark it)."""


def _make_gpt_models(original: Any) -> Any:
    import autoregressive.models.gpt as gpt

    def build(dims: dict, **kwargs: Any):
        return gpt.Transformer(gpt.ModelArgs(**dims, **kwargs))  # as upstream's GPT_XL, other dimensions

    models = _GPTModels(original)
    for name, dims in EXTRA_GPT_MODELS.items():
        models.setdefault(name, functools.partial(build, dims))
    return models


# ---------------------------------------------------------------------- optional masked training loss
def _make_gpt_forward(original: Any) -> Any:
    @functools.wraps(original)
    def forward(self, idx, cond_idx, input_pos=None, targets=None, mask=None, valid=None):
        schedule = self.__dict__.get("vcq_masked_loss")
        if schedule is None or targets is None:  # upstream, bit for bit
            return original(self, idx, cond_idx, input_pos=input_pos, targets=targets, mask=mask, valid=valid)
        logits, _ = original(self, idx, cond_idx, input_pos=input_pos, targets=None, mask=mask, valid=None)
        L = targets.shape[1]
        if L > schedule.seq_len or logits.shape[1] != L:
            raise ValueError(
                f"masked loss: targets cover {L} positions, logits {logits.shape[1]}, schedule {schedule.seq_len}"
            )
        allowed = torch.arange(logits.shape[-1], device=logits.device)[None, :] < schedule.sizes[:L].to(logits.device)[:, None]
        logits = logits.masked_fill(~allowed, float("-inf"))
        loss_all = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        if valid is not None:  # upstream's weighting of valid rows
            valid_all = valid[:, None].repeat(1, L).reshape(-1)
            loss = (loss_all * valid_all).sum() / max(valid_all.sum(), 1)
        else:
            loss = loss_all.mean()
        return logits, loss

    return forward


def enable_masked_loss(model: torch.nn.Module, schedule: Any) -> torch.nn.Module:
    """Make a LlamaGen GPT's training loss ignore logits of tokens >= K(i) (off by default).

    Needs the LlamaGen hooks (``vcq_plugin.register(hosts=["llamagen"])``): the hooked
    ``Transformer.forward`` then computes, when ``targets`` are given, the cross-entropy from logits
    whose columns ``k >= K(i)`` are -inf at position i (the image-token positions the logits
    predict). Also sets ``model.vcq_schedule`` (used by ``generate(..., sampler="name")``).
    :func:`disable_masked_loss` or ``vcq_plugin.unregister()`` turns it off.
    """
    from vcq_plugin.schedule import CodebookSchedule

    if not getattr(type(model).forward, "__vcq_hooked__", False):
        raise RuntimeError(
            "enable_masked_loss needs LlamaGen's Transformer.forward hooked: call "
            "vcq_plugin.register(hosts=['llamagen']) first (the hook is drift-checked and undone by unregister())"
        )
    schedule = CodebookSchedule.from_spec(schedule)
    model.vcq_masked_loss = schedule
    model.vcq_schedule = schedule
    return model


def disable_masked_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`enable_masked_loss` for ``model``: upstream's loss again."""
    model.__dict__.pop("vcq_masked_loss", None)
    return model


def clear_kv_caches(model: torch.nn.Module) -> None:
    """Drop the KV caches LlamaGen's ``generate`` leaves on a GPT (needed before training it again)."""
    for layer in getattr(model, "layers", []):
        layer.attention.kv_cache = None
    model.max_batch_size = -1
    model.max_seq_length = -1


# ---------------------------------------------------------------------- registration
def hooks() -> List[Hook]:
    common = dict(host=HOST, pin=PIN, how_to_fix=HOW_TO_FIX)
    sha = SHA256
    sampling = {"decode_n_tokens": sha["decode_n_tokens"]}  # calls the hooked decode_one_token as we expect
    return [
        Hook(module=VQ_MODULE, attribute="ModelArgs", checks={"ModelArgs": sha["ModelArgs"]},
             make=_make_model_args, **common),
        Hook(module=VQ_MODULE, attribute="VQModel.__init__", make=_make_vq_init, **common,
             checks={k: sha[k] for k in ("VQModel", "VectorQuantizer", "compute_entropy_loss")}),
        Hook(module=GEN_MODULE, attribute="prefill", checks={"prefill": sha["prefill"], **sampling},
             make=_make_prefill, **common),
        Hook(module=GEN_MODULE, attribute="decode_one_token", checks={"decode_one_token": sha["decode_one_token"], **sampling},
             make=_make_decode_one_token, **common),
        Hook(module=GEN_MODULE, attribute="generate", make=_make_generate, **common,
             checks={"generate": sha["generate"], "prefill": sha["prefill"], **sampling}),
        Hook(module=GPT_MODULE, attribute="GPT_models", make=_make_gpt_models, **common,
             checks={"ModelArgs": sha["gpt.ModelArgs"], "GPT_XL": sha["GPT_XL"]}),
        Hook(module=GPT_MODULE, attribute="Transformer.forward", checks={"Transformer.forward": sha["Transformer.forward"]},
             make=_make_gpt_forward, **common),
    ]


def available() -> bool:
    return all(module_available(m) for m in (VQ_MODULE, GEN_MODULE, GPT_MODULE))
