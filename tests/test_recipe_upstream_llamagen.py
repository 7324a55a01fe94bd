"""`recipes/run_llamagen_vcq.py extract` on CPU: a (random-weight) 1d-tokenizer TiTok with VCQ encodes
an ImageFolder with LlamaGen's ten-crop + flip into LlamaGen's code layout. The GPU stages
(train, sample) refuse without CUDA (tests/test_recipe_hosts.py).

Skipped unless both host submodules are checked out.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TITOK = REPO / "third_party" / "1d-tokenizer"
LLAMAGEN = REPO / "third_party" / "LlamaGen"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.upstream,
    pytest.mark.skipif(not (TITOK / "modeling" / "titok.py").is_file() or
                       not (LLAMAGEN / "dataset" / "augmentation.py").is_file(),
                       reason="needs third_party/1d-tokenizer and third_party/LlamaGen (git submodule update --init)"),
]

TOKENIZER_YAML = """
host: 1d-tokenizer
model:
  vq_model:
    quantizer: vcq_cosine
    vcq: {k_min: 2}
    codebook_size: 64
    token_size: 12
    use_l2_norm: true
    commitment_cost: 0.25
    vit_enc_model_size: small
    vit_dec_model_size: small
    vit_enc_patch_size: 16
    vit_dec_patch_size: 16
    num_latent_tokens: 4
    finetune_decoder: false
dataset:
  preprocessing: {crop_size: 32}
"""

RANDOM_TITOK = """
import sys, torch
from omegaconf import OmegaConf
sys.path.insert(0, sys.argv[1])
import vcq_plugin
vcq_plugin.register(hosts=["1d-tokenizer"])
from modeling.titok import TiTok
torch.manual_seed(0)
m = TiTok(OmegaConf.load(sys.argv[2]))
assert type(m.quantize).__name__ != "VectorQuantizer", type(m.quantize)
torch.save(m.state_dict(), sys.argv[3])
"""


def test_extract_ten_crop_codes_in_llamagen_layout(tmp_path):
    from PIL import Image

    env = dict(os.environ, OMP_NUM_THREADS="1")
    tok_yaml = tmp_path / "tok.yaml"
    tok_yaml.write_text(TOKENIZER_YAML)
    weights = tmp_path / "titok.pt"
    subprocess.run([sys.executable, "-c", RANDOM_TITOK, str(TITOK), str(tok_yaml), str(weights)], check=True,
                   env=env, timeout=300)
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "images" / c / f"{i}.png")
    code_path = tmp_path / "codes_flip_ten_crop"
    cmd = [sys.executable, str(REPO / "recipes" / "run_llamagen_vcq.py"), "extract",
           "--config", str(REPO / "recipes" / "configs" / "llamagen_ar_b.yaml"),
           f"run_dir={tmp_path / 'run'}", f"tokenizer.config={tok_yaml}", f"tokenizer.weights={weights}",
           f"data.path={tmp_path / 'images'}", "data.image_size=32", "data.num_classes=2", "data.num_workers=0",
           f"data.code_path={code_path}", "gpt.vocab_size=64"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    codes_dir, labels_dir = code_path / "imagenet32_codes", code_path / "imagenet32_labels"
    assert sorted(p.name for p in codes_dir.iterdir()) == ["0.npy", "1.npy", "2.npy", "3.npy"]
    from vcq_plugin.schedule import CodebookSchedule

    sizes = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=4).sizes.numpy()
    for i in range(4):
        codes = np.load(codes_dir / f"{i}.npy")
        assert codes.shape == (1, 10, 4)  # LlamaGen's layout: (1, views, L), views = 5 crops + 5 flips
        assert (codes >= 0).all() and (codes < sizes).all()
        assert np.load(labels_dir / f"{i}.npy").tolist() == [i // 2]
