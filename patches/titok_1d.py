"""Host patch for bytedance/1d-tokenizer (TiTok + RAR), pinned at commit 942a96fb.

Config keys (absent = upstream behaviour, unchanged)::

    model:
      vq_model:
        quantizer: vcq_cosine        # vcq_linear | vcq_power | vcq_power2.5 | constant
        vcq: {k_min: 2, power: 2.5}  # optional
      generator:
        guidance: aware              # aware | cosine | linear | constant | none

- ``TiTok.__init__`` (checked against ``modeling.titok.TiTok``): with ``quantizer`` set, the
  model's ``quantize`` is a :class:`TiTokVCQ` (k_max = codebook_size, seq_len =
  num_latent_tokens, dim = token_size, commitment_cost / use_l2_norm from the config) speaking
  TiTok's ``VectorQuantizer`` contract, so encode / decode / decode_tokens, the losses, EMA and
  checkpoints work unchanged (its state dict has the same keys as upstream's).
- ``data.PretokenizedWebDataset``: the pinned ``data/__init__.py`` does not export it but
  ``utils.train_utils`` imports it; the hook adds the export so the host's training scripts run.
- ``RAR.generate`` (checked against ``modeling.rar.RAR``): with ``generator.guidance`` set (or a
  ``sampler=`` argument), sampling goes through :class:`vcq_plugin.AwareCFGSampler` (Eq. 4 scale
  per position, every token >= K(i) masked) with the schedule of ``model.vq_model``.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple

import torch

from ._base import Hook, module_available

HOST = "1d-tokenizer"
COMMIT = "942a96fbdd873780179d1b78d5462911528bf8c8"
PIN = f"bytedance/1d-tokenizer @ {COMMIT}"
HOW_TO_FIX = (
    f"check out the pinned commit (git -C third_party/1d-tokenizer checkout {COMMIT}, or "
    "`git submodule update --init third_party/1d-tokenizer` in a vcq-plugin checkout)"
)
HOW_TO_GET = (
    "run `git submodule update --init third_party/1d-tokenizer` and put third_party/1d-tokenizer on "
    "sys.path (run from that directory, as its scripts expect); pip install 'vcq-plugin[titok]'"
)
TITOK_SHA256 = "60939a75c5513611318e1aaa54dc49497e112799a99ae6d9b226de0d2ac019e3"  # source_sha256(modeling.titok.TiTok) at COMMIT
# source_sha256(modeling.quantizer.quantizer.VectorQuantizer) at COMMIT: the contract TiTokVCQ speaks
VECTOR_QUANTIZER_SHA256 = "fbcaf5eb08efe78043dae9135905d51d848dd7668b24af66f9292897b0eeb29d"
# source_sha256(data.webdataset_reader.PretokenizedWebDataset) at COMMIT
PRETOKENIZED_SHA256 = "faec1d39d699c37f422beb547da5a2ac31a74a7719ab18eee897eaa8d1ac119c"
RAR_SHA256 = "7d1f7567b19ea653d70335567421d77410e0977bd4535b6f79e57253e580a68f"  # source_sha256(modeling.rar.RAR) at COMMIT

UPSTREAM_NAMES = (None, "vq")  # quantizer values that keep upstream's VectorQuantizer


# ---------------------------------------------------------------------- schedule from config
def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def schedule_from_config(config: Any, seq_len: Optional[int] = None):
    """The :class:`CodebookSchedule` described by ``config.model.vq_model`` (constant when it
    names no VCQ quantizer): maps the host's keys onto :meth:`CodebookSchedule.from_spec`, which owns
    the rules. ``seq_len`` defaults to ``num_latent_tokens``."""
    from vcq_plugin.schedule import CodebookSchedule

    vq = config.model.vq_model
    name = _get(vq, "quantizer")
    seq_len = int(vq.num_latent_tokens) if seq_len is None else seq_len
    extra = _get(vq, "vcq") or {}
    extra = dict(extra.items()) if hasattr(extra, "items") else {}
    unknown = sorted(set(extra) - {"k_min", "power"})
    if unknown:
        raise ValueError(f"model.vq_model.vcq has unknown keys {unknown}; allowed: k_min, power")
    if name in UPSTREAM_NAMES:  # upstream's VectorQuantizer: every position uses the whole codebook
        name = "constant"
    return CodebookSchedule.from_spec(str(name), k_max=int(vq.codebook_size), seq_len=int(seq_len), **extra)


# ---------------------------------------------------------------------- TiTok's quantizer contract
def _make_adapter_class():
    from vcq_plugin.quantizer import VariableCodebookQuantizer

    class TiTokVCQ(VariableCodebookQuantizer):
        """VCQ speaking 1d-tokenizer's ``VectorQuantizer`` contract.

        ``forward(z (B, C, H, W)) -> (z_q (B, C, H, W), result_dict)`` in fp32 with positions in
        raster order over (H, W) (TiTok: H = 1, W = L); result_dict has ``quantizer_loss``,
        ``commitment_loss`` (already x commitment_cost), ``codebook_loss`` and
        ``min_encoding_indices`` (B, H, W). ``get_codebook_entry`` accepts TiTok's flat ids
        (N,) -> (N, C) and soft one-hots (N, K) -> (N, C), and VCQ's (B, L) ids -> (B, L, C).

        The schedule lives in the config (``model.vq_model``), so the ``codebook_sizes`` buffer is
        kept out of the state dict: checkpoints have exactly upstream's keys.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, save_schedule=False, **kwargs)

        def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:  # type: ignore[override]
            if z.dim() != 4:
                raise ValueError(f"TiTokVCQ expects z of shape (B, C, H, W), got {tuple(z.shape)}")
            B, C, H, W = z.shape
            with torch.autocast(device_type=z.device.type, enabled=False):
                seq = z.float().flatten(2).transpose(1, 2)  # (B, H*W, C), raster order
                z_q, info = super().forward(seq)
            z_q = z_q.transpose(1, 2).reshape(B, C, H, W).contiguous()
            result = dict(
                quantizer_loss=info["loss"],
                commitment_loss=info["commitment_loss"],
                codebook_loss=info["codebook_loss"],
                min_encoding_indices=info["indices"].view(B, H, W),
            )
            return z_q, result

        def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            if indices.dim() == 1 and not indices.is_floating_point():  # TiTok.decode_tokens: (B*L,)
                if indices.numel() % self.seq_len == 0:  # checked against K(i) per position
                    return super().get_codebook_entry(indices.view(-1, self.seq_len)).view(indices.shape[0], -1)
                return torch.nn.functional.embedding(indices, self._codebook())
            if indices.dim() == 2 and indices.is_floating_point():  # soft one-hot (N, K)
                return indices @ self._codebook()
            return super().get_codebook_entry(indices)

        @property
        def codebook_size(self) -> int:
            return int(self.schedule.k_max)

        @property
        def token_size(self) -> int:
            return int(self.embedding.weight.shape[1])

    return TiTokVCQ


@functools.cache
def adapter_class():
    """The adapter class (built on first use, so importing this module stays cheap)."""
    return _make_adapter_class()


def build_quantizer(config: Any):
    """A :class:`TiTokVCQ` from a 1d-tokenizer config (``model.vq_model``)."""
    vq = config.model.vq_model
    return adapter_class()(
        schedule=schedule_from_config(config),
        dim=int(vq.token_size),
        commitment_cost=float(vq.commitment_cost),
        use_l2_norm=bool(vq.use_l2_norm),
    )


def _make_titok_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, config: Any) -> None:
        original(self, config)
        name = _get(self.config.model.vq_model, "quantizer")
        if name in UPSTREAM_NAMES:
            return
        if self.quantize_mode != "vq":
            raise ValueError(
                f"model.vq_model.quantizer={name!r} needs quantize_mode 'vq', got {self.quantize_mode!r}"
            )
        quantizer = build_quantizer(self.config)
        if self.finetune_decoder:  # stage 2: frozen, as upstream freezes its quantizer
            quantizer.eval()
            quantizer.requires_grad_(False)
        self.quantize = quantizer

    return __init__


# ---------------------------------------------------------------------- RAR sampling
def sampler_from_config(config: Any, guidance_scale: float, guidance_scale_pow: float,
                        temperature: float, guidance: Optional[str] = None):
    """The :class:`AwareCFGSampler` that ``RAR.generate`` uses for this config and these arguments."""
    from vcq_plugin.sampler import AwareCFGSampler

    gen = config.model.generator
    mode = guidance or _get(gen, "guidance") or "aware"
    schedule = schedule_from_config(config, seq_len=int(gen.image_seq_len))
    return AwareCFGSampler(schedule, guidance_scale=float(guidance_scale), guidance_power=float(guidance_scale_pow),
                           guidance=str(mode), temperature=float(temperature))


def _generate_with_sampler(model: Any, condition: torch.Tensor, sampler: Any, kv_cache: bool,
                           generator: Optional[torch.Generator]) -> torch.Tensor:
    L = model.image_seq_len
    if sampler.seq_len != L:
        raise ValueError(f"sampler schedule has seq_len {sampler.seq_len}, the RAR model generates {L} tokens")
    condition = model.preprocess_condition(condition, cond_drop_prob=0.0)
    n = condition.shape[0]
    ids = torch.full((n, 0), -1, device=condition.device, dtype=torch.long)
    cfg = sampler.uses_guidance
    if cfg:
        cond_in = torch.cat([condition, model.get_none_condition(condition)], dim=0)
    if kv_cache:
        model.enable_kv_cache()
    try:
        for step in range(L):
            if cfg:
                logits = model.forward_fn(torch.cat([ids, ids], dim=0), cond_in, is_sampling=True)[:, -1]
                cond_logits, uncond_logits = logits[:n], logits[n:]
            else:
                cond_logits = model.forward_fn(ids, condition, is_sampling=True)[:, -1]
                uncond_logits = None
            logits = sampler.process(step, cond_logits.float(),
                                     uncond_logits.float() if uncond_logits is not None else None)
            nxt = sampler.sample_logits(logits, generator=generator)
            ids = torch.cat((ids, nxt.view(n, 1).to(ids.dtype)), dim=-1)
    finally:
        model.disable_kv_cache()
    return ids


def _make_rar_generate(original: Any) -> Any:
    @functools.wraps(original)
    def generate(self, condition, guidance_scale, randomize_temperature, guidance_scale_pow,
                 kv_cache=True, sampler=None, generator=None, **kwargs):
        mode = _get(self.config.model.generator, "guidance")
        if sampler is None and mode is None:
            if generator is not None:
                raise ValueError("generator= is only supported with a VCQ sampler (model.generator.guidance)")
            return original(self, condition, guidance_scale, randomize_temperature, guidance_scale_pow,
                            kv_cache=kv_cache, **kwargs)
        if sampler is None:
            sampler = sampler_from_config(self.config, guidance_scale, guidance_scale_pow, randomize_temperature)
        elif isinstance(sampler, str):
            from vcq_plugin.registry import create_sampler

            sampler = create_sampler(sampler, schedule=schedule_from_config(self.config, int(self.image_seq_len)))
        with torch.no_grad():
            return _generate_with_sampler(self, condition, sampler, kv_cache, generator)

    return generate


# ---------------------------------------------------------------------- data export fix-up
def _make_data_export(existing: Any) -> Any:
    """``utils.train_utils`` does ``from data import PretokenizedWebDataset``, which the pinned
    ``data/__init__.py`` does not export: add it (a trivial subclass, so the upstream class itself
    is left untouched), leaving an existing export in place."""
    from data.webdataset_reader import PretokenizedWebDataset

    base = existing if existing is not None else PretokenizedWebDataset
    return type("PretokenizedWebDataset", (base,), {"__module__": base.__module__, "__doc__": base.__doc__})


# ---------------------------------------------------------------------- registration
def hooks() -> List[Hook]:
    common = dict(host=HOST, pin=PIN, how_to_fix=HOW_TO_FIX)
    return [
        Hook(module="modeling.titok", attribute="TiTok.__init__", make=_make_titok_init, **common,
             checks={"TiTok": TITOK_SHA256, "modeling.quantizer.quantizer:VectorQuantizer": VECTOR_QUANTIZER_SHA256}),
        # the replacement calls RAR's preprocess_condition / get_none_condition / forward_fn / *_kv_cache
        Hook(module="modeling.rar", attribute="RAR.generate", checks={"RAR": RAR_SHA256}, make=_make_rar_generate,
             **common),
        # needs webdataset (the [titok] extra); skipped when `data` cannot be imported
        Hook(module="data", attribute="PretokenizedWebDataset", checks={"webdataset_reader.PretokenizedWebDataset": PRETOKENIZED_SHA256},
             make=_make_data_export, optional=True, **common),
    ]


def available() -> bool:
    return all(module_available(m) for m in ("modeling.titok", "modeling.rar", "modeling.quantizer.quantizer"))
