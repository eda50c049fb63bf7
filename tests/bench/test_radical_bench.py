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


def test_compare_parsl_on_one_pilot(tmp_path: Path, monkeypatch) -> None:
    """``bench --backend radical --compare-parsl``: the warm pool and Parsl HTEX, same cores,
    same workloads, a ratio per workload (tiny sizes: the harness, not the figures)."""
    need_radical()
    if os.environ.get("CI", "").strip().lower() not in {"1", "true", "yes"}:
        pytest.importorskip("parsl")
    from click.testing import CliRunner

    from asyncflow_hpc.cli.bench import bench_command

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(bench_command, [
        "noop=300", "true=30", "sleep=20", "chain=10", "--backend", "radical",
        "--compare-parsl", "--cores", "2", "--json", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split()[:1] in
            (["noop"], ["true"], ["sleep"], ["chain"])}
    assert set(rows) == {"noop", "true", "sleep", "chain"}, res.output
    for row in rows.values():
        assert row[2].endswith("/s") and row[3].endswith("/s"), row  # ours, Parsl's
        assert float(row[4]) > 0  # the ratio
    import json
    doc = json.loads(out.read_text())
    assert [p["tasks"] for p in doc["ours"]] == [300, 30, 20, 10]
    assert all(p["error"] is None for p in doc["ours"] + doc["parsl"]), doc


def test_compare_parsl_says_what_it_needs() -> None:
    from click.testing import CliRunner

    from asyncflow_hpc.cli.bench import bench_command

    res = CliRunner().invoke(bench_command, ["noop", "--compare-parsl"])
    assert res.exit_code == 2 and "add --backend radical" in res.output
    res = CliRunner().invoke(bench_command, ["fanout", "--compare-parsl", "--backend",
                                             "radical"])
    if "not installed" not in res.output:
        assert res.exit_code == 2 and "--compare-parsl runs noop, true, sleep, chain" in \
            res.output, res.output
