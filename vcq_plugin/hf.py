"""Hugging Face ``transformers`` adapter: an :class:`AwareCFGSampler` as a ``LogitsProcessor``.

``transformers`` is optional: the class subclasses ``transformers.LogitsProcessor`` when it is
installed and is a plain callable with the same ``(input_ids, scores) -> scores`` contract
otherwise (``LogitsProcessorList`` only calls it)::

    proc = VCQLogitsProcessor(create_sampler("vcq_bb"), prompt_length=1)   # 1 class token
    model.generate(class_ids, logits_processor=LogitsProcessorList([proc]), do_sample=True,
                   max_new_tokens=256, temperature=1.0, top_k=0, top_p=1.0)

Leave transformers' own temperature / top-k / top-p neutral: the sampler applies its own.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._errors import check_int
from .sampler import AwareCFGSampler

try:  # pragma: no cover - depends on the environment
    from transformers import LogitsProcessor as _Base
except ImportError:  # transformers is an optional extra
    _Base = object


class VCQLogitsProcessor(_Base):  # type: ignore[misc, valid-type]
    """Apply codebook-size-aware CFG, the K(i) vocabulary mask and filtering inside ``generate``.

    Args:
        sampler: the :class:`AwareCFGSampler` to apply.
        prompt_length: tokens before the first image token (e.g. 1 class token); position
            i = ``input_ids.shape[1] - prompt_length``.
        uncond_fn: optional ``uncond_fn(input_ids) -> (B, V)`` unconditional logits, for models
            that do not run the unconditional rows in the same batch. Without it, guided
            positions expect the doubled batch convention of transformers' CFG: ``scores``
            ``(2B, V)`` = conditional rows then unconditional rows, for ``input_ids`` ``(B, n)``.

    Returns ``(B, V)`` processed scores.
    """

    def __init__(
        self,
        sampler: AwareCFGSampler,
        prompt_length: int = 0,
        uncond_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> None:
        if not isinstance(sampler, AwareCFGSampler):
            raise TypeError(f"sampler must be an AwareCFGSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.prompt_length = check_int("prompt_length", prompt_length, minimum=0)
        self.uncond_fn = uncond_fn

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b = input_ids.shape[0]
        position = input_ids.shape[1] - self.prompt_length
        if not 0 <= position < self.sampler.seq_len:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens, so with prompt_length={self.prompt_length} "
                f"the position is {position}, outside [0, {self.sampler.seq_len}); check prompt_length "
                f"and max_new_tokens (<= seq_len)"
            )
        if scores.shape[0] == 2 * b:
            cond, uncond = scores[:b], scores[b:]
        elif scores.shape[0] == b:
            cond = scores
            need = self.sampler.needs_uncond(position)
            uncond = self.uncond_fn(input_ids) if need and self.uncond_fn is not None else None
        else:
            raise ValueError(
                f"scores must have {b} rows (cond) or {2 * b} rows (cond then uncond) for input_ids "
                f"with {b} rows, got {scores.shape[0]}"
            )
        return self.sampler.process(position, cond, uncond)
