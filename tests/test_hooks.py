"""The hook mechanism (patches/_base.py) and register()/unregister() without any host installed."""
from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
import types
import warnings

import pytest

import vcq_plugin
from vcq_plugin import hooks
from vcq_plugin.patches import _base
from vcq_plugin.patches._base import Hook, HostDriftError, source_sha256, verify

from _host_checks import edited_copy

SOURCE = '''
def greet(name):
    return "hello " + name


def shout(name):
    return greet(name) + "!"


class Base:
    def size(self):
        return 1


class Child(Base):
    def kind(self):
        return "child"
'''


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    """A real importable module file (inspect.getsource needs one), removed afterwards."""
    name = "vcq_fake_host_mod"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    import importlib

    mod = importlib.import_module(name)
    yield mod
    sys.modules.pop(name, None)


def _wrap_greet(original):
    def greet(name):
        return original(name).upper()

    return greet


def test_source_sha256_ignores_line_endings_and_trailing_blanks(tmp_path, monkeypatch):
    a = tmp_path / "vcq_hash_a.py"
    b = tmp_path / "vcq_hash_b.py"
    a.write_text("def f(x):\n    return x + 1\n")
    b.write_bytes(b"def f(x):   \r\n    return x + 1\r\n\r\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    fa, fb = importlib.import_module("vcq_hash_a").f, importlib.import_module("vcq_hash_b").f
    assert source_sha256(fa) == source_sha256(fb)
    assert re.fullmatch(r"[0-9a-f]{64}", source_sha256(fa))
    c = tmp_path / "vcq_hash_c.py"
    c.write_text("def f(x):\n    return x + 2\n")
    assert source_sha256(importlib.import_module("vcq_hash_c").f) != source_sha256(fa)


def test_hook_apply_restore_and_idempotent(fake_module):
    original = fake_module.greet
    hook = Hook(host="fake", module=fake_module.__name__, attribute="greet",
                checks={"greet": source_sha256(original)}, make=_wrap_greet, pin="fake@1", how_to_fix="reinstall fake")
    assert verify([hook]) == []
    assert hook.apply() is True
    assert fake_module.greet("bob") == "HELLO BOB"
    assert fake_module.greet.__vcq_original__ is original
    assert hook.is_applied() and verify([hook]) == []  # applied hooks are not re-checked
    assert dataclasses.replace(hook).apply() is False  # a second apply (fresh record) does nothing
    assert fake_module.greet.__vcq_original__ is original
    assert hook.restore() is True
    assert fake_module.greet is original
    assert hook.restore() is False


def test_inherited_method_is_restored_by_deletion(fake_module):
    hook = Hook(host="fake", module=fake_module.__name__, attribute="Child.size",
                checks={"Child": source_sha256(fake_module.Child)},
                make=lambda orig: (lambda self: orig(self) + 10))
    assert "size" not in fake_module.Child.__dict__
    assert hook.apply()
    assert fake_module.Child().size() == 11 and fake_module.Base().size() == 1
    hook.restore()
    assert "size" not in fake_module.Child.__dict__ and fake_module.Child().size() == 1


def test_drift_is_detected_and_message_says_how_to_proceed(fake_module):
    hook = Hook(host="fake", module=fake_module.__name__, attribute="greet", checks={"greet": "0" * 64},
                make=_wrap_greet, pin="fake @ abc123", how_to_fix="check out abc123")
    [(bad, found)] = verify([hook])
    assert bad is hook and found == {"greet": source_sha256(fake_module.greet)}
    msg = hook.drift_message(found)
    for part in (f"{fake_module.__name__}.greet", "fake @ abc123", "check out abc123", "strict=False", found["greet"][:16]):
        assert part in msg


def test_register_rejects_unknown_host_with_suggestion():
    with pytest.raises(ValueError, match="Did you mean 'llamagen'"):
        vcq_plugin.register(hosts=["llamagenn"])
    with pytest.raises(TypeError, match="host names must be strings"):
        vcq_plugin.register(hosts=[3])


@pytest.mark.parametrize("host,hint", [("llamagen", "git submodule update --init third_party/LlamaGen"),
                                       ("1d-tokenizer", "git submodule update --init third_party/1d-tokenizer")])
def test_register_named_missing_host_says_how_to_get_it(host, hint, monkeypatch):
    patch = hooks._patch_module(host)
    monkeypatch.setattr(patch, "available", lambda: False)
    with pytest.raises(ImportError, match=re.escape(hint)):
        vcq_plugin.register(hosts=[host])
    monkeypatch.setattr(hooks._patch_module("titok-pytorch"), "available", lambda: False)
    assert vcq_plugin.register() == {}  # hosts=None: only what is importable, here nothing


def test_register_strict_refuses_all_or_nothing(monkeypatch, fake_module):
    """A drifted hook in one host stops every hook of the call, even the hosts that match."""
    good = Hook(host="a", module=fake_module.__name__, attribute="greet", checks={"greet": source_sha256(fake_module.greet)},
                make=_wrap_greet)
    bad = Hook(host="b", module=fake_module.__name__, attribute="Child.kind", checks={"Child.kind": "f" * 64},
               make=lambda orig: orig, pin="b @ 1", how_to_fix="pin b")
    mods = {"a": types.SimpleNamespace(available=lambda: True, hooks=lambda: [good]),
            "b": types.SimpleNamespace(available=lambda: True, hooks=lambda: [bad])}
    monkeypatch.setattr(hooks, "HOSTS", {"a": "x", "b": "y"})
    monkeypatch.setattr(hooks, "_patch_module", lambda host: mods[host])
    original = fake_module.greet
    with pytest.raises(HostDriftError, match="Child.kind"):
        vcq_plugin.register(hosts=["a", "b"])
    assert fake_module.greet is original and hooks.registered() == []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = vcq_plugin.register(hosts=["a", "b"], strict=False)
    try:
        assert any("Child.kind" in str(x.message) for x in w)
        assert result == {"a": [f"{fake_module.__name__}.greet"], "b": [f"{fake_module.__name__}.Child.kind"]}
        assert fake_module.greet("x") == "HELLO X"
    finally:
        restored = vcq_plugin.unregister()
    assert set(restored) == {f"{fake_module.__name__}.greet", f"{fake_module.__name__}.Child.kind"}
    assert fake_module.greet is original


def test_patch_modules_declare_pinned_hashes():
    from vcq_plugin.patches import llamagen, lpips_vgg, titok_1d, titok_pytorch

    for mod in (titok_1d, llamagen, titok_pytorch):
        hs = mod.hooks()
        assert hs, mod
        for h in hs:
            assert h.checks and all(re.fullmatch(r"[0-9a-f]{64}", v) for v in h.checks.values()), (mod.__name__, h.symbol)
            assert h.pin and h.how_to_fix and h.host == mod.HOST
        assert callable(mod.available) and mod.HOW_TO_GET
    # the sampling hooks also cover the upstream loop that calls them
    assert all("decode_n_tokens" in h.checks for h in llamagen.hooks() if h.module == llamagen.GEN_MODULE)
    assert lpips_vgg.hooks()[0].checks == {"vgg16": lpips_vgg.VGG16_SHA256}
    assert titok_1d.COMMIT in titok_1d.PIN and llamagen.COMMIT in llamagen.PIN


def test_patches_package_is_not_a_top_level_name():
    assert _base.__name__ == "vcq_plugin.patches._base"
    import importlib.util

    assert importlib.util.find_spec("patches") is None or "vcq_plugin" not in str(importlib.util.find_spec("patches").origin)


def test_run_launcher_registers_then_runs_script(tmp_path, monkeypatch, capsys):
    from vcq_plugin.patches import run

    script = tmp_path / "host_script.py"
    script.write_text("import sys\nfrom vcq_plugin import hooks\nprint('ARGS', sys.argv[1:], sorted(hooks.registered()))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", ["run"])
    for host in ("1d-tokenizer", "llamagen"):
        monkeypatch.setattr(hooks._patch_module(host), "available", lambda: False)
    try:
        run.main([str(script), "--flag", "1"])
    finally:
        vcq_plugin.unregister()
    out = capsys.readouterr().out
    assert "ARGS ['--flag', '1']" in out
    expect = "titok_pytorch.titok.VQ" if hooks._patch_module("titok-pytorch").available() else "[]"
    assert expect in out
    with pytest.raises(SystemExit, match="not found"):
        run.main(["no_such_script.py"])


def test_register_host_whose_imports_fail(monkeypatch, tmp_path):
    """A host that is found but fails to import: named -> ImportError with the hint; hosts=None -> skipped."""
    (tmp_path / "vcq_broken_host.py").write_text("import vcq_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = types.SimpleNamespace(
        available=lambda: True, HOW_TO_GET="pip install the-extra",
        hooks=lambda: [Hook(host="broken", module="vcq_broken_host", attribute="x", checks={"x": "0" * 64},
                            make=lambda o: o)])
    monkeypatch.setattr(hooks, "HOSTS", {"broken": "x"})
    monkeypatch.setattr(hooks, "_patch_module", lambda host: broken)
    with pytest.raises(ImportError, match="vcq_no_such_dependency.*pip install the-extra"):
        vcq_plugin.register(hosts=["broken"])
    with pytest.warns(UserWarning, match="skipping host 'broken'"):
        assert vcq_plugin.register() == {}


def test_drift_in_a_function_the_replacement_relies_on_is_refused(monkeypatch, fake_module):
    """The hook replaces greet, but the code path also runs shout (which calls greet): an upstream edit
    of shout alone must make register() refuse, naming shout."""
    sha = {"greet": source_sha256(fake_module.greet), "shout": source_sha256(fake_module.shout)}
    hook = Hook(host="fake", module=fake_module.__name__, attribute="greet", checks=sha, make=_wrap_greet,
                pin="fake @ 1", how_to_fix="pin fake")
    mods = {"fake": types.SimpleNamespace(available=lambda: True, hooks=lambda: [hook])}
    monkeypatch.setattr(hooks, "HOSTS", {"fake": "x"})
    monkeypatch.setattr(hooks, "_patch_module", lambda host: mods[host])
    assert verify([hook]) == []
    monkeypatch.setattr(fake_module, "shout", edited_copy(fake_module, "shout", '+ "!"', '+ "?"'))
    assert fake_module.shout("a") == "hello a?"
    with pytest.raises(HostDriftError, match=rf"{fake_module.__name__}\.shout .*expected {sha['shout'][:16]}"):
        vcq_plugin.register(hosts=["fake"])
    assert hooks.registered() == [] and fake_module.greet("a") == "hello a"


def test_patched_is_scoped_drift_checked_and_undone_by_unregister(fake_module):
    hook = Hook(host="fake", module=fake_module.__name__, attribute="greet",
                checks={"greet": source_sha256(fake_module.greet)}, make=_wrap_greet)
    original = fake_module.greet
    with hooks.patched([hook]) as symbols:
        assert symbols == [f"{fake_module.__name__}.greet"] and hooks.registered() == symbols
        assert fake_module.greet("x") == "HELLO X"
    assert fake_module.greet is original and hooks.registered() == []
    with hooks.patched([hook]):
        assert vcq_plugin.unregister() == [f"{fake_module.__name__}.greet"]
        assert fake_module.greet is original
    assert fake_module.greet is original
    drifted = Hook(host="fake", module=fake_module.__name__, attribute="greet", checks={"greet": "0" * 64}, make=_wrap_greet)
    with pytest.raises(HostDriftError), hooks.patched([drifted]):
        pass
    assert fake_module.greet is original


def test_lpips_vgg_swap_is_a_scoped_drift_checked_hook(monkeypatch):
    pn = pytest.importorskip("lpips.pretrained_networks")
    from vcq_plugin.patches import lpips_vgg

    tv = pn.tv
    with lpips_vgg.vgg16_trunk_only():
        assert pn.tv is not tv and hooks.registered() == ["lpips.pretrained_networks.tv"]
        net = pn.vgg16(pretrained=False)
        assert len(list(net.parameters())) == 26  # VGG16 trunk up to relu5_3: 13 conv layers x (weight, bias)
        with pytest.raises(RuntimeError, match="never lets lpips download"):
            pn.vgg16(pretrained=True)
    assert pn.tv is tv and hooks.registered() == []
    monkeypatch.setattr(pn, "vgg16", edited_copy(pn, "vgg16", "range(4, 9)", "range(4, 10)"))
    with pytest.raises(HostDriftError, match="lpips.pretrained_networks.vgg16"), lpips_vgg.vgg16_trunk_only():
        pass
    assert pn.tv is tv
