"""vcq_plugin.register() on titok-pytorch (PyPI): runs in CI for real."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

titok = pytest.importorskip("titok_pytorch.titok", reason="pip install titok-pytorch (vcq-plugin[titok])")

import vcq_plugin  # noqa: E402
from vcq_plugin.hooks import HostDriftError  # noqa: E402
from vcq_plugin.schedule import CodebookSchedule  # noqa: E402

VectorQuantize = titok.VQ if not hasattr(titok.VQ, "__vcq_original__") else titok.VQ.__vcq_original__
ORIGINAL_INIT = titok.TiTokTokenizer.__init__
ORIGINAL_FORWARD = titok.TiTokTokenizer.forward

CFG = dict(dim=32, image_size=16, patch_size=8, num_latent_tokens=8, enc_depth=1, dec_depth=1,
           enc_heads=2, dec_heads=2, enc_dim_head=16, dec_dim_head=16, codebook_size=64)
VCQ = {"quantizer": "vcq_cosine", "k_min": 2}


@pytest.fixture
def registered():
    vcq_plugin.unregister()
    hooked = vcq_plugin.register(hosts=["titok-pytorch"])
    yield hooked
    vcq_plugin.unregister()


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, CFG["image_size"], CFG["image_size"], generator=g)


def test_register_reports_hooks_and_is_idempotent(registered):
    assert registered == {"titok-pytorch": ["titok_pytorch.titok.VQ", "titok_pytorch.titok.TiTokTokenizer.__init__",
                                            "titok_pytorch.titok.TiTokTokenizer.forward"]}
    factory = titok.VQ
    assert factory.__vcq_original__ is VectorQuantize
    again = vcq_plugin.register(hosts=["titok-pytorch"])
    assert again == registered
    assert titok.VQ is factory  # not wrapped twice
    assert titok.TiTokTokenizer.__init__.__vcq_original__ is ORIGINAL_INIT


def test_unregister_restores_every_original(registered):
    restored = vcq_plugin.unregister()
    assert sorted(restored) == sorted(registered["titok-pytorch"])
    assert titok.VQ is VectorQuantize
    assert titok.TiTokTokenizer.__init__ is ORIGINAL_INIT
    assert titok.TiTokTokenizer.forward is ORIGINAL_FORWARD
    assert vcq_plugin.unregister() == []


def test_vcq_tokenizer_tokens_respect_schedule(registered):
    torch.manual_seed(0)
    tok = titok.TiTokTokenizer(**CFG, vq_kwargs=VCQ)
    vq = tok.vq
    assert isinstance(vq, vcq_plugin.VariableCodebookQuantizer)
    expected = CodebookSchedule.from_spec("vcq_cosine", k_min=2, k_max=64, seq_len=8)
    assert torch.equal(vq.schedule.sizes, expected.sizes)
    # push latents far apart so every position would pick high codes without the prefix limit
    ids = tok.tokenize(_images(16) * 10)
    assert ids.shape == (16, CFG["num_latent_tokens"]) and ids.dtype == torch.long
    assert bool((ids < expected.sizes[None, :]).all())
    assert int(ids[:, 0].max()) < 2


def test_vcq_tokenize_decode_roundtrip_matches_forward(registered):
    torch.manual_seed(1)
    tok = titok.TiTokTokenizer(**CFG, vq_kwargs=VCQ).eval()
    x = _images()
    with torch.no_grad():
        loss, recon = tok(x, return_recon_images=True)
        images = tok.codebook_ids_to_images(tok.tokenize(x))
    assert images.shape == x.shape
    torch.testing.assert_close(images, recon, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(loss)
    twin = copy.deepcopy(tok)  # EMA copies / checkpoints: the adapter survives deepcopy and state dicts
    twin.load_state_dict(tok.state_dict())
    assert torch.equal(twin.tokenize(x), tok.tokenize(x))


def test_vcq_training_loss_includes_quantizer_loss_and_trains_codebook(registered):
    torch.manual_seed(2)
    tok = titok.TiTokTokenizer(**CFG, vq_kwargs=VCQ)
    x = _images(4)
    loss = tok(x)
    with torch.no_grad():
        recon_only = ORIGINAL_FORWARD(tok, x)  # upstream forward: reconstruction MSE only
    _, info = vcq_plugin.VariableCodebookQuantizer.forward(tok.vq, _latents(tok, x))
    torch.testing.assert_close(loss.detach(), recon_only + info["loss"].detach(), atol=1e-6, rtol=1e-5)

    assert tok(x, return_loss=True).shape == ()
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    before = tok.vq.embedding.weight.detach().clone()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = tok(x)
        loss.backward()
        assert tok.vq.embedding.weight.grad is not None and tok.vq.embedding.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, tok.vq.embedding.weight)


def _latents(tok, x):
    """The encoder latents TiTokTokenizer feeds its quantizer (captured with a forward hook)."""
    seen = {}

    def grab(module, args, out):
        seen["z"] = args[0].detach()

    handle = tok.vq.register_forward_hook(grab)
    with torch.no_grad():
        tok(x)
    handle.remove()
    return seen["z"]


def test_without_quantizer_key_behaviour_is_upstream(registered):
    vcq_plugin.unregister()
    torch.manual_seed(3)
    plain = titok.TiTokTokenizer(**CFG, vq_kwargs={"decay": 0.9})
    vcq_plugin.register(hosts=["titok-pytorch"])
    torch.manual_seed(3)
    patched = titok.TiTokTokenizer(**CFG, vq_kwargs={"decay": 0.9})
    assert type(patched.vq) is VectorQuantize
    sd_a, sd_b = plain.state_dict(), patched.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    x = _images()
    plain.eval(), patched.eval()
    with torch.no_grad():
        assert torch.equal(plain.tokenize(x), patched.tokenize(x))
        assert torch.equal(plain(x), patched(x))


def test_vcq_options_map_and_bad_ones_are_rejected(registered):
    tok = titok.TiTokTokenizer(**CFG, vq_kwargs={"quantizer": "vcq_power", "k_min": 4, "power": 2.0,
                                                 "commitment_weight": 0.5, "use_cosine_sim": True})
    assert tok.vq.commitment_cost == 0.5 and tok.vq.use_l2_norm is True
    assert torch.equal(tok.vq.schedule.sizes,
                       CodebookSchedule("power", k_min=4, k_max=64, seq_len=8, power=2.0).sizes)
    with pytest.raises(ValueError, match="vcq_cosine"):
        titok.TiTokTokenizer(**CFG, vq_kwargs={"quantizer": "vcq_cosin"})
    with pytest.raises(TypeError, match="decay"):
        titok.TiTokTokenizer(**CFG, vq_kwargs={"quantizer": "vcq_cosine", "decay": 0.9})


def test_drift_refuses_under_strict_and_patches_nothing(monkeypatch):
    vcq_plugin.unregister()

    class TiTokTokenizer(torch.nn.Module):  # a different upstream class under the same name
        def __init__(self, *, dim, vq_kwargs=dict()):
            super().__init__()
            self.vq = titok.VQ(dim=dim, codebook_size=16, **vq_kwargs)

    monkeypatch.setattr(titok, "TiTokTokenizer", TiTokTokenizer)
    with pytest.raises(HostDriftError) as err:
        vcq_plugin.register(hosts=["titok-pytorch"], strict=True)
    msg = str(err.value)
    assert "titok_pytorch.titok.TiTokTokenizer" in msg and "titok-pytorch==0.0.5" in msg
    assert "strict=False" in msg and "pip install titok-pytorch==0.0.5" in msg
    assert titok.VQ is VectorQuantize and vcq_plugin.hooks.registered() == []
    assert TiTokTokenizer.__init__.__qualname__.endswith("TiTokTokenizer.__init__")
    assert not hasattr(TiTokTokenizer.__init__, "__vcq_original__")

    with pytest.warns(UserWarning, match="titok_pytorch.titok.TiTokTokenizer"):
        vcq_plugin.register(hosts=["titok-pytorch"], strict=False)
    try:
        assert titok.VQ.__vcq_original__ is VectorQuantize
    finally:
        vcq_plugin.unregister()
    assert titok.VQ is VectorQuantize


def test_register_rejects_unknown_host_and_missing_host():
    with pytest.raises(ValueError, match="titok-pytorch"):
        vcq_plugin.register(hosts=["titok-pytorc"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = vcq_plugin.register()  # every importable host; the research hosts are not on sys.path here
    try:
        assert "titok-pytorch" in result
    finally:
        vcq_plugin.unregister()
