"""The `vcq` command: --help from the installed script, table1 / advise / cliff, bad input -> exit 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vcq_plugin.cli import main
from vcq_plugin.schedule import CodebookSchedule

VCQ = os.path.join(os.path.dirname(sys.executable), "vcq")


@pytest.mark.skipif(not os.path.exists(VCQ), reason="the vcq console script is not installed")
def test_console_script_help():
    out = subprocess.run([VCQ, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("schedule", "table1", "advise", "cliff"):
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", ["table1", "advise", "cliff"])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: vcq " + cmd in capsys.readouterr().out


def test_table1_and_advise(capsys):
    assert main(["table1"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet-1K" in out and "LAION-5B" in out and " 28.0 " in out and "209.5" in out
    assert main(["advise", "--num-samples", "1281167", "--k-max", "16384", "--target-istar", "9"]) == 0
    out = capsys.readouterr().out
    assert "recommended: vcq_cosine" in out
    assert main(["advise", "--num-samples", "1281167", "--k-max", "16384", "--k-min", "16384",
                 "--target-istar", "3"]) == 1


def _write_inputs(tmp_path, n=800, length=16):
    rng = np.random.default_rng(0)
    sched = CodebookSchedule("cosine", k_min=2, k_max=64, seq_len=length)
    labels = rng.integers(0, 4, size=n)
    tokens = (rng.random((n, length)) * sched.sizes.numpy()).astype(np.uint16)
    tokens[:, 0], tokens[:, 1] = labels % 2, labels // 2
    np.save(tmp_path / "tokens.npy", tokens)
    np.save(tmp_path / "labels.npy", labels)
    torch.save(torch.randn(64, 4), tmp_path / "codebook.pt")
    return tokens


def test_cliff_end_to_end(tmp_path, capsys):
    _write_inputs(tmp_path)
    out = tmp_path / "out"
    rc = main(["cliff", str(tmp_path / "tokens.npy"), "--labels", str(tmp_path / "labels.npy"),
               "--codebook", str(tmp_path / "codebook.pt"), "--k-max", "64", "--probe-k", "2",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tokens" in printed and "report.json" in printed
    rep = json.loads((out / "report.json").read_text())
    s = rep["sets"]["tokens"]
    assert s["schedule"] == {"kind": "cosine", "k_min": 2, "k_max": 64, "seq_len": 16}
    assert s["probe"]["top1"] > 0.9 and s["computed_istar"] == CodebookSchedule.from_spec(s["schedule"]).transition_position(800) == 6
    assert (out / "fig2a_entropy_cliff.svg").exists() and (out / "fig2b_schedules.png").exists()
    # a JSON schedule file works too
    (tmp_path / "s.json").write_text(json.dumps(CodebookSchedule("constant", k_max=64, seq_len=16).to_dict()))
    assert main(["cliff", str(tmp_path / "tokens.npy"), "--schedule", str(tmp_path / "s.json"),
                 "--tolerance", "0.25", "--no-progress", "--out", str(tmp_path / "o2")]) == 0
    rep2 = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert rep2["sets"]["tokens"]["computed_istar"] == 2 and rep2["tolerance_bits"] == 0.25


def test_cliff_help_says_what_the_measured_cliff_is(capsys):
    with pytest.raises(SystemExit):
        main(["cliff", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "prefix entropy" in out and "log2 N" in out and "K(0) = 2: at most 1 bit" in out
    assert "--tolerance" in out and "--threshold" not in out


def test_cliff_takes_the_schedule_beside_the_tokens(tmp_path, capsys):
    _write_inputs(tmp_path)
    sched = CodebookSchedule.from_spec("vcq_cosine", k_max=64, seq_len=16)
    (tmp_path / "schedule.json").write_text(json.dumps(sched.to_dict()))
    assert main(["cliff", str(tmp_path / "tokens.npy"), "--no-progress", "--out", str(tmp_path / "o")]) == 0
    assert str(tmp_path / "schedule.json") in capsys.readouterr().out
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["sets"]["tokens"]["schedule"] == sched.to_dict()
    # agreeing options are fine, disagreeing ones are an error, never silently ignored
    assert main(["cliff", str(tmp_path / "tokens.npy"), "--k-max", "64", "--no-progress", "--out",
                 str(tmp_path / "o")]) == 0
    assert main(["cliff", str(tmp_path / "tokens.npy"), "--k-max", "128", "--no-progress", "--out",
                 str(tmp_path / "o")]) == 2
    assert "k_max=64 in the description but k_max=128 was also given" in capsys.readouterr().err
    # a hand-written description without seq_len takes the tokens' L
    (tmp_path / "schedule.json").write_text(json.dumps({"name": "vcq_cosine", "k_max": 64}))
    assert main(["cliff", str(tmp_path / "tokens.npy"), "--no-progress", "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["sets"]["tokens"]["schedule"] == sched.to_dict()


@pytest.mark.parametrize(
    "extra,msg",
    [
        ([], "no schedule.json beside"),                                   # K_max is never assumed
        (["--schedule", "vcq_linear"], "--schedule vcq_linear needs --k-max"),
        (["--k-max", "64", "--power", "3"], "power applies only to vcq_power"),
        (["--k-max", "64", "--schedule", "constant", "--k-min", "2"], "a constant schedule has no k_min"),
        (["--k-max", "64", "--probe-bits", "8"], "--probe-bits sets the probe at equal capacity"),
        (["--k-max", "64", "--out-file"], "is an existing file"),
        (["--k-max", "64", "--tolerance", "-1"], "tolerance must be a finite number of bits >= 0"),
    ],
)
def test_cliff_rejects_options_that_cannot_apply(extra, msg, tmp_path, capsys):
    _write_inputs(tmp_path)
    out = str(tmp_path / "o")
    if "--out-file" in extra:
        extra = [e for e in extra if e != "--out-file"]
        out = str(tmp_path / "labels.npy")   # an existing file where the output folder should go
    rc = main(["cliff", str(tmp_path / "tokens.npy"), "--no-progress", "--out", out] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("vcq cliff: error: ") and msg in err and "Traceback" not in err, err


def test_cliff_threshold_option_is_gone(tmp_path):
    _write_inputs(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["cliff", str(tmp_path / "tokens.npy"), "--k-max", "64", "--threshold", "0.5", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_schedule_command_refuses_options_that_do_not_apply(capsys):
    assert main(["schedule", "--kind", "constant", "--k-max", "256", "--seq-len", "4"]) == 0
    out = capsys.readouterr().out
    assert "kind='constant'" in out and "(positions i are 1-based" in out
    assert main(["schedule", "--kind", "constant", "--k-min", "2"]) == 2
    assert main(["schedule", "--kind", "cosine", "--power", "3"]) == 2
    assert main(["schedule", "--kind", "power", "--power", "3", "--k-max", "64", "--seq-len", "8"]) == 0
    assert "power=3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case,msg",
    [
        ("1d", "2-D"),
        ("empty", "non-empty"),
        ("negative", "must be >= 0, got -1 at position 3"),
        ("too_big", "position 2 must be < K(2) = 3"),
        ("labels", "labels must be a 1-D array with one label per token row"),
        ("k", "k must be <= the sequence length L=16"),
        ("missing", "not found"),
        ("truncated", "bad.npy is not a readable .npy array"),
    ],
)
def test_cliff_bad_input_exits_2(case, msg, tmp_path, capsys):
    tokens = _write_inputs(tmp_path, n=100)
    path = tmp_path / "bad.npy"
    extra = []
    if case == "1d":
        np.save(path, tokens[:, 0])
    elif case == "empty":
        np.save(path, tokens[:0])
    elif case == "negative":
        t = tokens.astype(np.int32)
        t[5, 3] = -1
        np.save(path, t)
    elif case == "truncated":
        np.save(path, tokens)
        path.write_bytes(path.read_bytes()[:-50])
    elif case == "too_big":
        t = tokens.copy()
        t[7, 2] = 3
        np.save(path, t)
    else:
        np.save(path, tokens)
        extra = ["--codebook", str(tmp_path / "codebook.pt"), "--labels", str(tmp_path / "labels.npy")]
        if case == "labels":
            np.save(tmp_path / "labels.npy", np.zeros(99, dtype=int))
        elif case == "k":
            extra += ["--probe-k", "17"]
        else:
            path = tmp_path / "nope.npy"
    rc = main(["cliff", str(path), "--k-max", "64", "--no-progress", "--out", str(tmp_path / "o")] + extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("vcq cliff: error: ") and msg in err
