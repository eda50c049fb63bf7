"""``asyncflow-hpc bench``: table output, JSON output, side by side, argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncflow_hpc.cli.bench import bench_command

pytestmark = pytest.mark.timeout(180)


def invoke(*args: str):
    return CliRunner().invoke(bench_command, list(args), catch_exceptions=False)


def test_bench_workloads_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    res = invoke("noop", "chain", "true", "--size", "10", "--repeat", "2", "--json", str(out))
    assert res.exit_code == 0, res.output
    assert "noop x10" in res.output and "chain x10" in res.output
    assert "tasks/s" in res.output and "overhead/task" in res.output and "warm-up" in res.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "asyncflow-hpc.bench/1" and doc["kind"] == "bench"
    assert doc["machine"]["cpus"] >= 1 and doc["backend"] == "local"
    assert [r["workload"] for r in doc["results"]] == ["noop", "chain", "true"]
    for r in doc["results"]:
        assert r["completed"] == r["tasks"] == 10 and r["error"] is None
        assert r["makespan_s"] > 0 and r["throughput"] > 0 and r["startup_s"] > 0
        assert r["warmup_s"] > 0
        assert r["slots"] >= 1


def test_bench_run_is_the_default_subcommand() -> None:
    res = invoke("run", "noop", "-n", "5", "-r", "1", "--backend", "dryrun")
    assert res.exit_code == 0, res.output
    assert "noop x5" in res.output


def test_bench_compare_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    res = invoke("noop", "sleep", "--size", "10", "--duration", "0.01", "-r", "1", "--compare",
                 "--reference-max-tasks", "10", "--markdown", "--json", str(out),
                 "--plot", str(png))
    assert res.exit_code == 0, res.output
    assert "side by side" in res.output and "| workload |" in res.output
    doc = json.loads(out.read_text())
    for row in doc["comparison"]:
        assert row["ratio_vs_asyncio"] > 0
        assert row["asyncio"]["completed"] == row["asyncflow_hpc"]["completed"] == 10
        assert row["radical.asyncflow"] is not None or row["reference_note"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_bench_bad_arguments(tmp_path: Path) -> None:
    assert invoke("nosuch").exit_code != 0
    assert invoke("noop", "--size", "0").exit_code != 0
    assert invoke("noop", "--plot", str(tmp_path / "x.png")).exit_code != 0  # needs --compare
    res = invoke("scaling", "--site", "local-slurm", "--nodes", "0")
    assert res.exit_code != 0 and "--nodes" in res.output
    res = invoke("scaling", "--site", "local-slurm", "--nodes", "1-4", "--mode", "strong",
                 "--size", "2")
    assert res.exit_code != 0 and "idle" in res.output


def test_bench_help_lists_subcommands() -> None:
    res = invoke("--help")
    assert res.exit_code == 0 and "scaling" in res.output and "run" in res.output


def test_bench_per_workload_sizes(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    res = invoke("noop=7", "chain", "--size", "3", "-r", "1", "--json", str(out))
    assert res.exit_code == 0, res.output
    sizes = {r["workload"]: r["tasks"] for r in json.loads(out.read_text())["results"]}
    assert sizes == {"noop": 7, "chain": 3}
    assert invoke("noop=x").exit_code != 0
    assert invoke("noop=0").exit_code != 0
