"""Every ```python block of README.md runs as written (each in a fresh interpreter, since blocks hook
host codebases). A block preceded by ``<!-- readme-test: upstream <host> -->`` runs from that host's
checkout (third_party/<host>), is marked ``upstream`` and ``slow`` (real host models on CPU), and is
skipped, saying so, when the host is not checked out."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
HOSTS = {"llamagen": ("LlamaGen", "autoregressive/models/generate.py"),
         "1d-tokenizer": ("1d-tokenizer", "modeling/titok.py")}
MARKER = re.compile(r"<!--\s*readme-test:\s*upstream\s+([\w-]+)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, host or None) of every fenced ```python block."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            prev = next((lines[j] for j in range(start - 2, -1, -1) if lines[j].strip()), "")
            m = MARKER.search(prev)
            blocks.append((start, "\n".join(body) + "\n", m.group(1) if m else None))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
PARAMS = [pytest.param(line, code, host, id=f"README.md:{line}",
                       marks=[pytest.mark.upstream, pytest.mark.slow] if host else []) for line, code, host in BLOCKS]


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3
    assert all(host in HOSTS for _, _, host in BLOCKS if host), "unknown host in a readme-test marker"


@pytest.mark.parametrize("line, code, host", PARAMS)
def test_readme_python_block_runs(line, code, host, tmp_path):
    cwd, env = tmp_path, dict(os.environ, OMP_NUM_THREADS="1")
    if host is not None:
        folder, marker = HOSTS[host]
        root = REPO / "third_party" / folder
        if not (root / marker).is_file():
            pytest.skip(f"README.md:{line} needs the {host} host: third_party/{folder} is not checked out "
                        f"(git submodule update --init third_party/{folder})")
        cwd = root
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    script = tmp_path / "block.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"README.md:{line} failed:\n{code}\n{res.stderr[-3000:]}"
