"""The benchmark on the RADICAL-Pilot backend: a real pilot on local.localhost, small workloads.

One pilot for the whole module (a pilot costs 15-60 s on this 2-core machine). Skipped when
radical.pilot is not installed, failed under CI (which installs it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from benchutil import run

from asyncflow_hpc.bench import make_workload, run_suite

pytestmark = [pytest.mark.timeout(600), pytest.mark.radical,
              pytest.mark.filterwarnings("ignore:Import `radical` modules before:UserWarning")]

os.environ.setdefault("RADICAL_PROFILE", "FALSE")  # no NTP queries from every RP process
os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")


def need_radical() -> None:
    try:
        import radical.pilot  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail("CI=true but radical.pilot is not installed", pytrace=False)
        pytest.skip("radical.pilot is not installed")
    found = [tool for tool in ("ping", "dig") if shutil.which(tool)]
    if found:  # RP's bootstrap would send traffic to public addresses
        pytest.skip(f"{' and '.join(found)} on PATH: not starting a pilot")


def test_workloads_on_a_pilot(tmp_path: Path) -> None:
    need_radical()
    from asyncflow_hpc.backends.radical import leftover_processes

    ws = [make_workload("noop", 6), make_workload("chain", 3), make_workload("true", 4),
          make_workload("sleep-exe", 4, duration=0.2)]
    options = {"resource": "local.localhost", "cores": 4, "runtime": 15, "work_dir": tmp_path}
    ms = run(run_suite(ws, backend="radical", repeat=1, options=options), 540)
    for m, tasks in zip(ms, (6, 3, 4, 4), strict=True):
        assert m.error is None, m.error
        assert m.backend == "radical" and m.completed == m.tasks == tasks
        assert m.makespan_s > 0 and m.throughput > 0 and m.overhead_per_task_s >= 0
        assert m.startup_s > 0 and m.warmup_s > 0     # pilot start; raptor on first use
        assert m.slots == 4                             # the pilot's cores
    sleepers = ms[-1]
    assert sleepers.ideal_s == pytest.approx(0.2)       # 4 tasks on 4 cores: one wave
    assert sleepers.makespan_s >= 0.2 and 0 < sleepers.utilisation <= 1
    time.sleep(1)
    left = leftover_processes(str(tmp_path), tmp_path)  # RP processes carry its work dir
    assert not left, f"RADICAL-Pilot left processes behind: {left}"
