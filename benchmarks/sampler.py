"""Per-token cost of AwareCFGSampler vs LlamaGen-style scalar CFG sampling, and its share of a decode step.

    python benchmarks/sampler.py [--threads 1] [--reps 20] [--rounds 5] [--model-steps 5] [--no-model]

Part 1 times, at vocab 16384 and batch 32 / 64 on CPU, ``process()`` + ``sample_logits()`` of the
paper's VCQ B-B sampler (aware CFG, w = 10, p = 1.5) against the plain op LlamaGen uses
(``uncond + (cond - uncond) * scale``, ``/ temperature``, softmax, multinomial). Part 2 builds a
small gpt-fast style Llama (12 layers, width 768, 12 heads, SwiGLU, RoPE, KV cache, vocab 16384),
runs one cached decode step for the cond + uncond batch (2B rows) and reports what share of the
full step ``process()`` takes. All numbers come from one process, measurements interleaved,
medians reported; acceptance: process() share <= 2 % at batch 32, sampler <= 1.5x the plain op.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from vcq_plugin.registry import create_sampler

VOCAB = 16384


# ---------------------------------------------------------------------- a tiny gpt-fast style Llama
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D); cos/sin (T, D/2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None], sin[None, :, None]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def setup_cache(self, batch: int, max_len: int) -> None:
        shape = (batch, self.heads, max_len, self.head_dim)
        self.k_cache, self.v_cache = torch.zeros(shape), torch.zeros(shape)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: int) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        self.k_cache[:, :, pos : pos + t] = k
        self.v_cache[:, :, pos : pos + t] = v
        k, v = self.k_cache[:, :, : pos + t], self.v_cache[:, :, : pos + t]
        if t > 1:
            mask = torch.ones(t, pos + t, dtype=torch.bool).tril(pos)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(dim), Attention(dim, heads)
        self.ffn_norm = RMSNorm(dim)
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, cos, sin, pos):
        x = x + self.attn(self.attn_norm(x), cos, sin, pos)
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class TinyLlama(nn.Module):
    """Llama-style decoder with a KV cache: AR-B size by default (12 x 768, 12 heads)."""

    def __init__(self, vocab: int = VOCAB, dim: int = 768, layers: int = 12, heads: int = 12, max_len: int = 257) -> None:
        super().__init__()
        hidden = 256 * math.ceil(int(8 * dim / 3) / 256)
        self.tok = nn.Embedding(vocab + 1000, dim)  # + class tokens, as a c2i host appends them
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))
        self.norm, self.head = RMSNorm(dim), nn.Linear(dim, vocab, bias=False)
        hd = dim // heads
        freqs = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(max_len).float(), freqs)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.max_len = max_len

    def setup_cache(self, batch: int) -> None:
        for blk in self.blocks:
            blk.attn.setup_cache(batch, self.max_len)

    @torch.no_grad()
    def forward(self, idx: torch.Tensor, pos: int) -> torch.Tensor:
        """idx (B, T) tokens at positions pos..pos+T-1 -> last-position logits (B, V)."""
        t = idx.shape[1]
        x = self.tok(idx)
        cos, sin = self.cos[pos : pos + t], self.sin[pos : pos + t]
        for blk in self.blocks:
            x = blk(x, cos, sin, pos)
        return self.head(self.norm(x[:, -1]))


# ---------------------------------------------------------------------- timing
def _time(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def plain_cfg_sample(cond, uncond, scale: float, temperature: float, gen) -> torch.Tensor:
    """LlamaGen / RAR's way: scalar CFG mix, temperature, softmax, multinomial (no masking)."""
    logits = uncond + (cond - uncond) * scale
    logits = logits / temperature
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=gen)


def plain_cfg_mix(cond, uncond, scale: float, temperature: float) -> torch.Tensor:
    return (uncond + (cond - uncond) * scale) / temperature


def bench_sampler(batch: int, position: int, reps: int, rounds: int, temperature: float) -> dict:
    sampler = create_sampler("vcq_bb", temperature=temperature)
    scale, k = sampler.scale_at(position), sampler.schedule.size_at(position)
    gen = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(batch, VOCAB), torch.randn(batch, VOCAB)
    ours, plain, ours_mix, plain_mix = [], [], [], []
    for _ in range(rounds):  # interleaved so that machine load hits both alike
        ours.append(_time(lambda: sampler.sample_logits(sampler.process(position, cond, uncond), gen), reps))
        plain.append(_time(lambda: plain_cfg_sample(cond, uncond, scale, temperature, gen), reps))
        ours_mix.append(_time(lambda: sampler.process(position, cond, uncond), reps))
        plain_mix.append(_time(lambda: plain_cfg_mix(cond, uncond, scale, temperature), reps))
    med = statistics.median
    return dict(batch=batch, position=position, k=k, scale=scale, ours=med(ours), plain=med(plain),
                ours_mix=med(ours_mix), plain_mix=med(plain_mix))


def bench_model(batch: int, steps: int, reps: int, temperature: float, prefix: int = 128) -> dict:
    torch.manual_seed(0)
    model = TinyLlama().eval()
    n_params = sum(p.numel() for p in model.parameters())
    sampler = create_sampler("vcq_bb", temperature=temperature)
    gen = torch.Generator().manual_seed(0)
    rows = 2 * batch  # cond + uncond in one forward, as RAR / LlamaGen do
    model.setup_cache(rows)
    for blk in model.blocks:  # a filled cache of `prefix` entries (values do not matter for timing)
        blk.attn.k_cache[:, :, :prefix].normal_()
        blk.attn.v_cache[:, :, :prefix].normal_()
    logits = model(torch.randint(0, VOCAB, (rows, 1)), prefix - 1)
    fwd, proc, samp, plain = [], [], [], []
    pos = prefix
    for _ in range(steps):
        position = pos - 1  # image position being sampled (the class token sits at 0)
        cond, uncond = logits[:batch], logits[batch:]
        nxt = sampler.sample_logits(sampler.process(position, cond, uncond), gen)
        t0 = time.perf_counter()
        logits = model(torch.cat([nxt, nxt])[:, None], pos)
        fwd.append(time.perf_counter() - t0)
        pos += 1
        # sampler op timings at this step, repeated for resolution
        proc.append(_time(lambda: sampler.process(position, cond, uncond), reps))
        samp.append(_time(lambda: sampler.sample_logits(sampler.process(position, cond, uncond), gen), reps))
        plain.append(_time(lambda: plain_cfg_sample(cond, uncond, sampler.scale_at(position), temperature, gen), reps))
    med = statistics.median
    return dict(batch=batch, params=n_params, fwd=med(fwd), proc=med(proc), samp=med(samp), plain=med(plain))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = steadiest on a shared box)")
    ap.add_argument("--reps", type=int, default=20, help="calls per timing")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--model-steps", type=int, default=5, help="decode steps of the small model")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--no-model", action="store_true", help="skip the decoding-step part")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), vocab {VOCAB}, "
          f"sampler vcq_bb (aware CFG w=10 p=1.5), temperature {args.temperature}")

    print("\n| batch | position | K(i) | scale | process()+sample_logits ms | plain CFG+softmax+multinomial ms | ratio | process() ms | plain mix ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in (32, 64):
        for position in (40, 255):
            r = bench_sampler(batch, position, args.reps, args.rounds, args.temperature)
            print(f"| {batch} | {position} | {r['k']} | {r['scale']:.3f} | {r['ours'] * 1e3:.3f} | {r['plain'] * 1e3:.3f} | "
                  f"{r['ours'] / r['plain']:.2f}x | {r['ours_mix'] * 1e3:.3f} | {r['plain_mix'] * 1e3:.3f} | "
                  f"{r['ours_mix'] / r['plain_mix']:.2f}x |")

    if not args.no_model:
        print("\n| batch (fwd rows) | model | decode fwd ms | process() ms | process()+sample ms | plain op ms | process() share of step | sampler extra vs plain, share of step |")
        print("|---|---|---|---|---|---|---|---|")
        for batch in (32, 64):
            r = bench_model(batch, args.model_steps, max(3, args.reps // 4), args.temperature)
            step = r["fwd"] + r["samp"]
            print(f"| {batch} ({2 * batch}) | {r['params'] / 1e6:.0f}M | {r['fwd'] * 1e3:.1f} | {r['proc'] * 1e3:.3f} | "
                  f"{r['samp'] * 1e3:.3f} | {r['plain'] * 1e3:.3f} | {100 * r['proc'] / step:.2f} % | "
                  f"{100 * (r['samp'] - r['plain']) / (r['fwd'] + r['plain']):+.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
