"""Metrics I/O without networks: PSNR, ADM .npz writer/reader, folders, weights lookup."""
import math
import os

import numpy as np
import pytest
import torch

from vcq_plugin.metrics import (
    AdmSampleWriter,
    MissingWeightsError,
    load_images,
    load_reference_stats,
    open_images,
    psnr,
    resolve_inception_weights,
    resolve_vgg16_weights,
    to_uint8_nhwc,
    write_adm_npz,
)
from vcq_plugin.metrics.weights import INCEPTION_FILENAME, VGG16_FILENAME


def _images(n=7, h=8, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- PSNR

def test_psnr_exact_hand_made():
    a = np.zeros((3, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] += 1                      # every value off by 1 -> MSE 1
    b[1, 0, 0, 0] = 255            # one of 48 values off by 255 -> MSE 255^2 / 48
    per = psnr(a, b, reduction="none")
    assert per[0].item() == pytest.approx(20 * math.log10(255.0), abs=1e-12)
    assert per[1].item() == pytest.approx(10 * math.log10(48.0), abs=1e-12)
    assert math.isinf(per[2].item()) and per[2].item() > 0   # identical image
    # float images in [0, 1]: constant 0.1 error -> MSE 0.01 -> exactly 20 dB
    x = torch.zeros(2, 3, 5, 5, dtype=torch.float64)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-12)
    assert psnr(x, x + 0.1, data_range=2.0).item() == pytest.approx(20.0 + 20 * math.log10(2.0), abs=1e-12)
    # mean over images of per-image PSNR
    assert psnr(a[:2], b[:2]).item() == pytest.approx(per[:2].mean().item(), abs=1e-12)


def test_psnr_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 5)))
    with pytest.raises(ValueError, match="reduction"):
        psnr(np.zeros((1, 3, 4, 4)), np.ones((1, 3, 4, 4)), reduction="sum")


# ---------------------------------------------------------------- conversion + ADM npz

def test_to_uint8_nhwc_layouts_and_range():
    f = torch.tensor([0.0, 0.2, 0.5, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = to_uint8_nhwc(f)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, :, :, 0].tolist() == [[0, 51], [128, 255]]  # round(x * 255)
    u = _images(2)
    assert np.array_equal(to_uint8_nhwc(u.transpose(0, 3, 1, 2)), u)
    with pytest.raises(ValueError, match=r"\[0, 1\].*clamp=True"):
        to_uint8_nhwc(f * 1.5)
    assert to_uint8_nhwc(f * 1.5 - 0.1, clamp=True).max() == 255
    with pytest.raises(TypeError, match="dtype"):
        to_uint8_nhwc(np.zeros((1, 3, 2, 2), np.int32))


def test_adm_npz_round_trip(tmp_path):
    imgs = _images(9)
    labels = np.arange(9) % 4
    path = write_adm_npz(imgs, tmp_path / "samples.npz", labels=labels)
    with np.load(path) as z:
        assert sorted(z.files) == ["arr_0", "arr_1"]
        assert z["arr_0"].dtype == np.uint8 and np.array_equal(z["arr_0"], imgs)
        assert np.array_equal(z["arr_1"], labels)
    assert np.array_equal(load_images(path), imgs)
    s = open_images(path)
    assert (s.kind, s.num_images, s.image_shape) == ("npz", 9, (8, 6, 3))
    assert np.array_equal(np.concatenate(list(s.batches(4))), imgs)   # streamed in uneven batches
    assert sorted(os.listdir(tmp_path)) == ["samples.npz"]              # no temp files left
    # float NCHW input goes through the same writer
    write_adm_npz(torch.from_numpy(imgs).permute(0, 3, 1, 2).double() / 255, tmp_path / "f.npz")
    assert np.array_equal(load_images(tmp_path / "f.npz"), imgs)


def test_sample_writer_streams_and_warns(tmp_path):
    imgs = _images(10, 4, 4)
    with pytest.warns(UserWarning, match="only 7 samples"):
        with AdmSampleWriter(tmp_path / "s.npz", num_samples=12, image_size=4) as w:
            w.add(imgs[:3], labels=np.arange(3))
            w.add(imgs[3:7], labels=np.arange(3, 7))
    with np.load(tmp_path / "s.npz") as z:
        assert np.array_equal(z["arr_0"], imgs[:7]) and np.array_equal(z["arr_1"], np.arange(7))
    with AdmSampleWriter(tmp_path / "t.npz", num_samples=5, image_size=4) as w:
        assert w.add(imgs[:4]) == 4 and w.add(imgs[4:]) == 1 and w.full
    assert np.array_equal(load_images(tmp_path / "t.npz"), imgs[:5])
    with pytest.raises(ValueError, match="4x4x3"):
        AdmSampleWriter(tmp_path / "u.npz", num_samples=2, image_size=4).add(_images(1, 5, 5))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("u.npz")) == ["s.npz", "t.npz"]


def test_folder_source_and_errors(tmp_path):
    from PIL import Image

    imgs = _images(5)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / f"{i:03d}.png")
    assert np.array_equal(load_images(tmp_path), imgs)
    Image.fromarray(_images(1, 9, 9)[0]).save(tmp_path / "999.png")
    with pytest.raises(ValueError, match="same size"):
        load_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_images(tmp_path / "missing.npz")
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    with pytest.raises(ValueError, match="no 'arr_0'"):
        open_images(tmp_path / "stats.npz")
    st = load_reference_stats(tmp_path / "stats.npz")
    assert st["mu"].dtype == np.float64 and np.array_equal(st["sigma"], np.eye(4))


# ---------------------------------------------------------------- weights lookup (offline)

@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("VCQ_INCEPTION_WEIGHTS", str(tmp_path / "nothing" / "inception.pth"))
    monkeypatch.setenv("VCQ_VGG16_WEIGHTS", str(tmp_path / "nothing" / "vgg.pth"))
    return tmp_path


def test_missing_weights_clear_error(no_weights):
    hub = no_weights / "torch_home" / "hub" / "checkpoints"
    with pytest.raises(MissingWeightsError) as e:
        resolve_inception_weights()
    msg = str(e.value)
    assert INCEPTION_FILENAME in msg and str(hub / INCEPTION_FILENAME) in msg and "VCQ_INCEPTION_WEIGHTS" in msg
    with pytest.raises(MissingWeightsError, match=VGG16_FILENAME) as e:
        resolve_vgg16_weights(no_weights / "also-missing.pth")
    assert "also-missing.pth" in str(e.value) and str(hub / VGG16_FILENAME) in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_weights_lookup_order(no_weights, monkeypatch):
    hub = no_weights / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / INCEPTION_FILENAME).write_bytes(b"x")
    assert resolve_inception_weights() == hub / INCEPTION_FILENAME        # torch hub cache
    env_file = no_weights / "env.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv("VCQ_INCEPTION_WEIGHTS", str(env_file))
    assert resolve_inception_weights() == env_file                        # env beats hub
    arg_file = no_weights / "arg.pth"
    arg_file.write_bytes(b"x")
    assert resolve_inception_weights(arg_file) == arg_file                # argument beats env


# ---------------------------------------------------------------- unreadable / non-ADM .npz: clear errors

def _npz_with_member(path, header_shape, data: bytes):
    """A zip holding arr_0.npy whose .npy header declares ``header_shape`` but whose data is ``data``."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("arr_0.npy", buf.getvalue() + data)
    return path


def test_truncated_or_non_adm_npz_names_the_file(tmp_path):
    good = write_adm_npz(_images(6), tmp_path / "good.npz")
    raw = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])           # lost its central directory
    (tmp_path / "text.npz").write_text("not a zip\n")
    big = write_adm_npz(_images(64, 16, 16), tmp_path / "big.npz").read_bytes()
    corrupt = bytearray(big)
    corrupt[40_000] ^= 0xFF                                              # an image byte: bad CRC when read
    (tmp_path / "crc.npz").write_bytes(bytes(corrupt))
    short = _npz_with_member(tmp_path / "short.npz", (6, 8, 6, 3), bytes(4 * 8 * 6 * 3))  # 4 of 6 images
    for name in ("trunc.npz", "text.npz"):
        with pytest.raises(ValueError, match=rf"{name}.*not a readable \.npz archive \(truncated"):
            open_images(tmp_path / name, name="samples")
        with pytest.raises(ValueError, match=rf"reference: .*{name}.*not a readable"):
            load_reference_stats(tmp_path / name)
    with pytest.raises(ValueError, match=r"short\.npz.*holds 576 bytes of image data but its header declares "
                                         r"\(6, 8, 6, 3\) = 864 bytes \(truncated or corrupt\)"):
        open_images(short)
    src = open_images(tmp_path / "crc.npz")                              # the header is fine ...
    with pytest.raises(ValueError, match=r"crc\.npz.*arr_0 is corrupt \(Bad CRC-32"):  # ... the data is not
        src.load()
    small = bytearray(raw)
    small[200] ^= 0xFF                   # a small member is checked as a whole when its header is read
    (tmp_path / "crc_small.npz").write_bytes(bytes(small))
    with pytest.raises(ValueError, match=r"crc_small\.npz.*is corrupt"):
        open_images(tmp_path / "crc_small.npz")


def test_strict_json_writer(tmp_path):

    from vcq_plugin._io import atomic_write_json

    with pytest.raises(ValueError, match="not valid JSON"):
        atomic_write_json(tmp_path / "x.json", {"psnr": float("inf")})
    assert not list(tmp_path.iterdir())
