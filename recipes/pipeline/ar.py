"""Class-conditional autoregressive model over image tokens (the ``titok-pytorch`` host's AR stage).

A Llama-style decoder from x-transformers (rotary positions, RMSNorm, SwiGLU) with next-token
prediction. The input sequence is ``[class, x_0, ..., x_{L-2}]`` and position j predicts x_j.
Vocabulary: ``k_max`` image tokens, then ``num_classes`` class tokens, then one null class (used
with probability ``class_dropout`` in training, as the unconditional branch of CFG at sampling).
Sampling drives :class:`vcq_plugin.AwareCFGSampler` with a KV cache for each CFG branch.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcq_plugin._errors import check_int


class ClassConditionalAR(nn.Module):
    """Next-token model over ``seq_len`` image tokens conditioned on a class.

    Args:
        k_max: image-token vocabulary (ids 0..k_max-1).
        num_classes: class tokens are ids k_max..k_max+num_classes-1; the null class is the last id.
        seq_len: number of image tokens L.
        dim, depth, heads: decoder width / layers / attention heads.
        dropout: attention + feed-forward dropout; emb_dropout: token-embedding dropout.
        class_dropout: probability of replacing the class by the null class in training.
        vocab_size: None = k_max + num_classes + 1.
    The recipe's values (and their defaults) are ``ARConfig`` in ``recipes/pipeline/config.py``.
    """

    def __init__(self, *, k_max: int, num_classes: int, seq_len: int, dim: int, depth: int, heads: int,
                 dropout: float, emb_dropout: float, class_dropout: float, vocab_size: Optional[int] = None) -> None:
        super().__init__()
        from x_transformers import Decoder, TransformerWrapper

        self.k_max = check_int("k_max", k_max, minimum=2)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.seq_len = check_int("seq_len", seq_len, minimum=1)
        needed = self.k_max + self.num_classes + 1
        self.vocab_size = needed if vocab_size is None else check_int("vocab_size", vocab_size, minimum=1)
        if self.vocab_size < needed:
            raise ValueError(
                f"vocab_size={self.vocab_size} is too small: K_max ({self.k_max}) image tokens + "
                f"{self.num_classes} classes + 1 null class need {needed}")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout}")
        self.class_dropout = float(class_dropout)
        self.null_class = self.k_max + self.num_classes
        self.net = TransformerWrapper(
            num_tokens=self.vocab_size,
            max_seq_len=self.seq_len,
            use_abs_pos_emb=False,
            emb_dropout=emb_dropout,
            attn_layers=Decoder(dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, use_rmsnorm=True,
                                ff_glu=True, ff_swish=True, attn_dropout=dropout, ff_dropout=dropout),
        )

    def class_tokens(self, labels: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) in [0, num_classes), or -1 for the null class -> vocabulary ids (B,)."""
        labels = labels.long()
        if labels.numel() and (labels.max() >= self.num_classes or labels.min() < -1):
            raise ValueError(f"labels must be in [0, {self.num_classes}) or -1 (null), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        return torch.where(labels < 0, torch.full_like(labels, self.null_class), labels + self.k_max)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V): position j predicts tokens[:, j] from class + tokens[:, :j]."""
        cls = self.class_tokens(labels)
        if self.training and self.class_dropout > 0:
            drop = torch.rand(cls.shape, device=cls.device) < self.class_dropout
            cls = torch.where(drop, torch.full_like(cls, self.null_class), cls)
        x = torch.cat([cls[:, None], tokens[:, :-1].long()], dim=1)
        return self.net(x)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over all positions; the vocabulary is not masked."""
        logits = self(tokens, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1).long())

    @torch.no_grad()
    def nll(self, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> dict:
        """Held-out negative log-likelihood: nats/token, bits/token and bits/image, plus per position."""
        was = self.training
        self.eval()
        per_pos = torch.zeros(tokens.shape[1], dtype=torch.float64)
        for i in range(0, tokens.shape[0], batch_size):
            t, y = tokens[i:i + batch_size].long(), labels[i:i + batch_size]
            logits = self(t, y)
            ce = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")  # (B, L)
            per_pos += ce.double().sum(0)
        self.train(was)
        per_pos /= tokens.shape[0]
        nats = float(per_pos.mean())
        return {"nats_per_token": nats, "bits_per_token": nats / math.log(2),
                "bits_per_image": float(per_pos.sum()) / math.log(2),
                "bits_per_position": (per_pos / math.log(2)).tolist()}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, labels: torch.Tensor, sampler: Any, generator: Optional[torch.Generator] = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Sample (B, L) int64 image tokens for class ids ``labels`` (B,) with an
        :class:`~vcq_plugin.AwareCFGSampler` (CFG mix, K(i) masks, temperature, top-k/p).

        Each CFG branch keeps its own KV cache; the unconditional branch is run only at positions
        where the sampler asks for it (scale != 1) and catches up on skipped tokens in one call.
        """
        if sampler.seq_len != self.seq_len:
            raise ValueError(f"sampler schedule has seq_len={sampler.seq_len}, the model {self.seq_len}")
        was = self.training
        self.eval()
        b = labels.shape[0]
        cond_prefix = self.class_tokens(labels)[:, None]
        uncond_prefix = torch.full_like(cond_prefix, self.null_class)
        caches: dict[str, Any] = {"c": None, "u": None}

        def run(branch: str, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            x = torch.cat([prefix, tokens], dim=1)
            if not use_cache:
                return self.net(x)[:, -1]
            cache = caches[branch]
            if cache is None:
                logits, caches[branch] = self.net(x, return_intermediates=True)
            else:
                new = x.shape[1] - cache.cache_length
                logits, caches[branch] = self.net(x, cache=cache, cache_age=new, return_intermediates=True)
            return logits[:, -1]

        def step_fn(tokens: torch.Tensor, position: int, need_uncond: bool):
            cond = run("c", cond_prefix, tokens)
            if need_uncond:
                return cond, run("u", uncond_prefix, tokens)
            return cond

        out = sampler.sample(step_fn, b, generator=generator, device=labels.device)
        self.train(was)
        return out


def build_ar(cfg: Mapping[str, Any], *, k_max: int, num_classes: int, seq_len: int) -> ClassConditionalAR:
    """The AR model of an ``ar`` config section (``recipes/pipeline/config.py`` ARConfig: every value there)."""
    return ClassConditionalAR(
        k_max=k_max, num_classes=num_classes, seq_len=seq_len, dim=int(cfg["dim"]), depth=int(cfg["depth"]),
        heads=int(cfg["heads"]), dropout=float(cfg["dropout"]), emb_dropout=float(cfg["emb_dropout"]),
        class_dropout=float(cfg["class_dropout"]), vocab_size=cfg["vocab_size"],
    )


def tokens_tensor(tokens: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(tokens).astype(np.int64))
