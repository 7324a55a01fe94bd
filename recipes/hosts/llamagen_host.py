"""Host-side steps of ``recipes/run_llamagen_vcq.py`` (each runs in its own interpreter, started by
:mod:`recipes.hosts.llamagen` with that host's root first on ``PYTHONPATH``)::

    python -m recipes.hosts.llamagen_host extract  CONFIG   # 1d-tokenizer process
    python -m recipes.hosts.llamagen_host generate CONFIG   # LlamaGen process
    python -m recipes.hosts.llamagen_host decode   CONFIG   # 1d-tokenizer process
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from .llamagen import host_root, tokenizer_config


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _schedule(cfg):
    from vcq_plugin.patches.titok_1d import schedule_from_config

    return schedule_from_config(tokenizer_config(cfg))


# ---------------------------------------------------------------------- 1d-tokenizer side
def load_titok(cfg) -> torch.nn.Module:
    """The VCQ TiTok of the tokenizer recipe (host 1d-tokenizer), weights from tokenizer.weights."""
    import vcq_plugin

    vcq_plugin.register(hosts=["1d-tokenizer"])
    from modeling.titok import TiTok

    tok_cfg = tokenizer_config(cfg)
    model = TiTok(tok_cfg)
    weights = Path(str(cfg.tokenizer.weights))
    if not weights.is_file():
        raise FileNotFoundError(f"tokenizer.weights {str(weights)!r} does not exist (train it with "
                                "recipes/run_titok_vcq.py --config <tokenizer config>)")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu")
        state = state.get("model", state) if isinstance(state, dict) else state
    model.load_state_dict(state)
    return model.eval().to(_device())


def _llamagen_center_crop():
    """LlamaGen's ``dataset.augmentation.center_crop_arr``, loaded by file path (no package import,
    so LlamaGen's top-level packages never meet 1d-tokenizer's)."""
    path = host_root("llamagen") / "dataset" / "augmentation.py"
    spec = importlib.util.spec_from_file_location("_llamagen_augmentation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.center_crop_arr


@torch.no_grad()
def extract(cfg) -> None:
    """Ten-crop (+ flips) codes of every image of ``data.path`` in LlamaGen's code layout."""
    from torchvision import datasets, transforms

    model = load_titok(cfg)
    size = int(cfg.data.image_size)
    crop = int(size * float(cfg.data.crop_range))
    center_crop_arr = _llamagen_center_crop()
    tf = transforms.Compose([
        transforms.Lambda(lambda im: center_crop_arr(im, crop)),
        transforms.TenCrop(size),  # 4 corners + centre, and the same 5 flipped
        transforms.Lambda(lambda crops: torch.stack([transforms.ToTensor()(c) for c in crops])),
    ])
    ds = datasets.ImageFolder(str(cfg.data.path), transform=tf)
    out = Path(str(cfg.data.code_path))
    codes_dir, labels_dir = out / f"imagenet{size}_codes", out / f"imagenet{size}_labels"
    codes_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    sched = _schedule(cfg)
    sizes = sched.sizes.to(_device())
    loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False, num_workers=int(cfg.data.get("num_workers", 8)))
    for i, (x, y) in enumerate(tqdm(loader, desc="extract codes")):
        if (codes_dir / f"{i}.npy").is_file() and (labels_dir / f"{i}.npy").is_file():
            continue  # resumable
        views = x.flatten(0, 1).to(_device())  # (10, 3, H, W) in [0, 1], as TiTok expects
        _, info = model.encode(views)
        idx = info["min_encoding_indices"].reshape(1, views.shape[0], -1)
        if bool((idx >= sizes).any()):
            raise RuntimeError(f"image {i}: a code >= K(i); the tokenizer is not the configured VCQ schedule")
        _save_npy(codes_dir / f"{i}.npy", idx.cpu().numpy().astype(np.int64))
        _save_npy(labels_dir / f"{i}.npy", y.numpy().astype(np.int64))
    print(f"codes: {codes_dir} ; labels: {labels_dir}")


def _save_npy(path: Path, arr: np.ndarray) -> None:
    from vcq_plugin._io import atomic_write_npy

    atomic_write_npy(path, arr)


@torch.no_grad()
def decode(cfg) -> None:
    """tokens.npy of the generate step -> PNGs and an ADM-layout .npz."""
    from vcq_plugin._io import atomic_write
    from vcq_plugin.metrics.samples import AdmSampleWriter
    from PIL import Image

    model = load_titok(cfg)
    run = Path(str(cfg.run_dir)) / "samples"
    tokens = np.load(run / "tokens.npy", mmap_mode="r")
    labels = np.load(run / "labels.npy")
    png_dir = run / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    bs = int(cfg.sampling.batch_size)
    with AdmSampleWriter(run / "samples.npz", num_samples=tokens.shape[0], image_size=int(cfg.data.image_size)) as w:
        for i in tqdm(range(0, tokens.shape[0], bs), desc="decode"):
            t = torch.from_numpy(np.asarray(tokens[i:i + bs])).long().to(_device())
            img = model.decode_tokens(t).clamp(0, 1).float().cpu()
            w.add(img, labels[i:i + bs])
            if i < int(cfg.sampling.get("num_png", 1000)):
                for j, im in enumerate(img):
                    arr = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                    png = Image.fromarray(arr)
                    atomic_write(png_dir / f"{i + j:06d}.png", lambda f, png=png: png.save(f, format="PNG"))
    print(f"samples: {run / 'samples.npz'} ; PNGs: {png_dir}")


# ---------------------------------------------------------------------- LlamaGen side
@torch.no_grad()
def generate(cfg) -> None:
    """Class-conditional tokens with LlamaGen's generate() + the aware sampler (Table 7 preset)."""
    import vcq_plugin
    from vcq_plugin.registry import create_sampler

    vcq_plugin.register(hosts=["llamagen"])  # its GPT_models hook adds GPT-VCQ-XL (EXTRA_GPT_MODELS)
    from autoregressive.models.generate import generate as llamagen_generate
    from autoregressive.models.gpt import GPT_models

    s = cfg.sampling
    ckpt = torch.load(str(s.checkpoint), map_location="cpu", weights_only=False)
    a = ckpt["args"]
    latent = a.image_size // a.downsample_size
    model = GPT_models[a.gpt_model](vocab_size=a.vocab_size, block_size=latent ** 2, num_classes=a.num_classes,
                                    cls_token_num=a.cls_token_num, model_type=a.gpt_type).to(_device())
    model.load_state_dict(ckpt["ema"] if s.get("use_ema") and "ema" in ckpt else ckpt["model"])
    model.eval()
    sched = _schedule(cfg)
    overrides = {k: s[k] for k in ("guidance_scale", "guidance_power", "temperature", "top_k", "top_p") if s.get(k) is not None}
    sampler = create_sampler(str(s.preset), schedule=sched, **overrides)
    n, bs = int(s.num_samples), int(s.batch_size)
    num_classes = int(cfg.data.num_classes)
    labels = np.arange(n) % num_classes
    run = Path(str(cfg.run_dir)) / "samples"
    run.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(run / "tokens.partial.npy", mode="w+", dtype=np.int32, shape=(n, sched.seq_len))
    gen = torch.Generator(device=_device()).manual_seed(int(cfg.seed))
    for i in tqdm(range(0, n, bs), desc=f"generate ({s.preset})"):
        c = torch.from_numpy(labels[i:i + bs]).to(_device())
        toks = llamagen_generate(model, c, sched.seq_len, sampler=sampler, generator=gen)
        if bool((toks >= sched.sizes.to(toks.device)[None]).any()):
            raise RuntimeError("a sampled token is >= K(i): the sampler's mask failed")
        out[i:i + bs] = toks.cpu().numpy()
    out.flush()
    del out
    (run / "tokens.partial.npy").replace(run / "tokens.npy")
    _save_npy(run / "labels.npy", labels.astype(np.int64))
    from vcq_plugin._io import atomic_write_text

    atomic_write_text(run / "sampler.yaml", OmegaConf.to_yaml({"sampler": sampler.to_dict(), "preset": str(s.preset)}))
    print(f"tokens: {run / 'tokens.npy'} ({repr(sampler)})")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("extract", "generate", "decode"):
        print("usage: python -m recipes.hosts.llamagen_host {extract|generate|decode} CONFIG", file=sys.stderr)
        return 2
    cfg = OmegaConf.load(argv[1])
    {"extract": extract, "generate": generate, "decode": decode}[argv[0]](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
