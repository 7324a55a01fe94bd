"""vcq_plugin against bytedance/1d-tokenizer's own TiTok / RAR code (third_party/1d-tokenizer).

Skipped unless the submodule is checked out. The checks run in a separate interpreter (this file
executed as a script, cwd = the host root) because the host's top-level ``utils`` / ``modeling``
packages must not meet LlamaGen's in one process. Tiny models on CPU: TiTok "small" ViT on 32x32
images, a 2-layer RAR. Losses are the host's own (ReconstructionLoss_Stage1, ARLoss), which need
no downloaded weights.
"""
from __future__ import annotations

import sys
from pathlib import Path


HOST = "1d-tokenizer"
CHECKS = ("titok_upstream_unchanged", "titok_vcq", "titok_state_dict_roundtrip", "rar_upstream_unchanged",
          "rar_aware", "drift", "drift_in_relied_on_code")


# ====================================================================== pytest side
if __name__ != "__main__":
    from conftest import host_check_tests

    HOST_CHECKS = (HOST, CHECKS)  # started early by conftest.pytest_collection_finish
    pytestmark, results, test_host_check = host_check_tests(HOST, Path(__file__), CHECKS)


# ====================================================================== host side (subprocess)
def _titok_config(**vq):
    from omegaconf import OmegaConf

    cfg = {
        "model": {"vq_model": {"codebook_size": 64, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
                               "vit_enc_model_size": "small", "vit_dec_model_size": "small",
                               "vit_enc_patch_size": 16, "vit_dec_patch_size": 16, "num_latent_tokens": 8,
                               "finetune_decoder": False, **vq}},
        "dataset": {"preprocessing": {"crop_size": 32}},
        "losses": {"quantizer_weight": 1.0},
    }
    return OmegaConf.create(cfg)


def _rar_config(vq=None, generator=None):
    from omegaconf import OmegaConf

    cfg = {
        "model": {
            "vq_model": {"codebook_size": 64, "num_latent_tokens": 16, "token_size": 12, **(vq or {})},
            "generator": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 64, "dropout": 0.0, "attn_drop": 0.0, "image_seq_len": 16,
                          "condition_num_classes": 10, "class_label_dropout": 0.1, **(generator or {})},
        }
    }
    return OmegaConf.create(cfg)


VCQ = {"quantizer": "vcq_cosine", "vcq": {"k_min": 2}}
_MODELS = {}  # models shared between checks (a TiTok "small" takes a while to build on CPU)


def _images(n=2, seed=0):
    import torch

    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _titok(cfg, seed):
    import torch
    from modeling.titok import TiTok

    torch.manual_seed(seed)
    return TiTok(cfg)


def _run_titok(model):
    import torch

    model.eval()
    with torch.no_grad():
        decoded, rd = model(_images())
    return decoded, rd


def check_titok_upstream_unchanged():
    import torch
    import vcq_plugin

    vcq_plugin.unregister()
    a = _titok(_titok_config(), 0)
    out_a, rd_a = _run_titok(a)
    hooked = vcq_plugin.register(hosts=["1d-tokenizer"])
    assert hooked == {"1d-tokenizer": ["modeling.titok.TiTok.__init__", "modeling.rar.RAR.generate",
                                       "data.PretokenizedWebDataset"]}, hooked
    # utils.train_utils' import line; the pinned data/__init__.py lacks the last name, the hook adds it
    from data import PretoeknizedDataSetJSONL, PretokenizedWebDataset, SimpleImageDataset  # noqa: F401
    from data.webdataset_reader import PretokenizedWebDataset as upstream_class

    assert issubclass(PretokenizedWebDataset, upstream_class)
    b = _titok(_titok_config(), 0)
    out_b, rd_b = _run_titok(b)
    from modeling.quantizer.quantizer import VectorQuantizer

    assert type(b.quantize) is VectorQuantizer
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(out_a, out_b)
    for k in rd_a:
        assert torch.equal(rd_a[k], rd_b[k]), k
    _MODELS["plain_titok"] = a
    restored = vcq_plugin.unregister()
    import modeling.titok

    assert sorted(restored) == sorted(hooked["1d-tokenizer"])
    assert not hasattr(modeling.titok.TiTok.__init__, "__vcq_original__")
    import data

    assert not hasattr(data, "PretokenizedWebDataset")


def check_titok_vcq():
    import torch
    import vcq_plugin
    from modeling.modules.losses import ReconstructionLoss_Stage1
    from vcq_plugin.schedule import CodebookSchedule

    vcq_plugin.register(hosts=["1d-tokenizer"])
    cfg = _titok_config(**VCQ)
    model = _titok(cfg, 0)
    q = model.quantize
    assert isinstance(q, vcq_plugin.VariableCodebookQuantizer)
    sizes = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=8).sizes
    assert torch.equal(q.schedule.sizes, sizes)
    assert q.commitment_cost == 0.25 and q.use_l2_norm is True
    x = _images(2)

    model.eval()
    with torch.no_grad():
        z_q, rd = model.encode(x)
        assert z_q.shape == (2, 12, 1, 8), z_q.shape
        assert set(rd) >= {"quantizer_loss", "commitment_loss", "codebook_loss", "min_encoding_indices"}
        ids = rd["min_encoding_indices"]
        assert ids.shape == (2, 1, 8) and ids.dtype == torch.long
        assert bool((ids[:, 0] < sizes).all())
        flat = q.get_codebook_entry(ids.reshape(-1))
        assert flat.shape == (16, 12)
        torch.testing.assert_close(flat.view(2, 8, 12).permute(0, 2, 1).unsqueeze(2), z_q, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.decode_tokens(ids), model.decode(z_q), atol=1e-4, rtol=1e-4)
        soft = torch.nn.functional.one_hot(ids.reshape(-1), 64).float()
        torch.testing.assert_close(q.get_codebook_entry(soft), flat)

    # a few optimizer steps through the host's own stage-1 loss (proxy codes of a 2x2 grid)
    model.train()
    loss_fn = ReconstructionLoss_Stage1(cfg)
    target = torch.randint(0, 1024, (2, 2, 2), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = q.embedding.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        decoded, rd = model(x)
        loss, logs = loss_fn(target, decoded, rd)
        loss.backward()
        assert q.embedding.weight.grad is not None and float(q.embedding.weight.grad.abs().sum()) > 0
        opt.step()
        assert torch.isfinite(loss) and float(logs["quantizer_loss"]) > 0
        assert bool((rd["min_encoding_indices"][:, 0] < sizes).all())
    assert not torch.equal(before, q.embedding.weight)
    _MODELS["vcq_titok"] = model
    vcq_plugin.unregister()


def check_titok_state_dict_roundtrip():
    import torch
    from modeling.quantizer.quantizer import VectorQuantizer

    patched, plain = _MODELS["vcq_titok"], _MODELS["plain_titok"]  # VCQ TiTok / unpatched upstream TiTok
    assert type(plain.quantize) is VectorQuantizer
    sd = {k: v.clone() for k, v in patched.state_dict().items()}
    plain.load_state_dict(sd, strict=True)  # patched -> unpatched
    sd_plain = plain.state_dict()
    assert sd_plain.keys() == sd.keys() and all(torch.equal(sd_plain[k], sd[k]) for k in sd)
    with torch.no_grad():
        for p in patched.parameters():
            p.zero_()
    patched.load_state_dict(sd_plain, strict=True)  # and back
    sd_back = patched.state_dict()
    assert all(torch.equal(sd_back[k], sd[k]) for k in sd)


def _rar(cfg, seed):
    import torch
    from modeling.rar import RAR

    torch.manual_seed(seed)
    return RAR(cfg).eval()


def _generate(model, seed, **kw):
    import torch

    cond = torch.tensor([1, 3, 5])
    torch.manual_seed(seed)
    args = dict(guidance_scale=4.0, randomize_temperature=1.0, guidance_scale_pow=1.0)
    args.update(kw)
    return model.generate(cond, **args)


def check_rar_upstream_unchanged():
    import torch
    import vcq_plugin

    vcq_plugin.unregister()
    cfg = _rar_config()
    a = _generate(_rar(cfg, 0), 7)
    a0 = _generate(_rar(cfg, 0), 7, guidance_scale=0.0)
    vcq_plugin.register(hosts=["1d-tokenizer"])
    b = _generate(_rar(cfg, 0), 7)
    b0 = _generate(_rar(cfg, 0), 7, guidance_scale=0.0)
    assert torch.equal(a, b) and torch.equal(a0, b0)
    # and the upstream sampler does produce tokens a VCQ schedule would forbid (the mask matters)
    from vcq_plugin.schedule import CodebookSchedule

    sizes = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=16).sizes
    assert bool((a >= sizes).any())
    vcq_plugin.unregister()


def check_rar_aware():
    import torch
    import vcq_plugin
    from modeling.modules.losses import ARLoss
    from vcq_plugin.sampler import AwareCFGSampler
    from vcq_plugin.schedule import CodebookSchedule

    vcq_plugin.register(hosts=["1d-tokenizer"])
    cfg = _rar_config(vq=VCQ, generator={"guidance": "aware"})
    sizes = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=16).sizes
    model = _rar(cfg, 0)

    # host training loss on schedule-valid tokens, a few steps
    model.train()
    loss_fn = ARLoss(cfg)
    g = torch.Generator().manual_seed(0)
    tokens = (torch.rand(8, 16, generator=g) * sizes.float()).long()
    labels = torch.randint(0, 10, (8,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        cond = model.preprocess_condition(labels, cond_drop_prob=0.1)
        logits, lab = model(tokens, cond, return_labels=True)
        loss, _ = loss_fn(logits, lab)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    model.eval()

    for scale in (4.0, 0.0):
        ids = _generate(model, 3, guidance_scale=scale)
        assert ids.shape == (3, 16)
        assert bool((ids < sizes).all()), (ids, sizes)
    assert not model.blocks[0].attn.kv_cache and model.blocks[0].attn.k_cache is None

    calls = []

    class Recording(AwareCFGSampler):
        def process(self, position, cond_logits, uncond_logits=None):
            calls.append((position, uncond_logits is not None, cond_logits.shape))
            return super().process(position, cond_logits, uncond_logits)

    rec = Recording(CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=16), guidance_scale=4.0)
    ids = _generate(model, 3, sampler=rec)
    assert [c[0] for c in calls] == list(range(16)) and all(c[1] for c in calls)
    assert all(c[2] == (3, 64) for c in calls)
    assert bool((ids < sizes).all())

    # the sampler built from the config follows Eq. 4 (aware) with this schedule
    from vcq_plugin.patches.titok_1d import sampler_from_config

    s = sampler_from_config(cfg, 4.0, 1.0, 1.0)
    ref = AwareCFGSampler(CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=16),
                          guidance_scale=4.0, guidance_power=1.0, guidance="aware")
    assert torch.equal(s.guidance_scales, ref.guidance_scales)
    assert s.guidance_scales[0] == 1.0 and s.guidance_scales[-1] == 4.0
    vcq_plugin.unregister()


def check_drift():
    import modeling.rar
    import vcq_plugin
    from _host_checks import strict_register_error

    vcq_plugin.unregister()
    original = modeling.rar.RAR

    class RAR(original):  # a drifted upstream: generate replaced by a different function
        def generate(self, condition, *args, **kwargs):
            return condition

    modeling.rar.RAR = RAR
    try:
        msg = strict_register_error("1d-tokenizer")
        assert "modeling.rar.RAR" in msg and "942a96fbdd873780179d1b78d5462911528bf8c8" in msg, msg
        assert "git submodule update --init third_party/1d-tokenizer" in msg and "strict=False" in msg, msg
        import modeling.titok

        assert vcq_plugin.hooks.registered() == []
        assert not hasattr(modeling.titok.TiTok.__init__, "__vcq_original__")  # nothing patched
        assert "generate" in RAR.__dict__ and not hasattr(RAR.generate, "__vcq_original__")
        import warnings

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            vcq_plugin.register(hosts=["1d-tokenizer"], strict=False)
        assert any("modeling.rar.RAR" in str(x.message) for x in w)
        assert RAR.generate.__vcq_original__.__qualname__.endswith("RAR.generate")
        vcq_plugin.unregister()
        assert "generate" in RAR.__dict__ and not hasattr(RAR.generate, "__vcq_original__")
    finally:
        modeling.rar.RAR = original


def check_drift_in_relied_on_code():
    """TiTokVCQ speaks the contract of upstream's VectorQuantizer: an edit there (not in TiTok, the
    class whose __init__ is hooked) makes register() refuse, naming it."""
    import modeling.quantizer.quantizer as quantizer
    import vcq_plugin
    from _host_checks import edited_copy, strict_register_error

    vcq_plugin.unregister()
    original = quantizer.VectorQuantizer
    quantizer.VectorQuantizer = edited_copy(quantizer, "VectorQuantizer", "min_encoding_indices", "min_encoding_ids")
    try:
        msg = strict_register_error("1d-tokenizer")
        assert "modeling.quantizer.quantizer.VectorQuantizer" in msg and "cannot hook modeling.titok.TiTok.__init__" in msg, msg
        assert vcq_plugin.hooks.registered() == []
    finally:
        quantizer.VectorQuantizer = original


def _main(names):
    from _host_checks import run_checks  # tests/ is sys.path[0] when this file runs as a script

    run_checks(globals(), names, ("modeling.titok", "modeling.rar", "modeling.modules.losses"), extra="titok")


if __name__ == "__main__":
    _main(sys.argv[1:] or CHECKS)
