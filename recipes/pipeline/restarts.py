"""Dead-code restarts for the demo tokenizers (the recipe's local version; a per-position library
version may replace it: ``recipes/pipeline/tokenizer.py`` imports it in one line)."""
from __future__ import annotations

import torch


class CodebookRestarts:
    """Dead-code restarts for a VCQ codebook learned by gradient (as Jukebox, or vector-quantize-
    pytorch's ``threshold_ema_dead_code``): every ``every`` steps, each shared code that no position
    picked since the last restart is moved onto a recent encoder output taken at a position allowed
    to use it (K(i) > k). Small data sets and short runs otherwise leave most codes dead.
    The usage statistics are the quantizer's own (``vq.usage``, reset after each restart).

    Restarts fall on absolute step numbers ((step + 1) % every == 0), and :meth:`state_dict` carries
    the usage seen since the last restart, so a run resumed from a checkpoint at any step restarts the
    same codes as one that never stopped.
    """

    def __init__(self, vq: torch.nn.Module, every: int) -> None:
        if every < 1:
            raise ValueError(f"codebook restart interval must be >= 1, got {every}")
        self.vq, self.every, self._z = vq, int(every), None
        self._handle = vq.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        if module.training:
            self._z = args[0].detach()

    @torch.no_grad()
    def __call__(self, step: int) -> int:
        """Call after optimizer step ``step`` (0-based); returns the number of codes restarted."""
        if (step + 1) % self.every or self._z is None:
            return 0
        vq = self.vq
        dead = (~vq.usage.any(0)).nonzero()[:, 0]
        if dead.numel():
            z = self._z.float()
            if vq.use_l2_norm:
                z = torch.nn.functional.normalize(z, dim=-1)
            b, length, _ = z.shape
            sizes = vq.schedule.sizes.to(dead.device)
            first = torch.searchsorted(sizes, dead, right=True)  # first position with K(i) > k
            pos = first + (torch.rand(dead.shape) * (length - first)).long()
            rows = torch.randint(0, b, dead.shape)
            vq.embedding.weight.data[dead] = z[rows, pos.clamp(max=length - 1)].to(vq.embedding.weight.dtype)
        vq.reset_usage()
        return int(dead.numel())

    def state_dict(self) -> dict:
        """The usage seen since the last restart (bool [L, K_max]), for checkpoints."""
        return {"usage": self.vq.usage.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.vq.reset_usage()
        usage = state.get("usage")
        if usage is not None:
            self.vq.usage.copy_(usage.to(self.vq.usage.device))  # ``usage`` is the quantizer's own tensor

    def remove(self) -> None:
        self._handle.remove()
