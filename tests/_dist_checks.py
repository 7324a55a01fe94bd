"""Worker for the 2-process usage-statistics test (started with torch.multiprocessing, gloo)."""
from __future__ import annotations

import datetime
import json
import os


def usage_worker(rank: int, world_size: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from vcq_plugin.registry import create_quantizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
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
    finally:
        dist.destroy_process_group()
