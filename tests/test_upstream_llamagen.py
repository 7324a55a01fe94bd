"""vcq_plugin against LlamaGen's own VQModel / GPT / generate() (third_party/LlamaGen).

Skipped unless the submodule is checked out. The checks run in a separate interpreter (this file
executed as a script, cwd = the host root) because LlamaGen's top-level ``utils`` package must not
meet 1d-tokenizer's in one process. Tiny models on CPU: a 2-level VQModel on 16x16 images (8x8
grid -> 64 positions is too slow, so ch_mult [1, 1, 1] gives a 4x4 grid), a 2-layer GPT.

The VQ training steps use LlamaGen's own ``VQLoss``; its LPIPS would download VGG weights, so
here (tests only, offline) the VGG is built with random weights and the LPIPS checkpoint load is
skipped. Real use keeps LlamaGen's loading code untouched.
"""
from __future__ import annotations

import sys
from pathlib import Path


HOST = "LlamaGen"
CHECKS = ("vq_upstream_unchanged", "vq_vcq", "vq_state_dict_roundtrip", "generate_upstream_unchanged",
          "generate_sampler", "masked_loss", "gpt_models", "drift", "drift_in_called_code")


# ====================================================================== pytest side
if __name__ != "__main__":
    from conftest import host_check_tests

    HOST_CHECKS = (HOST, CHECKS)  # started early by conftest.pytest_collection_finish
    pytestmark, results, test_host_check = host_check_tests(HOST, Path(__file__), CHECKS)


# ====================================================================== host side (subprocess)
K_MAX, GRID, IMAGE = 64, 4, 16
_MODELS = {}
VQ_ARGS = dict(codebook_size=K_MAX, codebook_embed_dim=8, encoder_ch_mult=[1, 1, 1], decoder_ch_mult=[1, 1, 1],
               z_channels=32)
VCQ_ARGS = dict(quantizer="vcq_cosine", vcq_k_min=2, vcq_image_size=IMAGE)


def _sizes():
    from vcq_plugin.schedule import CodebookSchedule

    return CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=K_MAX, seq_len=GRID * GRID).sizes


def _images(n=2, seed=0):
    import torch

    return torch.rand(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _vq(seed, **extra):
    import torch
    import tokenizer.tokenizer_image.vq_model as vq

    torch.manual_seed(seed)
    return vq.VQModel(vq.ModelArgs(**VQ_ARGS, **extra))


def check_vq_upstream_unchanged():
    import torch
    import vcq_plugin

    vcq_plugin.unregister()
    a = _vq(0).eval()
    x = _images()
    with torch.no_grad():
        quant_a, loss_a, info_a = a.encode(x)
        dec_a = a.decode(quant_a)
    hooked = vcq_plugin.register(hosts=["llamagen"])
    assert hooked["llamagen"][0] == "tokenizer.tokenizer_image.vq_model.ModelArgs", hooked
    b = _vq(0).eval()
    with torch.no_grad():
        quant_b, loss_b, info_b = b.encode(x)
        dec_b = b.decode(quant_b)
    from tokenizer.tokenizer_image.vq_model import VectorQuantizer

    assert type(b.quantize) is VectorQuantizer
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(quant_a, quant_b) and torch.equal(dec_a, dec_b) and torch.equal(info_a[2], info_b[2])
    assert loss_a[:3] == loss_b[:3] == (None, None, None)
    _MODELS["plain_vq"] = a
    vcq_plugin.unregister()


def _offline_lpips():
    """LlamaGen's LPIPS with a randomly initialised VGG and no checkpoint download (tests only)."""
    import types

    import torchvision
    import tokenizer.tokenizer_image.lpips as lp

    def vgg16(pretrained=False, **kwargs):
        return types.SimpleNamespace(features=torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]))

    lp.models = types.SimpleNamespace(vgg16=vgg16)
    lp.LPIPS.load_from_pretrained = lambda self, name="vgg_lpips": None


def check_vq_vcq():
    import torch
    import vcq_plugin

    vcq_plugin.register(hosts=["llamagen"])
    model = _vq(0, **VCQ_ARGS)
    q = model.quantize
    assert isinstance(q, vcq_plugin.VariableCodebookQuantizer)
    sizes = _sizes()
    assert torch.equal(q.schedule.sizes, sizes) and q.use_l2_norm is True and q.commitment_cost == 0.25
    x = _images()

    model.eval()
    with torch.no_grad():
        quant, emb_loss, info = model.encode(x)
        assert quant.shape == (2, 8, GRID, GRID)
        assert emb_loss[:3] == (None, None, None)
        ids = info[2]
        assert ids.shape == (2 * GRID * GRID,) and ids.dtype == torch.long
        # raster order: position = h * W + w
        ids_img = ids.view(2, GRID * GRID)
        assert bool((ids_img < sizes).all())
        z = model.quant_conv(model.encoder(x))
        ref = q.nearest_indices(z.permute(0, 2, 3, 1).reshape(2, GRID * GRID, 8))
        assert torch.equal(ids_img, ref)
        dec = model.decode_code(ids_img, shape=(2, 8, GRID, GRID))
        torch.testing.assert_close(dec, model.decode(quant), atol=1e-4, rtol=1e-4)

    # a few optimizer steps through LlamaGen's own VQLoss (generator side)
    _offline_lpips()
    from tokenizer.tokenizer_image.vq_loss import VQLoss

    loss_fn = VQLoss(disc_start=10_000, disc_dim=8, image_size=IMAGE, disc_num_layers=2)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = q.embedding.weight.detach().clone()
    for step in range(2):
        opt.zero_grad()
        recon, codebook_loss = model(x)
        assert len(codebook_loss) == 4 and float(codebook_loss[0]) > 0 and float(codebook_loss[1]) > 0
        assert 0 < codebook_loss[3] <= 1
        loss = loss_fn(codebook_loss, x, recon, optimizer_idx=0, global_step=step + 1,
                       last_layer=model.decoder.last_layer, log_every=10 ** 9)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert not torch.equal(before, q.embedding.weight)
    used = q.codebook_used[-2 * GRID * GRID:].long().view(2, GRID * GRID)
    assert bool((used < sizes).all())
    _MODELS["vcq_vq"] = model
    vcq_plugin.unregister()


def check_vq_state_dict_roundtrip():
    import torch
    from tokenizer.tokenizer_image.vq_model import VectorQuantizer

    patched, plain = _MODELS["vcq_vq"], _MODELS["plain_vq"]
    assert type(plain.quantize) is VectorQuantizer
    sd = {k: v.clone() for k, v in patched.state_dict().items()}
    plain.load_state_dict(sd, strict=True)
    sd_plain = plain.state_dict()
    assert sd_plain.keys() == sd.keys() and all(torch.equal(sd_plain[k], sd[k]) for k in sd)
    with torch.no_grad():
        for p in patched.parameters():
            p.zero_()
    patched.load_state_dict(sd_plain, strict=True)
    assert all(torch.equal(patched.state_dict()[k], sd[k]) for k in sd)


def _gpt(seed):
    import torch
    from autoregressive.models.gpt import ModelArgs, Transformer

    torch.manual_seed(seed)
    model = Transformer(ModelArgs(dim=32, n_layer=2, n_head=2, vocab_size=K_MAX, block_size=GRID * GRID,
                                  num_classes=10, cls_token_num=1, class_dropout_prob=0.1, model_type="c2i"))
    torch.nn.init.normal_(model.output.weight, std=0.5)  # upstream zero-inits the head: make logits matter
    return model


def _sample(model, seed, **kw):
    import torch
    from autoregressive.models import generate as gen

    torch.manual_seed(seed)
    return gen.generate(model, torch.tensor([1, 4, 7]), GRID * GRID, **kw)


def check_generate_upstream_unchanged():
    import torch
    import vcq_plugin

    vcq_plugin.unregister()
    model = _gpt(0).eval()
    kw = [dict(cfg_scale=4.0, temperature=1.0, top_k=0, top_p=1.0), dict(cfg_scale=1.0, temperature=0.9, top_k=20),
          dict(cfg_scale=2.0, cfg_interval=5, top_p=0.9)]
    before = [_sample(model, 5, **k) for k in kw]
    vcq_plugin.register(hosts=["llamagen"])
    after = [_sample(model, 5, **k) for k in kw]
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    assert any(bool((a >= _sizes()).any()) for a in before)  # unmasked sampling breaks the schedule
    vcq_plugin.unregister()


def check_generate_sampler():
    import torch
    import vcq_plugin
    from vcq_plugin.sampler import AwareCFGSampler
    from vcq_plugin.schedule import CodebookSchedule

    vcq_plugin.register(hosts=["llamagen"])
    sched = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=K_MAX, seq_len=GRID * GRID)
    sizes = sched.sizes
    model = _gpt(1).eval()
    calls = []

    class Recording(AwareCFGSampler):
        def process(self, position, cond_logits, uncond_logits=None):
            calls.append((position, cond_logits.shape, uncond_logits))
            return super().process(position, cond_logits, uncond_logits)

    s = Recording(sched, guidance_scale=4.0, guidance_power=1.0)
    ids = _sample(model, 0, sampler=s)
    assert ids.shape == (3, GRID * GRID) and bool((ids < sizes).all())
    assert [c[0] for c in calls] == list(range(GRID * GRID))  # prefill is position 0, then every token
    assert all(c[1] == (3, K_MAX) and c[2] is not None for c in calls)  # CFG batch doubling
    # the sampler's per-position scale is applied: position 0 (K=K_min) is unguided
    assert s.guidance_scales[0] == 1.0 and s.guidance_scales[-1] == 4.0

    calls.clear()
    ids = _sample(model, 0, sampler=Recording(sched, guidance_scale=4.0), cfg_interval=3)
    assert [c[2] is not None for c in calls] == [True] * (GRID * GRID)
    assert bool((ids < sizes).all())

    calls.clear()
    ids = _sample(model, 0, sampler=Recording(sched, guidance="none"), temperature=1.0)
    assert all(c[2] is None for c in calls) and bool((ids < sizes).all())  # no doubling without guidance

    # registry name + schedule; greedy; conflicting arguments are refused
    ids = _sample(model, 0, sampler="aware_cfg", vcq_schedule=sched, sample_logits=False)
    assert bool((ids < sizes).all())
    for bad in (dict(temperature=0.5), dict(cfg_scale=7.5)):
        try:
            _sample(model, 0, sampler=AwareCFGSampler(sched, guidance_scale=4.0), **bad)
        except ValueError as e:
            assert list(bad)[0] in str(e)
        else:
            raise AssertionError(f"{bad} was accepted together with a sampler")

    # same seed, same tokens; and the KV caches are still there afterwards (LlamaGen's behaviour)
    a = _sample(model, 11, sampler=AwareCFGSampler(sched, guidance_scale=3.0))
    b = _sample(model, 11, sampler=AwareCFGSampler(sched, guidance_scale=3.0))
    assert torch.equal(a, b)
    assert model.layers[0].attention.kv_cache is not None
    vcq_plugin.unregister()


def check_masked_loss():
    import torch
    import vcq_plugin
    from vcq_plugin.patches.llamagen import clear_kv_caches, disable_masked_loss, enable_masked_loss

    model = _gpt(2)
    sizes = _sizes()
    g = torch.Generator().manual_seed(0)
    tokens = (torch.rand(4, GRID * GRID, generator=g) * sizes.float()).long()
    cond = torch.randint(0, 10, (4,), generator=g)
    model.train()
    torch.manual_seed(0)
    _, plain_loss = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)
    schedule = {"kind": "cosine", "k_min": 2, "k_max": K_MAX, "seq_len": GRID * GRID}
    vcq_plugin.unregister()
    try:
        enable_masked_loss(model, schedule)
    except RuntimeError as e:  # the switch is a hook: it needs register()
        assert "vcq_plugin.register(hosts=['llamagen'])" in str(e), e
    else:
        raise AssertionError("enable_masked_loss worked without the LlamaGen hooks")
    vcq_plugin.register(hosts=["llamagen"])
    assert "autoregressive.models.gpt.Transformer.forward" in vcq_plugin.hooks.registered()
    torch.manual_seed(0)
    _, hooked_plain = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)
    assert torch.equal(hooked_plain, plain_loss)  # hooked but not enabled: upstream's loss, bit for bit
    enable_masked_loss(model, schedule)
    torch.manual_seed(0)
    logits, masked_loss = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)
    allowed = torch.arange(K_MAX)[None, :] < sizes[:, None]
    assert bool(torch.isinf(logits[:, ~allowed]).all()) and bool(torch.isfinite(logits[:, allowed]).all())
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, K_MAX), tokens.reshape(-1))
    torch.testing.assert_close(masked_loss, ref)
    assert float(masked_loss) < float(plain_loss)  # masking removes competitors
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        _, loss = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    # generate leaves KV caches; training forwards need them cleared
    model.eval()
    _sample(model, 0)
    clear_kv_caches(model)
    model.train()
    _, loss = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)
    assert torch.isfinite(loss)
    # off again: per model, and for every model by unregister()
    torch.manual_seed(0)
    masked = model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)[1]
    disable_masked_loss(model)
    torch.manual_seed(0)
    assert not torch.equal(model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)[1], masked)
    enable_masked_loss(model, schedule)
    vcq_plugin.unregister()
    from autoregressive.models.gpt import Transformer

    assert not hasattr(Transformer.forward, "__vcq_original__")
    torch.manual_seed(0)
    assert not torch.equal(model(cond_idx=cond, idx=tokens[:, :-1], targets=tokens)[1], masked)


def check_gpt_models():
    """The paper's 32-layer XL joins LlamaGen's GPT_models through a hook (undone by unregister)."""
    import vcq_plugin
    import autoregressive.models.gpt as gpt

    vcq_plugin.unregister()
    original = gpt.GPT_models
    assert "GPT-VCQ-XL" not in original
    vcq_plugin.register(hosts=["llamagen"])
    assert "GPT-VCQ-XL" in gpt.GPT_models and set(original) < set(gpt.GPT_models)
    assert all(gpt.GPT_models[k] is v for k, v in original.items())
    transformer = gpt.Transformer
    gpt.Transformer = lambda config: config  # the ModelArgs it is built from, without 684M parameters
    try:
        args = gpt.GPT_models["GPT-VCQ-XL"](vocab_size=K_MAX, block_size=GRID * GRID, num_classes=10)
    finally:
        gpt.Transformer = transformer
    assert isinstance(args, gpt.ModelArgs) and (args.n_layer, args.n_head, args.dim) == (32, 20, 1280)
    assert (args.vocab_size, args.num_classes) == (K_MAX, 10)
    vcq_plugin.unregister()
    assert gpt.GPT_models is original and "GPT-VCQ-XL" not in gpt.GPT_models


def check_drift():
    import vcq_plugin
    from autoregressive.models import generate as gen
    from _host_checks import strict_register_error

    vcq_plugin.unregister()
    original = gen.generate

    def generate(model, cond, max_new_tokens, **kwargs):  # a different upstream generate()
        return cond

    gen.generate = generate
    try:
        msg = strict_register_error("llamagen")
        assert "autoregressive.models.generate.generate" in msg, msg
        assert "ce98ec41803a74a90ce68c40ababa9eaeffeb4ec" in msg and "strict=False" in msg, msg
        assert "git submodule update --init third_party/LlamaGen" in msg, msg
        import tokenizer.tokenizer_image.vq_model as vq

        assert vcq_plugin.hooks.registered() == [] and gen.generate is generate
        assert not hasattr(vq.ModelArgs, "__vcq_original__") and not hasattr(gen.prefill, "__vcq_original__")
        import warnings

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            vcq_plugin.register(hosts=["llamagen"], strict=False)
        assert any("autoregressive.models.generate.generate" in str(x.message) for x in w)
        assert gen.generate.__vcq_original__ is generate
        vcq_plugin.unregister()
        assert gen.generate is generate and not hasattr(vq.ModelArgs, "__vcq_original__")
    finally:
        gen.generate = original


def check_drift_in_called_code():
    """An upstream edit in a function the hooked path still calls (decode_n_tokens, which drives the
    hooked decode_one_token inside generate) makes register() refuse, naming it."""
    import vcq_plugin
    from autoregressive.models import generate as gen
    from _host_checks import edited_copy, strict_register_error

    vcq_plugin.unregister()
    original = gen.decode_n_tokens
    gen.decode_n_tokens = edited_copy(gen, "decode_n_tokens", "input_pos += 1", "input_pos += 2")
    try:
        msg = strict_register_error("llamagen")
        assert "autoregressive.models.generate.decode_n_tokens" in msg, msg
        for hooked in ("generate.generate", "generate.prefill", "generate.decode_one_token"):
            assert f"cannot hook autoregressive.models.{hooked}" in msg, msg
        assert vcq_plugin.hooks.registered() == [] and not hasattr(gen.generate, "__vcq_original__")
    finally:
        gen.decode_n_tokens = original
    assert vcq_plugin.register(hosts=["llamagen"])  # the pinned code registers again
    vcq_plugin.unregister()


def _main(names):
    from _host_checks import run_checks  # tests/ is sys.path[0] when this file runs as a script

    run_checks(globals(), names, ("tokenizer.tokenizer_image.vq_model", "tokenizer.tokenizer_image.vq_loss", "autoregressive.models.gpt", "autoregressive.models.generate"), extra="llamagen")


if __name__ == "__main__":
    _main(sys.argv[1:] or CHECKS)
