"""Helpers for the tests that start 2 gloo (CPU) processes with torch.multiprocessing.

:func:`spawn_gloo` runs a test's body on every rank between ``init_process_group`` and
``destroy_process_group``. The body runs in its own frame, and the garbage collector runs before the
group is destroyed: a ``DistributedDataParallel`` module sits in reference cycles (measured: with the
collector off it is still alive after the body returns) and holds the process group; left to the
interpreter's finalisation, gloo's teardown can abort the rank. That is the likely cause of the one
CI failure seen ("terminate called without an active exception"), not reproduced here in 37 runs.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
from typing import Any, Callable


def spawn_gloo(body: Callable[..., None], world: int, out_dir: str, *args: Any) -> None:
    """Run ``body(rank, world, out_dir, *args)`` on ``world`` spawned gloo ranks; raise if one fails.
    ``body`` must be a module-level function (it is pickled by name)."""
    import torch.multiprocessing as mp

    mp.start_processes(_gloo_rank, args=(body, world, out_dir, *args), nprocs=world, join=True,
                       start_method="spawn")


def _gloo_rank(rank: int, body: Callable[..., None], world: int, out_dir: str, *args: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        body(rank, world, out_dir, *args)
        gc.collect()  # modules in reference cycles (DDP) release the process group here, not at exit
        dist.barrier()  # no rank tears its sockets down while the other is still in a collective
    finally:
        dist.destroy_process_group()


def usage_worker(rank: int, world_size: int, out_dir: str) -> None:
    """Usage statistics under gloo: rank 0 reads its own alone (``sync=False``), then both sync."""
    import torch
    import torch.distributed as dist

    from vcq_plugin.registry import create_quantizer

    q = create_quantizer("vcq_cosine", dim=4, k_max=64, seq_len=8)
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees different codes
    idx = (torch.rand(3, 8, generator=g) * q.schedule.sizes).long()
    q.update_usage(idx)
    result = {"indices": idx.tolist()}
    if rank == 0:  # rank 1 is already waiting in the barrier below: no collective may happen here
        result["local_alone"] = q.codes_used(sync=False).tolist()
        q.position_usage(sync=False)
        q.used_codes(3, sync=False)
    dist.barrier()
    result["synced"] = q.codes_used(sync=True).tolist()
    result["synced_used3"] = q.used_codes(3, sync=True).nonzero()[:, 0].tolist()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
