"""Every ```python block in README.md and docs/*.md runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks():
    for path in FILES:
        text = path.read_text()
        for i, m in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            code = m.group(1)
            if "# doc: no-run" in code:
                continue
            yield pytest.param(code, id=f"{path.name}-{i}")


@pytest.mark.parametrize("code", list(blocks()))
def test_code_block_runs(code, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_quick_start_output(tmp_path):
    code = next(p.values[0] for p in blocks() if "best total" in p.values[0])
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120).stdout
    assert "best total: 28" in out


def test_seed_example_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_workflows.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done:") == 5
