"""A scaling series over node counts [1] on the SLURM test cluster: JSON and plot.

Goes through the CLI (``asyncflow-hpc bench scaling``), so the batch script (the site's
campaign template), the bench campaign, its per-node worker under ``srun``, the collection
into one JSON document and the plot are all exercised against the real scheduler. Jobs carry
the fixture's tag as their name: teardown cancels any left behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from asyncflow_hpc.cli.bench import bench_command

if TYPE_CHECKING:
    from conftest import SlurmCluster, SlurmJobs

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(300)
def test_weak_scaling_over_one_node(slurm_jobs: SlurmJobs, slurm_cluster: SlurmCluster,
                                    tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # CI installs it ('.[all]'), so this never skips there
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    res = CliRunner().invoke(bench_command, [
        "scaling", "--site", "local-slurm", "--nodes", "1", "--mode", "weak",
        "--workload", "sleep-exe", "--size", "4", "--duration", "0.1",
        "--timeout", "240", "--walltime", "5", "--work-dir", str(tmp_path / "work"),
        "--job-name", slurm_jobs.tag, "--json", str(out), "--plot", str(png),
    ], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "asyncflow-hpc.bench/1" and doc["kind"] == "scaling"
    assert doc["series"]["nodes"] == [1] and doc["series"]["mode"] == "weak"
    [point] = doc["points"]
    slurm_jobs.job_ids.append(point["job_id"])   # cleanup knows it too
    assert point["error"] is None, point
    assert point["job_state"] in ("COMPLETED", "GONE")
    assert point["nodes"] == 1 and point["tasks"] == point["completed"] == 4
    assert set(point["hosts"]) <= set(slurm_cluster.nodes) | {doc["machine"]["host"]}
    assert point["makespan_s"] >= point["ideal_s"] > 0
    assert point["throughput"] > 0 and point["efficiency"] == pytest.approx(1.0)
    assert 0 < point["utilisation"] <= 1
    assert point["startup_s"] > 0 and point["job_start_s"] > 0
    script = Path(point["script"]).read_text()
    assert "-m asyncflow_hpc run" in script and "asyncflow_hpc/bench/campaign.py" in script
    assert f"--job-name={slurm_jobs.tag}" in script
    assert "rank 0 on" in Path(point["log"]).read_text()
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    assert "wrote" in res.output


@pytest.mark.timeout(300)
def test_bench_on_a_site_is_one_batch_job(slurm_jobs: SlurmJobs, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench WORKLOAD --site S``: the same table, measured inside one batch job."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "site.json"
    res = CliRunner().invoke(bench_command, [
        "noop=50", "--site", "local-slurm", "--backend", "dryrun", "--repeat", "2",
        "--job-name", slurm_jobs.tag,
        "--json", str(out)], catch_exceptions=False)
    doc = json.loads(out.read_text()) if out.exists() else {"points": []}
    slurm_jobs.job_ids.extend(p["job_id"] for p in doc["points"] if p.get("job_id"))
    assert res.exit_code == 0, res.output
    [point] = doc["points"]
    assert point["error"] is None and point["tasks"] == point["completed"] == 50
    assert point["makespan_s"] > 0 and point["throughput"] > 0
    assert doc["series"]["backend"] == "dryrun" and doc["series"]["repeat"] == 2
    assert Path(point["script"]).is_relative_to(tmp_path)   # work dir next to the JSON
    assert "noop" in res.output or "tasks/s" in res.output
