"""torch.compile (inductor, CPU) of VariableCodebookQuantizer: same indices, losses and gradients as
eager, in eval and in training mode.

Graph breaks are allowed. torch._dynamo.explain finds them at (torch 2.14, CPU):

- ``quantizer.py`` ``_check_input``: the data-dependent input check on CPU (a ``Tensor.item()``;
  not reached in eval mode with torch 2.14, listed because other versions trace it);
- ``prefix_search.py`` ``tiled_prefix_argmin``: ``torch.get_num_threads()`` (CPU only: the row
  bands of the argmax follow the thread count);
- ``prefix_search.py`` ``_argmax_dim0``: ``scores.storage_offset()`` for the channels-last view of
  a tile (CPU only, once per tile).

On CUDA the last two are not reached (``benchmarks/gpu_check.py`` lists what explain finds there).
The test fails if a break appears anywhere else, so this list stays true.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vcq_plugin.prefix_search import brute_force_prefix_argmin
from vcq_plugin.quantizer import VariableCodebookQuantizer
from vcq_plugin.schedule import CodebookSchedule

pytestmark = [
    pytest.mark.slow,  # inductor compiles C++ on first use: 45 s on the shared 2-core machine under load
    pytest.mark.filterwarnings("ignore::UserWarning"),  # dynamo's notes on lru_cache and as_strided
    pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                       reason="torch.compile's inductor backend needs a C++ compiler on CPU (g++ / clang++)"),
]

ALLOWED_BREAKS = {("quantizer.py", "_check_input"), ("prefix_search.py", "tiled_prefix_argmin"),
                  ("prefix_search.py", "_argmax_dim0")}
L, K_MAX, DIM, BATCH = 16, 128, 8, 4


def _quantizer(seed: int = 0) -> VariableCodebookQuantizer:
    torch.manual_seed(seed)
    q = VariableCodebookQuantizer(CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=K_MAX, seq_len=L), DIM,
                                  chunk_size=4096)  # two tiles, so the tile loop is compiled too
    with torch.no_grad():
        q.embedding.weight.normal_()
    return q


def test_compiled_quantizer_matches_eager(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # a cold compile, every run
    torch._dynamo.reset()
    q = _quantizer()
    z = torch.randn(BATCH, L, DIM, generator=torch.Generator().manual_seed(1))

    explain = torch._dynamo.explain(q.eval())(z)
    breaks = {(Path(b.user_stack[-1].filename).name, b.user_stack[-1].name) for b in explain.break_reasons}
    assert breaks <= ALLOWED_BREAKS, f"new graph breaks {breaks - ALLOWED_BREAKS}: list them in this module's docstring"
    torch._dynamo.reset()

    compiled = torch.compile(q, dynamic=False)
    with torch.no_grad():
        eager_zq, eager_info = q(z)
        comp_zq, comp_info = compiled(z)
    assert torch.equal(comp_info["indices"], eager_info["indices"])
    assert torch.equal(comp_info["indices"], brute_force_prefix_argmin(z, q.embedding.weight, q.schedule.sizes))
    torch.testing.assert_close(comp_zq, eager_zq, rtol=0, atol=0)

    # training mode: forward + backward through the compiled module, against an eager twin
    twin = _quantizer()
    q.train()
    twin.train()
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out_c, info_c = compiled(za)
    out_e, info_e = twin(zb)
    (info_c["loss"] + out_c.square().mean()).backward()
    (info_e["loss"] + out_e.square().mean()).backward()
    assert torch.equal(info_c["indices"], info_e["indices"])
    torch.testing.assert_close(info_c["loss"], info_e["loss"])
    torch.testing.assert_close(za.grad, zb.grad)
    torch.testing.assert_close(q.embedding.weight.grad, twin.embedding.weight.grad)
    assert torch.equal(q.codes_used(), twin.codes_used())  # usage statistics updated by the compiled forward
