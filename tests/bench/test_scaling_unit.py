"""Scaling series pieces that need no scheduler: node lists, shares, aggregation, job script."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from asyncflow_hpc.bench.scaling import (
    SeriesSpec,
    _Site,
    add_efficiency,
    aggregate_point,
    parse_nodes,
    render_job,
    share_of,
)
from asyncflow_hpc.errors import ConfigurationError

pytestmark = pytest.mark.timeout(30)


def test_parse_nodes() -> None:
    assert parse_nodes("1,2,4") == [1, 2, 4]
    assert parse_nodes("4,1-3, 2") == [1, 2, 3, 4]
    for bad in ("", "0", "a", "1,,x", "2-"):
        with pytest.raises(ConfigurationError):
            parse_nodes(bad)


def test_shares() -> None:
    assert [share_of(10, "weak", r, 3) for r in range(3)] == [10, 10, 10]
    assert [share_of(10, "strong", r, 3) for r in range(3)] == [4, 3, 3]
    assert sum(share_of(101, "strong", r, 7) for r in range(7)) == 101
    with pytest.raises(ConfigurationError):
        share_of(1, "sideways", 0, 1)


def rank(tasks: int, makespan: float, slots: int = 2, work: float = 0.0) -> dict:
    return {"host": "n", "work_core_s": work, "measurement": {
        "tasks": tasks, "completed": tasks, "makespan_s": makespan, "ideal_s": makespan / 2,
        "overhead_per_task_s": 0.001, "startup_s": 0.01, "slots": slots, "error": None}}


def test_aggregate_and_efficiency() -> None:
    p1 = aggregate_point(1, [rank(10, 1.0, work=1.6)])
    p2 = aggregate_point(2, [rank(10, 1.0), rank(10, 2.0)])
    assert p1["throughput"] == pytest.approx(10.0)
    assert p1["utilisation"] == pytest.approx(0.8)
    assert p2["tasks"] == 20 and p2["makespan_s"] == 2.0    # the slowest node counts
    assert p2["throughput"] == pytest.approx(10.0)
    add_efficiency([p2, p1])
    assert p1["efficiency"] == pytest.approx(1.0)
    assert p2["efficiency"] == pytest.approx(0.5)
    bad = rank(5, 1.0)
    bad["measurement"]["error"] = "boom"
    p3 = aggregate_point(3, [bad])
    assert p3["error"] == "boom" and "throughput" not in p3


def test_job_script_quotes_awkward_paths(tmp_path: Path) -> None:
    odd = tmp_path / "it's a dir $HOME"
    site = _Site("x", partition="debug", cores_per_node=4,
                 environment={"GREETING": "a 'b' \"c\" $d"}, prepare=("true",))
    spec = SeriesSpec(site="x", nodes=[2], workload="sleep-exe", size=5, duration=0.25,
                      python="/opt/my python/bin/python3")
    text = render_job(spec, site, 2, odd)
    assert "#SBATCH --nodes=2" in text and "#SBATCH --partition=debug" in text
    assert "#SBATCH --cpus-per-task=4" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    last = text.strip().splitlines()[-1]
    argv = shlex.split(last)
    assert argv[:3] == ["srun", "--nodes=2", "--ntasks-per-node=1"]
    assert argv[3] == "/opt/my python/bin/python3"
    assert argv[argv.index("--json") + 1] == f"{odd}/n2.rank{{rank}}.json"
    assert argv[argv.index("--duration") + 1] == "0.25"
    # the environment value survives the shell unchanged
    env_line = next(x for x in text.splitlines() if x.startswith("export GREETING="))
    out = subprocess.run(["bash", "-c", env_line + '; printf %s "$GREETING"'],
                         capture_output=True, text=True).stdout
    assert out == "a 'b' \"c\" $d"


def test_radical_backend_runs_one_process(tmp_path: Path) -> None:
    spec = SeriesSpec(site="x", nodes=[3], backend="radical")
    text = render_job(spec, _Site("x", cores_per_node=2), 3, tmp_path)
    assert "srun" not in text.strip().splitlines()[-1]
    assert "--ntasks-per-node" not in text
