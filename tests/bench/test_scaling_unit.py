"""Scaling series pieces that need no scheduler: node lists, shares, aggregation, job script."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from asyncflow_hpc.bench.scaling import (
    CAMPAIGN,
    SeriesSpec,
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


def site(**fields):
    from asyncflow_hpc.hpc.sites import site_from_dict

    return site_from_dict("x", {"scheduler": "slurm", "launcher": "srun", **fields}, "test")


def worker_argv(text: str) -> list[str]:
    """The campaign line of a rendered job, split as bash would."""
    line = next(x for x in text.splitlines() if "-m asyncflow_hpc run" in x)
    return shlex.split(line.rstrip(" &"))


def test_job_is_the_site_campaign_template(tmp_path: Path) -> None:
    s = site(partition="debug", cores_per_node=4, environment={"GREETING": "a 'b' \"c\" $d"},
             prepare=["true"])
    spec = SeriesSpec(site="x", nodes=[2], workload="sleep-exe", size=5, duration=0.25,
                      python="/opt/my python/bin/python3", job_name="afhpc-bench")
    text = render_job(spec, s, 2, tmp_path)
    assert "#SBATCH --nodes=2" in text and "#SBATCH --partition=debug" in text
    assert "#SBATCH --job-name=afhpc-bench" in text
    assert f"#SBATCH --output={tmp_path}/afhpc-bench.out" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    argv = worker_argv(text)
    assert argv[:4] == ["$PYTHON", "-m", "asyncflow_hpc", "run"]
    python = next(x for x in text.splitlines() if x.startswith("PYTHON="))
    assert shlex.split(python) == ["PYTHON=/opt/my python/bin/python3"]
    assert "#SBATCH --exclusive" in text  # a scaling point asks for whole nodes
    assert argv[4] == str(CAMPAIGN) and CAMPAIGN.is_file()
    assert argv[argv.index("--backend") + 1] == "local"
    assert argv[argv.index("--site") + 1] == "x" and "--in-allocation" in argv
    script_args = argv[argv.index("--") + 1:]
    assert script_args[script_args.index("--json") + 1] == f"{tmp_path}/rank{{rank}}.json"
    assert script_args[script_args.index("--duration") + 1] == "0.25"
    assert script_args[script_args.index("--slots") + 1] == "4"
    assert script_args[script_args.index("--nodes") + 1] == "2"
    # the environment value survives the shell unchanged
    env_line = next(x for x in text.splitlines() if x.startswith("export GREETING="))
    out = subprocess.run(["bash", "-c", env_line + '; printf %s "$GREETING"'],
                         capture_output=True, text=True).stdout
    assert out == "a 'b' \"c\" $d"


def test_job_values_are_validated(tmp_path: Path) -> None:
    spec = SeriesSpec(site="x", nodes=[1], job_name="bad name; rm -rf /")
    with pytest.raises(ConfigurationError, match="job name"):
        render_job(spec, site(), 1, tmp_path)
    with pytest.raises(ConfigurationError, match="at most 2 nodes"):
        render_job(SeriesSpec(site="x", nodes=[3]), site(max_nodes=2), 3, tmp_path)
    with pytest.raises(ConfigurationError, match="absolute path"):
        render_job(SeriesSpec(site="x", nodes=[1]), site(), 1, tmp_path / "a dir")


def test_radical_backend_is_passed_to_the_campaign(tmp_path: Path) -> None:
    spec = SeriesSpec(site="x", nodes=[3], backend="radical")
    argv = worker_argv(render_job(spec, site(cores_per_node=2), 3, tmp_path))
    assert argv[argv.index("--backend") + 1] == "radical"


def test_campaign_splits_per_node_with_srun(tmp_path: Path, monkeypatch) -> None:
    from asyncflow_hpc.bench import campaign

    seen: list[list[str]] = []

    class Done:
        returncode = 0

    monkeypatch.setattr(campaign.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Done())
    monkeypatch.setenv("ASYNCFLOW_HPC_BACKEND", "local")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "6")
    assert campaign.main(["--workload", "noop", "--size", "8", "--nodes", "3",
                          "--json", str(tmp_path / "rank{rank}.json")]) == 0
    [cmd] = seen
    assert cmd[:6] == ["srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1",
                       "--cpus-per-task=6", "--kill-on-bad-exit=1"]
    assert cmd[cmd.index("--slots") + 1] == "6" and cmd[cmd.index("--backend") + 1] == "local"
    monkeypatch.setenv("ASYNCFLOW_HPC_BACKEND", "radical")
    monkeypatch.delenv("ASYNCFLOW_HPC_SITE", raising=False)
    with pytest.raises(SystemExit, match="needs --site"):
        campaign.main(["--workload", "noop", "--size", "8", "--nodes", "1", "--json", "x"])


def test_worker_writes_one_rank_file(tmp_path: Path, monkeypatch) -> None:
    from asyncflow_hpc.bench.__main__ import main

    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    out = tmp_path / "rank{rank}.json"
    assert main(["worker", "--workload", "noop", "--size", "9", "--mode", "strong",
                 "--backend", "dryrun", "--json", str(out)]) == 0
    doc = json.loads((tmp_path / "rank1.json").read_text())
    assert doc["kind"] == "scaling-rank" and doc["rank"] == 1 and doc["share"] == 4
    assert doc["measurement"]["completed"] == 4 and doc["started"] <= doc["ended"]
