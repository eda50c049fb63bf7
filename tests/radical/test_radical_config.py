"""Configuration errors of the RADICAL-Pilot backend: raised before RP is started."""

from __future__ import annotations

import pytest

pytest.importorskip("radical.pilot")

from asyncflow_hpc import ConfigurationError  # noqa: E402
from asyncflow_hpc.backends.radical import RadicalPilotBackend  # noqa: E402
from asyncflow_hpc.backends.radical.environment import write_resource_configs  # noqa: E402

pytestmark = pytest.mark.radical


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key, right", [
    ("walltime", "runtime"), ("gpus_per_node", "gpus"), ("partition", "queue"),
    ("nodse", "nodes"), ("cores_per_node", "cores"),
])
def test_unknown_pilot_key_names_the_right_one(key, right, tmp_path):
    with pytest.raises(ConfigurationError, match=f"'{key}'.*did you mean '{right}'"):
        RadicalPilotBackend({key: 1}, work_dir=tmp_path)


@pytest.mark.timeout(30)
def test_pilot_values_and_options_are_checked(tmp_path):
    RadicalPilotBackend(account="proj", nodes=1, work_dir=tmp_path)  # account = project
    for kw in [{"runtime": 0}, {"nodes": -1}, {"cores": "4"}, {"exit_on_error": True},
               {"resource": "localhost"}, {"on_pilot_failure": "retry"},
               {"max_pilot_restarts": -1}, {"raptor": {"wrokers": 2}},
               {"raptor": {"workers": 0}}]:
        with pytest.raises(ConfigurationError):
            RadicalPilotBackend(work_dir=tmp_path, **kw)


@pytest.mark.timeout(30)
def test_default_resource_and_env_override(tmp_path, monkeypatch):
    monkeypatch.delenv("ASYNCFLOW_HPC_RESOURCE", raising=False)
    assert RadicalPilotBackend(work_dir=tmp_path).describe()["resource"] == "local.localhost"
    monkeypatch.setenv("ASYNCFLOW_HPC_RESOURCE", "tacc.frontera")
    assert RadicalPilotBackend(work_dir=tmp_path).describe()["resource"] == "tacc.frontera"
    assert RadicalPilotBackend({"resource": "local.localhost"},
                               work_dir=tmp_path).describe()["resource"] == "local.localhost"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key, right", [
    ("coress", "cores_per_rank"), ("cores", "cores_per_rank"), ("gpus", "gpus_per_rank"),
    ("enviroment", "environment"), ("pre_exe", "pre_exec"), ("walltime", "timeout"),
    ("nprocs", "ranks"),
])
def test_unknown_task_key_suggests_the_rp_key(key, right, tmp_path):
    backend = RadicalPilotBackend(work_dir=tmp_path)
    with pytest.raises(ConfigurationError, match=f"'{key}'.*did you mean '{right}'"):
        backend.check_task_description({key: 1}, "t")


@pytest.mark.timeout(30)
def test_translation_of_cwd_env_and_shell():
    from asyncflow_hpc import TaskKind, TaskSpec
    from asyncflow_hpc.backends.radical import translate as tr

    spec = TaskSpec("t.1", "t", TaskKind.EXECUTABLE, command="echo $X | wc -c", shell=True,
                    description={"cwd": "/tmp", "env": {"X": 1}, "shell": True,
                                 "retries": 2, "pre_exec": "module load x"}, timeout=5)
    fields = tr.task_description(spec)
    assert fields == {"sandbox": "/tmp", "environment": {"X": "1"}, "timeout": 5.0,
                      "pre_exec": ["module load x"], "name": "t"}
    assert tr.executable_fields(spec) == ("/bin/sh", ["-c", "echo $X | wc -c"])
    argv = TaskSpec("t.2", "t", TaskKind.EXECUTABLE, command=["/bin/echo", "a  b"])
    assert tr.executable_fields(argv) == ("/bin/echo", ["a  b"])
    assert tr.rp_uid_for("task.000001", set()) == "task.000001"
    assert tr.rp_uid_for("task.000001", {"task.000001"}) == "task.000001.r1"
    assert tr.rp_uid_for("a b/c", set()) == "a_b_c"


@pytest.mark.timeout(30)
def test_rp_environment_defaults_and_folders(tmp_path, monkeypatch):
    import os

    from asyncflow_hpc.backends.radical.environment import rp_environment

    monkeypatch.delenv("RADICAL_PROFILE", raising=False)
    monkeypatch.setenv("RADICAL_DEFAULT_IFACE", "eth7")  # the user's choice wins
    monkeypatch.delenv("RADICAL_PILOT_SESSION_BASE", raising=False)
    with rp_environment(tmp_path):
        assert os.environ["RADICAL_PROFILE"] == "FALSE"
        assert os.environ["RADICAL_DEFAULT_IFACE"] == "eth7"
        assert os.environ["RADICAL_PILOT_SESSION_BASE"] == str(tmp_path / "session")
        assert os.environ["RADICAL_CONFIG_USER_DIR"] == str(tmp_path / "config")
        assert os.environ["TMPDIR"] == str(tmp_path / "tmp")
    # only RP's processes see them: the program's environment is restored
    assert "RADICAL_PROFILE" not in os.environ
    assert "RADICAL_PILOT_SESSION_BASE" not in os.environ
    assert os.environ["RADICAL_DEFAULT_IFACE"] == "eth7"
    monkeypatch.delenv("RADICAL_DEFAULT_IFACE")
    with rp_environment(tmp_path):
        assert os.environ["RADICAL_DEFAULT_IFACE"] == "lo"


@pytest.mark.timeout(30)
def test_local_resource_config_written_into_work_dir(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("RADICAL_CONFIG_USER_DIR", str(tmp_path / "nowhere"))
    backend = RadicalPilotBackend(cores=64, work_dir=tmp_path / "w")
    write_resource_configs(backend.opts, str(tmp_path / "nowhere"))
    cfg = json.loads((tmp_path / "w" / "config" / ".radical" / "pilot" / "configs"
                      / "resource_local.json").read_text())["localhost"]
    assert any("export PATH=" in line for line in cfg["pre_bootstrap_0"])
    # a pilot larger than the machine: MPI ranks must not be pinned to cores it lacks
    assert cfg["launch_methods"]["order"].index("MPIRUN") < cfg["launch_methods"]["order"].index(
        "MPIEXEC")
    small = RadicalPilotBackend(cores=1, work_dir=tmp_path / "s")
    write_resource_configs(small.opts, str(tmp_path / "nowhere"))
    cfg = json.loads((tmp_path / "s" / "config" / ".radical" / "pilot" / "configs"
                      / "resource_local.json").read_text())["localhost"]
    assert "launch_methods" not in cfg
