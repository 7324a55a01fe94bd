"""Two processes (gloo, CPU) train a tiny tokenizer through DistributedDataParallel with a
VariableCodebookQuantizer: afterwards the codebook (all weights) and the usage statistics are
identical on both ranks, the synced statistics are the union of what each rank saw, and a rank's
own statistics (``sync=False``) are exactly its own tokens, read without a collective.

Each rank records the indices its forwards returned, independently of the quantizer's own
bookkeeping, so the test compares the statistics against that reference.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _dist_checks import spawn_gloo

from vcq_plugin.quantizer import VariableCodebookQuantizer
from vcq_plugin.schedule import CodebookSchedule

WORLD = 2
L, K_MAX, DIM, IN = 8, 32, 4, 6
STEPS, BATCH = 4, 3


class TinyTokenizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(IN, DIM)
        self.quantizer = VariableCodebookQuantizer(
            CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=K_MAX, seq_len=L), DIM)
        self.decoder = nn.Linear(DIM, IN)

    def forward(self, x: torch.Tensor):
        z_q, info = self.quantizer(self.encoder(x))
        return F.mse_loss(self.decoder(z_q), x) + info["loss"], info["indices"]


def _worker(rank: int, world: int, out_dir: str) -> None:
    torch.manual_seed(rank)  # different initial weights per rank: DDP must start them from rank 0's
    model = TinyTokenizer()
    with torch.no_grad():
        model.quantizer.embedding.weight.normal_()
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank trains on its own data
    seen = torch.zeros(L, K_MAX, dtype=torch.bool)
    positions = torch.arange(L).expand(BATCH, L)
    for _ in range(STEPS):
        loss, indices = ddp(torch.randn(BATCH, L, IN, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen[positions, indices] = True
    q = model.quantizer
    local = [q.used_codes(i, sync=False).clone() for i in range(L)]
    if rank == 0:  # rank-local reads are not collectives: extra ones on one rank must not desync the next
        for i in range(L):
            q.used_codes(i, sync=False)
    synced = [q.used_codes(i).clone() for i in range(L)]  # collectives: every rank calls them
    result = dict(seen=seen, local=local, synced=synced, codes_used=q.codes_used().clone(),
                  position_usage=q.position_usage().clone(), sizes=q.schedule.sizes.clone(),
                  state={k: v.detach().clone() for k, v in model.state_dict().items()})
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def test_ddp_two_ranks_agree_and_usage_is_the_union(tmp_path):
    spawn_gloo(_worker, WORLD, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    sizes = r0["sizes"]

    # identical weights on both ranks (the codebook included) after DDP steps
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    torch.manual_seed(0)
    assert not torch.equal(r0["state"]["quantizer.embedding.weight"], TinyTokenizer().quantizer.embedding.weight), \
        "the codebook did not train"

    union = r0["seen"] | r1["seen"]
    for r in (r0, r1):
        assert not r["seen"][torch.arange(K_MAX)[None, :] >= sizes[:, None]].any()  # every index < K(i)
        assert not torch.equal(r["seen"], union)  # the ranks saw different codes: the union is a real test
        for i in range(L):
            k = int(sizes[i])
            assert torch.equal(r["local"][i], r["seen"][i, :k]), f"rank-local usage at position {i}"
            assert torch.equal(r["synced"][i], union[i, :k]), f"synced usage at position {i}"
        assert torch.equal(r["codes_used"], union.sum(1))
        assert torch.allclose(r["position_usage"], union.sum(1).double().div(sizes.double()).float())
