"""Host patch for titok-pytorch (PyPI ``titok-pytorch``, lucidrains), pinned at 0.0.5.

``TiTokTokenizer`` builds its quantizer as ``VQ(dim=dim, codebook_dim=dim,
codebook_size=codebook_size, **vq_kwargs)`` where ``VQ`` is vector-quantize-pytorch's
``VectorQuantize``. After :func:`vcq_plugin.register`::

    TiTokTokenizer(dim=..., num_latent_tokens=32, codebook_size=4096,
                   vq_kwargs={"quantizer": "vcq_cosine", "k_min": 2})

gets a :class:`VectorQuantizeVCQ` (seq_len = num_latent_tokens, k_max = codebook_size) that keeps
VectorQuantize's contract: ``forward(x (B, L, D)) -> (quantized, indices (B, L), loss)`` and
``get_output_from_indices(indices (B, L)) -> (B, L, D)``. Without a ``quantizer`` key the
original ``VectorQuantize`` is built with the same arguments (upstream behaviour).

Hooks (all checked against the source of ``TiTokTokenizer`` at 0.0.5):

- ``titok_pytorch.titok.VQ``: a factory dispatching on ``quantizer``.
- ``TiTokTokenizer.__init__``: passes ``seq_len=num_latent_tokens`` to the factory when
  ``vq_kwargs`` names a VCQ quantizer (``VQ`` is not told the number of latent tokens).
- ``TiTokTokenizer.forward``: upstream drops the quantizer's loss (its VectorQuantize learns its
  codebook by EMA); VCQ's codebook learns by gradient, so when the tokenizer holds a VCQ the
  returned reconstruction loss also gets the VCQ loss (codebook + commitment). Also accepts
  ``return_loss=True`` (the default behaviour) for symmetry with other lucidrains models.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, List, Tuple

import torch

from ._base import Hook

HOST = "titok-pytorch"
MODULE = "titok_pytorch.titok"
PIN = "titok-pytorch==0.0.5"
HOW_TO_FIX = "install the pinned version (pip install titok-pytorch==0.0.5)"
# source_sha256(titok_pytorch.titok.TiTokTokenizer) at titok-pytorch 0.0.5
TITOK_TOKENIZER_SHA256 = "245057fde4b6df0e6cd12349085069e83ddd5b4141e1d95b779e530a8c02ac27"

# vector-quantize-pytorch kwargs that mean something for VCQ, and what they become.
_VQ_ALIASES = {"commitment_weight": "commitment_cost", "use_cosine_sim": "use_l2_norm"}
_VCQ_KEYS = {"k_min", "power", "commitment_cost", "use_l2_norm", "entropy_loss_ratio", "seq_len"}


def _vcq_class():
    from vcq_plugin.quantizer import VariableCodebookQuantizer

    return VariableCodebookQuantizer


def _make_adapter_class():
    VariableCodebookQuantizer = _vcq_class()

    class VectorQuantizeVCQ(VariableCodebookQuantizer):
        """VCQ with vector-quantize-pytorch's ``VectorQuantize`` call contract.

        ``forward(x (B, L, D)) -> (quantized (B, L, D), indices (B, L) int64, loss scalar)`` with
        ``loss = codebook_loss + commitment_cost * commitment_loss (+ entropy term)``.
        """

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
            if args or kwargs:
                raise TypeError(
                    "VectorQuantizeVCQ.forward takes only x (B, L, D); VectorQuantize options such as "
                    f"indices/mask/lens are not supported, got extra {list(kwargs) or len(args)}"
                )
            z_q, info = super().forward(x)
            self._last_loss = info["loss"]
            return z_q, info["indices"], info["loss"]

        def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
            """Codes for token ids (B, L) -> (B, L, D), as the decoder consumes them."""
            return self.get_codebook_entry(indices)

        def get_codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
            return self.get_codebook_entry(indices)

        @property
        def codebook_size(self) -> int:
            return int(self.schedule.k_max)

        @property
        def codebook(self) -> torch.Tensor:
            return self.embedding.weight

        def pop_loss(self) -> torch.Tensor | None:
            loss, self._last_loss = getattr(self, "_last_loss", None), None
            return loss

    return VectorQuantizeVCQ


@functools.cache
def adapter_class():
    """The :class:`VectorQuantizeVCQ` class (built on first use, so importing this module is cheap)."""
    return _make_adapter_class()


def build_vcq(quantizer: str, *, dim: int, codebook_size: int, codebook_dim: int | None = None, **kwargs: Any):
    """A :class:`VectorQuantizeVCQ` from TiTokTokenizer's ``VQ(...)`` arguments.

    ``quantizer`` is a registry schedule name (``vcq_cosine``, ``vcq_linear``, ``vcq_power``,
    ``vcq_power2.5``, ``constant``); ``seq_len`` must be given (the patched ``__init__`` passes
    ``num_latent_tokens``).
    """
    from vcq_plugin.schedule import CodebookSchedule

    if codebook_dim is not None and codebook_dim != dim:
        raise ValueError(f"VCQ has no projection: codebook_dim must equal dim, got {codebook_dim} != {dim}")
    for old, new in _VQ_ALIASES.items():
        if old in kwargs:
            if new in kwargs:
                raise ValueError(f"vq_kwargs gives both {old!r} and {new!r}; use {new!r}")
            kwargs[new] = kwargs.pop(old)
    unknown = sorted(set(kwargs) - _VCQ_KEYS)
    if unknown:
        raise TypeError(
            f"vq_kwargs {unknown} are VectorQuantize options that VCQ (quantizer={quantizer!r}) does not "
            f"support; allowed with a VCQ quantizer: {sorted(_VCQ_KEYS | set(_VQ_ALIASES))}"
        )
    if "seq_len" not in kwargs:
        raise ValueError("VCQ needs seq_len (the number of latent tokens); pass vq_kwargs={'seq_len': ...}")
    schedule = CodebookSchedule.from_spec(quantizer, k_max=codebook_size, seq_len=kwargs.pop("seq_len"),
                                          k_min=kwargs.pop("k_min", None), power=kwargs.pop("power", None))
    return adapter_class()(schedule=schedule, dim=dim, **kwargs)


# ---------------------------------------------------------------------- replacements
def _make_vq_factory(original: Any) -> Any:
    def VQ(*args: Any, **kwargs: Any) -> Any:
        quantizer = kwargs.pop("quantizer", None)
        if quantizer is None:
            return original(*args, **kwargs)
        if args:
            raise TypeError("a VCQ quantizer takes keyword arguments only")
        return build_vcq(quantizer, **kwargs)

    VQ.__doc__ = (
        "vcq_plugin factory in place of VectorQuantize: vq_kwargs['quantizer'] (e.g. 'vcq_cosine') builds "
        "a VariableCodebookQuantizer, anything else builds the original VectorQuantize."
    )
    return VQ


def _make_init(original: Any) -> Any:
    param = inspect.signature(original).parameters.get("num_latent_tokens")
    default_latents = None if param is None or param.default is inspect.Parameter.empty else param.default

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        vq_kwargs = kwargs.get("vq_kwargs")
        latents = kwargs.get("num_latent_tokens", default_latents)
        if (isinstance(vq_kwargs, dict) and vq_kwargs.get("quantizer") is not None and "seq_len" not in vq_kwargs
                and latents is not None):
            kwargs["vq_kwargs"] = {**vq_kwargs, "seq_len": latents}
        original(self, *args, **kwargs)

    return __init__


def _make_forward(original: Any) -> Any:
    @functools.wraps(original)
    def forward(self, images, *args: Any, return_loss: bool = True, **kwargs: Any):
        if not return_loss:
            raise ValueError(
                "return_loss=False is not a TiTokTokenizer mode: use tokenizer.tokenize(images) for codes "
                "or return_recon_images=True for (loss, images)"
            )
        vq = self.vq
        if not isinstance(vq, adapter_class()):
            return original(self, images, *args, **kwargs)
        vq.pop_loss()
        out = original(self, images, *args, **kwargs)
        vq_loss = vq.pop_loss()
        if vq_loss is None or not torch.is_tensor(out) and not isinstance(out, tuple):
            return out
        if isinstance(out, tuple):
            if out and torch.is_tensor(out[0]) and out[0].dim() == 0:
                return (out[0] + vq_loss,) + tuple(out[1:])
            return out
        if out.dim() == 0 and out.is_floating_point():
            return out + vq_loss
        return out  # codebook ids

    return forward


def hooks() -> List[Hook]:
    common = dict(host=HOST, module=MODULE, checks={"TiTokTokenizer": TITOK_TOKENIZER_SHA256}, pin=PIN,
                  how_to_fix=HOW_TO_FIX)
    return [
        Hook(attribute="VQ", make=_make_vq_factory, **common),
        Hook(attribute="TiTokTokenizer.__init__", make=_make_init, **common),
        Hook(attribute="TiTokTokenizer.forward", make=_make_forward, **common),
    ]


def available() -> bool:
    from ._base import module_available

    return module_available(MODULE)


HOW_TO_GET = "pip install titok-pytorch==0.0.5 (or pip install 'vcq-plugin[titok]')"
