"""``submit`` checks before queueing, sites people can write (issue 15 items 6 and 7).

The campaign script is compiled; the job's interpreter is the site's (after its prepare
lines) and is checked when it can be; exclusive nodes, tasks per node, GPUs and memory are
asked only when the site or the command line asks; a Site can be built in Python.
"""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from asyncflow_hpc.cli.submit import submit_command
from asyncflow_hpc.hpc.sites import Site, SiteError, site_from_dict


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ASYNCFLOW_HPC_SITE_FILE", raising=False)
    (tmp_path / "campaign.py").write_text("print('hello')\n")
    return tmp_path


def submit(tmp_path, *args, sites: str = ""):
    (tmp_path / "sites.toml").write_text(sites or '[sites.plain]\nscheduler = "slurm"\n')
    return CliRunner().invoke(submit_command, [str(tmp_path / "campaign.py"), "--site-file",
                                               str(tmp_path / "sites.toml"), *args])


def sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_a_script_that_does_not_compile_is_refused(campaign):
    (campaign / "campaign.py").write_text("import asyncio\ndef main(:\n    pass\n")
    res = submit(campaign, "--site", "plain")
    assert res.exit_code == 1
    assert "campaign.py:2: SyntaxError" in res.output and "nothing was submitted" in res.output
    assert not list(campaign.glob("*.sh"))


def test_only_asked_options_reach_the_script(campaign):
    plain = submit(campaign, "--site", "plain", "--dry-run")
    assert plain.exit_code == 0, plain.output
    lines = sbatch_lines(plain.output)
    assert not [x for x in lines if "--exclusive" in x or "--ntasks-per-node" in x
                or "--gpus" in x or "--mem" in x], lines
    asked = submit(campaign, "--site", "plain", "--dry-run", "--exclusive",
                   "--ntasks-per-node", "2", "--gpus-per-node", "1", "--memory", "2G")
    assert asked.exit_code == 0, asked.output
    lines = sbatch_lines(asked.output)
    for want in ("#SBATCH --exclusive", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=2G"):
        assert want in lines, (want, lines)
    site = submit(campaign, "--site", "big", "--dry-run", sites=(
        '[sites.big]\nscheduler = "slurm"\nexclusive = true\nmemory = 4000\n'
        'directives = ["--constraint=haswell"]\n'))
    lines = sbatch_lines(site.output)
    assert {"#SBATCH --exclusive", "#SBATCH --mem=4000M",
            "#SBATCH --constraint=haswell"} <= set(lines), lines
    bad = submit(campaign, "--site", "plain", "--dry-run", "--memory", "lots")
    assert bad.exit_code == 1 and "not a memory size" in bad.output


def test_the_job_uses_the_sites_interpreter(campaign):
    mine = submit(campaign, "--site", "plain", "--dry-run")
    assert f"PYTHON={sys.executable}" in mine.output  # no prepare lines: this environment
    assert '"$PYTHON" -m asyncflow_hpc run' in mine.output
    assert "import asyncflow_hpc, radical.pilot" in mine.output  # the job checks it first
    prepared = submit(campaign, "--site", "mod", "--dry-run", sites=(
        '[sites.mod]\nscheduler = "slurm"\nprepare = ["module load python/3.11"]\n'))
    assert prepared.exit_code == 0, prepared.output
    text = prepared.output
    assert "PYTHON=python3" in text
    assert text.index("module load python/3.11") < text.index("PYTHON=python3")
    assert "cannot check the job's Python here" in prepared.output


def test_a_site_interpreter_without_the_backend_is_refused(campaign):
    # an interpreter that exists here but lacks radical.pilot: refused before queueing
    fake = campaign / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'radical'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    res = submit(campaign, "--site", "other", sites=(
        f'[sites.other]\nscheduler = "slurm"\npython = "{fake}"\n'))
    assert res.exit_code == 1
    assert f"the job's Python {fake} cannot import asyncflow_hpc, radical.pilot" in res.output
    assert "No module named 'radical'" in res.output and "nothing was submitted" in res.output
    # the same interpreter is fine for a campaign on the local backend? no: it cannot even
    # import asyncflow_hpc
    res = submit(campaign, "--site", "other", "--backend", "local", "--dry-run", sites=(
        f'[sites.other]\nscheduler = "slurm"\npython = "{fake}"\n'))
    assert res.exit_code == 1 and "cannot import asyncflow_hpc:" in res.output


def test_login_node_pilot_script_preview(campaign):
    pytest.importorskip("psij")
    sites = ('[sites.lg]\nscheduler = "slurm"\ncores_per_node = 4\npartition = "debug"\n'
             'memory = "8G"\ndirectives = ["--constraint=haswell"]\n')
    res = submit(campaign, "--site", "lg", "--dry-run", "--login-node", "--nodes", "2",
                 "--runtime", "30", sites=sites)
    assert res.exit_code == 0, res.output
    lines = sbatch_lines(res.output)
    assert "#SBATCH --nodes=2" in lines and '#SBATCH --partition="debug"' in lines
    assert "#SBATCH --export=NONE" in lines  # as RP submits batch pilots
    assert any(x.startswith("#SBATCH --mem=8G") for x in lines)
    assert any(x.startswith("#SBATCH --constraint=haswell") for x in lines)
    assert not any("--exclusive" in x for x in lines)
    from asyncflow_hpc.cli.sites import sites_group

    shown = CliRunner().invoke(sites_group, ["show", "lg", "--site-file",
                                             str(campaign / "sites.toml"), "--job-script",
                                             "--nodes", "2", "--runtime", "30"])
    assert shown.exit_code == 0 and sbatch_lines(shown.output) == lines


def test_sites_people_can_write():
    site = Site("mycluster", "slurm", partition="cpu", walltime="1-00:00:00", memory="64g",
                max_walltime=2880)
    assert site.walltime == 1440 and site.memory == "64G" and site.launcher == "srun"
    assert site.batch_options() == ["--mem=64G"]
    assert Site("p", "pbs", memory=2048, exclusive=True).batch_options() == [
        "-l mem=2048mb", "-l place=excl"]
    with pytest.raises(SiteError, match="not a memory size"):
        Site("x", "slurm", memory="much")
    with pytest.raises(SiteError, match="scheduler"):
        Site("x", "lsf")
    with pytest.raises(SiteError, match="exceeds max_walltime"):
        Site("x", "slurm", walltime="03:00:00", max_walltime=60)
    with pytest.raises(SiteError, match=r"cpus_per_task.*task_description=\{'cores_per_rank'"):
        site_from_dict("x", {"scheduler": "slurm", "cpus_per_task": 4})
    with pytest.raises(SiteError, match="unknown field 'mem' \\(did you mean 'memory'"):
        site_from_dict("x", {"scheduler": "slurm", "mem": "1G"})


def test_a_site_object_configures_the_pilot(tmp_path):
    pytest.importorskip("radical.pilot")
    from asyncflow_hpc.backends.radical import RadicalPilotBackend

    site = Site("apitest", "slurm", cores_per_node=2, walltime="00:12:00", exclusive=True,
                partition="debug", directives=["--comment=x"])
    backend = RadicalPilotBackend(site=site, nodes=2, work_dir=tmp_path)
    opts = backend.opts
    assert opts.pilot["resource"] == "afhpc_apitest.batch"
    assert opts.pilot["nodes"] == 2 and opts.pilot["runtime"] == 12
    assert opts.pilot["queue"] == "debug"
    assert opts.site_config["afhpc_apitest.batch"]["cores_per_node"] == 2
    assert opts.batch_options == ("slurm", ("--exclusive", "--comment=x"))
    with pytest.raises(Exception, match="sets resource itself"):
        RadicalPilotBackend(site=site, resource="local.localhost", work_dir=tmp_path)


def test_cpus_per_task_in_a_task_description_suggests_cores_per_rank():
    from asyncflow_hpc import LocalExecutionBackend
    from asyncflow_hpc.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="did you mean 'cores_per_rank'"):
        LocalExecutionBackend().check_task_description({"cpus_per_task": 2}, "t")
