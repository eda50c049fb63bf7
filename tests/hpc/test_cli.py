"""The hpc verbs through click: help texts, dry-run rendering, errors, run's site flags."""

from __future__ import annotations

import json
import os
import sys

import click
import pytest
from click.testing import CliRunner

from asyncflow_hpc.cli.doctor import doctor_command
from asyncflow_hpc.cli.run import run_command
from asyncflow_hpc.cli.sites import sites_group
from asyncflow_hpc.cli.submit import configure_run, submit_command, with_hpc_options
from asyncflow_hpc.cli.templates import templates_group


@pytest.fixture(autouse=True)
def restore_process_state():
    """The verbs set ASYNCFLOW_HPC_* in os.environ (and run puts the script's folder on
    sys.path); monkeypatch.delenv of an absent key records nothing, so restore it all here."""
    env, path = dict(os.environ), list(sys.path)
    yield
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = path


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ASYNCFLOW_HPC_SITE_FILE", raising=False)
    for key in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "PBS_JOBID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "camp.py").write_text("print('hi')\n")
    (tmp_path / "sites.toml").write_text(
        '[sites.mine]\nscheduler = "slurm"\npartition = "debug"\naccount = "acc"\n'
        'prepare = ["module load python"]\n')
    return CliRunner()


@pytest.mark.parametrize("command, args", [
    (run_command, []), (submit_command, []), (sites_group, []), (sites_group, ["list"]),
    (sites_group, ["show"]), (sites_group, ["check"]), (templates_group, []), (templates_group, ["list"]),
    (templates_group, ["show"]), (doctor_command, [])])
def test_help_is_complete(runner, command, args):
    result = runner.invoke(command, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    body = result.output.split("Options:")[0]
    assert len(body.split("\n", 2)[-1].strip()) > 20, f"no description: {result.output}"


def test_submit_dry_run(runner, tmp_path):
    result = runner.invoke(submit_command, ["camp.py", "--site", "mine", "--site-file", "sites.toml",
                                            "--nodes", "2", "--runtime", "20", "--dry-run",
                                            "--", "--samples", "3"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "#SBATCH --partition=debug" in text and "#SBATCH --account=acc" in text
    assert "#SBATCH --nodes=2" in text and "#SBATCH --time=00:20:00" in text
    assert "module load python" in text
    assert f"--site-file {tmp_path}/sites.toml -- --samples 3 &" in text
    assert not list(tmp_path.glob("*.sh"))  # dry run writes nothing


def test_submit_refuses_unsafe_values(runner):
    result = runner.invoke(submit_command, ["camp.py", "--site", "local-slurm", "--dry-run",
                                            "--job-name", "x;rm -rf ~"])
    assert result.exit_code != 0 and "job name" in result.output and "';'" in result.output
    result = runner.invoke(submit_command, ["camp.py", "--site", "nosuch", "--dry-run"])
    assert result.exit_code != 0 and "unknown site 'nosuch'" in result.output


def test_sites_list_show(runner):
    result = runner.invoke(sites_group, ["list", "--site-file", "sites.toml"])
    assert result.exit_code == 0 and "mine" in result.output and "local-slurm" in result.output
    result = runner.invoke(sites_group, ["show", "mine", "--site-file", "sites.toml",
                                         "--rp-config", "allocation"])
    assert result.exit_code == 0, result.output
    assert 'partition       = "debug"' in result.output
    assert "afhpc_mine.allocation" in result.output and "fork://localhost/" in result.output
    bad = runner.invoke(sites_group, ["show", "mien", "--site-file", "sites.toml"])
    assert bad.exit_code != 0 and "did you mean 'mine'" in bad.output


def test_templates_verbs(runner):
    result = runner.invoke(templates_group, ["list"])
    assert "slurm/campaign" in result.output and "pbs/campaign" in result.output
    result = runner.invoke(templates_group, ["show", "slurm/campaign"])
    assert "{{ job_name }}" in result.output and "--in-allocation" in result.output
    result = runner.invoke(templates_group, ["show", "slurm/nope"])
    assert result.exit_code != 0 and "available" in result.output
    result = runner.invoke(templates_group, ["show", "slurm/campain"])
    assert result.exit_code != 0 and "(did you mean 'slurm/campaign'?)" in result.output


def test_doctor_json(runner):
    result = runner.invoke(doctor_command, ["--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert {"tools", "mpi4py", "radical.pilot", "allocation", "network_tools"} <= set(info)


def test_configure_run(runner, tmp_path, monkeypatch):
    assert configure_run(None, None, None, False) == {}
    env = configure_run("mine", 2, 30, False, "sites.toml")
    assert env == {"ASYNCFLOW_HPC_BACKEND": "radical", "ASYNCFLOW_HPC_SITE": "mine",
                   "ASYNCFLOW_HPC_SITE_FILE": str(tmp_path / "sites.toml"),
                   "ASYNCFLOW_HPC_NODES": "2", "ASYNCFLOW_HPC_RUNTIME": "30"}
    with pytest.raises(click.UsageError, match="no SLURM or PBS allocation"):
        configure_run("mine", None, None, True, "sites.toml")
    monkeypatch.setenv("SLURM_JOB_ID", "3")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "vm")
    env = configure_run(None, None, None, True)
    assert env["ASYNCFLOW_HPC_IN_ALLOCATION"] == "1" and env["ASYNCFLOW_HPC_SITE"] == "local-slurm"
    with pytest.raises(click.BadParameter, match="unknown site"):
        configure_run("nosuch", None, None, False)
    with pytest.raises(click.BadParameter, match="must be >= 1"):
        configure_run("mine", 0, None, False, "sites.toml")


def test_with_hpc_options_sets_environment(runner, monkeypatch):
    seen = {}

    @click.command()
    @click.option("--backend", default=None)
    def fake_run(backend):
        seen.update({k: v for k, v in os.environ.items() if k.startswith("ASYNCFLOW_HPC_")})

    for key in ("ASYNCFLOW_HPC_BACKEND", "ASYNCFLOW_HPC_SITE", "ASYNCFLOW_HPC_NODES",
                "ASYNCFLOW_HPC_RUNTIME", "ASYNCFLOW_HPC_SITE_FILE"):
        monkeypatch.delenv(key, raising=False)
    cmd = with_hpc_options(fake_run)
    result = runner.invoke(cmd, ["--site", "mine", "--site-file", "sites.toml", "--nodes", "3"])
    assert result.exit_code == 0, result.output
    assert seen["ASYNCFLOW_HPC_BACKEND"] == "radical" and seen["ASYNCFLOW_HPC_NODES"] == "3"
    seen.clear()
    monkeypatch.delenv("ASYNCFLOW_HPC_BACKEND")
    runner.invoke(cmd, ["--site", "mine", "--site-file", "sites.toml", "--backend", "local"])
    assert "ASYNCFLOW_HPC_BACKEND" not in seen  # explicit --backend wins (run sets it itself)
    assert "--in-allocation" in runner.invoke(cmd, ["--help"]).output


def test_run_has_site_flags(runner):
    text = runner.invoke(run_command, ["--help"]).output
    for flag in ("--backend", "--site NAME", "--site-file", "--nodes", "--runtime MIN",
                 "--in-allocation", "--resume", "--journal", "--telemetry"):
        assert flag in text, f"{flag} missing from run --help"


def test_run_with_site_reaches_the_script(runner, tmp_path, monkeypatch):
    """run --site ... sets the variables before the campaign script runs (script sees them)."""
    for key in ("ASYNCFLOW_HPC_BACKEND", "ASYNCFLOW_HPC_SITE", "ASYNCFLOW_HPC_NODES",
                "ASYNCFLOW_HPC_RUNTIME", "ASYNCFLOW_HPC_SITE_FILE", "ASYNCFLOW_HPC_JOURNAL",
                "ASYNCFLOW_HPC_PROGRESS", "ASYNCFLOW_HPC_IN_ALLOCATION",
                "ASYNCFLOW_HPC_CLAIMED", "ASYNCFLOW_HPC_TELEMETRY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("sys.argv", ["x"])
    (tmp_path / "show.py").write_text(
        "import os, sys\nprint(sorted((k, v) for k, v in os.environ.items() "
        "if k.startswith('ASYNCFLOW_HPC_') and k in ('ASYNCFLOW_HPC_BACKEND', 'ASYNCFLOW_HPC_SITE', "
        "'ASYNCFLOW_HPC_NODES', 'ASYNCFLOW_HPC_RUNTIME')), sys.argv[1:])\n")
    result = runner.invoke(run_command, ["show.py", "--site", "mine", "--site-file", "sites.toml",
                                         "--nodes", "2", "--runtime", "15", "-q", "--", "--n", "3"])
    assert result.exit_code == 0, result.output
    assert ("[('ASYNCFLOW_HPC_BACKEND', 'radical'), ('ASYNCFLOW_HPC_NODES', '2'), "
            "('ASYNCFLOW_HPC_RUNTIME', '15'), ('ASYNCFLOW_HPC_SITE', 'mine')] ['--n', '3']") \
        in result.output
    bad = runner.invoke(run_command, ["show.py", "--site", "nosuch"])
    assert bad.exit_code != 0 and "unknown site 'nosuch'" in bad.output
    outside = runner.invoke(run_command, ["show.py", "--in-allocation"])
    assert outside.exit_code != 0 and "no SLURM or PBS allocation" in outside.output


def test_create_backend_from_env_uses_the_site(tmp_path, monkeypatch):
    """ASYNCFLOW_HPC_SITE (from run --site) becomes the pilot of the backend the registry
    builds from the environment (built, not started: no RP session here)."""
    pytest.importorskip("radical.pilot")
    from asyncflow_hpc.backends import backend_class

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[sites.c]\nscheduler = "slurm"\npartition = "p"\n'
                                     'account = "a"\ncores_per_node = 4\n')
    for key, value in {"ASYNCFLOW_HPC_BACKEND": "radical", "ASYNCFLOW_HPC_SITE": "c",
                       "ASYNCFLOW_HPC_SITE_FILE": str(tmp_path / "s.toml"),
                       "ASYNCFLOW_HPC_NODES": "3", "ASYNCFLOW_HPC_RUNTIME": "20"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ASYNCFLOW_HPC_RESOURCE", raising=False)
    monkeypatch.delenv("ASYNCFLOW_HPC_IN_ALLOCATION", raising=False)
    backend = backend_class("radical").from_env(tmp_path / "w")
    described = backend.describe()
    assert described["resource"] == "afhpc_c.batch"
    pilot = backend.opts.pilot
    assert (pilot["nodes"], pilot["runtime"], pilot["queue"], pilot["project"]) == (3, 20, "p", "a")
    assert backend.work_dir == tmp_path / "w"
    entry = backend.opts.site_config["afhpc_c.batch"]
    assert entry["schemas"]["batch"]["job_manager_endpoint"] == "slurm://localhost/"
    monkeypatch.setenv("ASYNCFLOW_HPC_RESOURCE", "local.localhost")
    with pytest.raises(Exception, match="give one"):
        backend_class("radical").from_env()
    # a site with the local backend (in an allocation: tasks are the job's subprocesses)
    assert type(backend_class("local").from_env()).__name__ == "LocalExecutionBackend"


CAMPAIGN_ERRORS = {
    "syntax.py": "import asyncio\ndef main(:\n    pass\n",
    "raises.py": ("import asyncio\nfrom asyncflow_hpc import WorkflowEngine\n\n"
                  "async def main():\n"
                  "    async with WorkflowEngine.create() as flow:\n"
                  "        @flow.function_task\n"
                  "        def load():\n"
                  "            raise FileNotFoundError('data.csv is missing')\n"
                  "        await load()\n\n"
                  "asyncio.run(main())\n"),
}


@pytest.mark.parametrize("name, line", [
    ("syntax.py", "syntax.py:2: SyntaxError: invalid syntax"),
    ("raises.py", "raises.py:8: FileNotFoundError: data.csv is missing"),  # in the task
])
def test_an_error_in_the_campaign_is_one_line_and_debug_shows_all(tmp_path, name, line):
    """A syntax error or a task that raises: where and what in one line, no click or runpy
    frames, exit 1; --debug shows the traceback."""
    import subprocess
    import sys

    (tmp_path / name).write_text(CAMPAIGN_ERRORS[name])
    env = {**os.environ, "ASYNCFLOW_HPC_PROGRESS": "off"}
    argv = [sys.executable, "-m", "asyncflow_hpc", "run", "--quiet", name]
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 1, out.stderr
    assert f"asyncflow-hpc: {line}" in out.stderr
    assert "Traceback" not in out.stderr and "runpy" not in out.stderr
    assert "click" not in out.stderr and "--debug" in out.stderr
    debug = subprocess.run(argv[:4] + ["--debug"] + argv[4:], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_bench_with_a_backend_that_is_not_installed_is_one_line(tmp_path):
    """RADICAL-Pilot hidden (a plain ``radical`` package ahead on the path): one line naming
    the missing package and the install command, no traceback."""
    import subprocess

    fake = tmp_path / "hide" / "radical"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    env["PYTHONPATH"] = f"{fake.parent}{os.pathsep}{repo}"
    out = subprocess.run([sys.executable, "-m", "asyncflow_hpc", "bench", "noop", "--size", "5",
                          "--backend", "radical"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "radical.pilot" in lines[0] and "pip install 'asyncflow-hpc[radical]'" in lines[0]
    assert "Traceback" not in out.stderr


def test_doctor_says_what_each_finding_means(runner):
    """Text mode: each finding is followed by what it means for a campaign (here, and on a
    machine that has nothing)."""
    from asyncflow_hpc.cli.doctor import explain

    result = runner.invoke(doctor_command, [])
    assert result.exit_code == 0, result.output
    for heading in ("Batch schedulers", "MPI (tasks with", "RADICAL-Pilot", "This shell",
                    "Network"):
        assert heading in result.output
    bare = explain({"tools": {}, "slurm_controller_up": None, "mpi4py": None,
                    "radical.pilot": None, "radical.utils": None, "allocation": None,
                    "allocation_variables": {}, "network_tools": ["ping"]})
    text = "\n".join(bare)
    assert "sites with scheduler = \"slurm\" cannot be used from this machine" in text
    assert "MPI tasks fail on the local backend" in text
    assert "pip install 'asyncflow-hpc[radical]'" in text
    assert "remove them on loopback-only machines" in text
