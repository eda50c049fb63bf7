"""examples/migrated_campaign.py (a radical.asyncflow script, import line changed) on the
local backend: blocking async bodies overlap, components after dropped futures, capture_stdio,
files between tasks. tests/radical runs the same script on a pilot and compares."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "migrated_campaign.py"


def run_migrated(work_dir, **env) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), str(work_dir)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def expected() -> dict:
    return {
        "blocking_bodies_overlapped": True,
        "lines_by_name": 5,
        "sum_of_file": 15,
        "sweep-0": {"report": "total=5", "total": 5},
        "sweep-1": {"report": "total=50", "total": 50},
        "sweep-2": {"report": "total=149", "total": 149},
    }


def test_migrated_script_on_the_local_backend(tmp_path):
    got = run_migrated(tmp_path, ASYNCFLOW_HPC_BACKEND="local")
    comps = got.pop("components")
    assert got == expected()
    assert len(comps) == 18 and all(state == "DONE" for *_, state in comps)
    assert comps.count(["simulate", "sweep-1", "DONE"]) == 3
    assert (tmp_path / "migrated").is_dir()
