"""``asyncflow-hpc bench pool``: bad input is one line; the real runs are in
tests/slurm/test_pilot_pool_slurm.py (chain) and the numbers in docs/pilots.md."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("args", "expect"), [
    (["fanout", "--site", "nosuchsite"], "nosuchsite"),
    (["chain", "--tasks", "0"], "Invalid value for '--tasks'"),
    (["wobble"], "Invalid value for '{fanout|chain}'"),
    (["chain", "--json", "/tmp/out.json"], "refusing to write in /tmp"),
])
def test_bad_input_is_one_clear_line(args: list[str], expect: str, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "asyncflow_hpc", "bench", "pool", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 or proc.returncode == 1, proc
    assert expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
