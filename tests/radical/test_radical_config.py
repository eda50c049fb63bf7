"""Configuration errors of the RADICAL-Pilot backend: raised before RP is started."""

from __future__ import annotations

import pytest

pytest.importorskip("radical.pilot")

from asyncflow_hpc import ConfigurationError  # noqa: E402
from asyncflow_hpc.backends.radical import RadicalPilotBackend  # noqa: E402

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
def test_unknown_task_key_suggests_the_rp_key(key, right):
    import radical.pilot as rp

    from asyncflow_hpc import TaskKind, TaskSpec
    from asyncflow_hpc.backends import _radical_translate as tr

    spec = TaskSpec("t.1", "t", TaskKind.EXECUTABLE, command=["/bin/true"],
                    description={key: 1})
    with pytest.raises(ConfigurationError, match=f"'{key}'.*did you mean '{right}'"):
        tr.task_description(spec, frozenset(rp.TaskDescription._schema))


@pytest.mark.timeout(30)
def test_translation_of_cwd_env_and_shell():
    import radical.pilot as rp

    from asyncflow_hpc import TaskKind, TaskSpec
    from asyncflow_hpc.backends import _radical_translate as tr

    spec = TaskSpec("t.1", "t", TaskKind.EXECUTABLE, command="echo $X | wc -c", shell=True,
                    description={"cwd": "/tmp", "env": {"X": 1}, "shell": True,
                                 "retries": 2, "pre_exec": "module load x"}, timeout=5)
    fields = tr.task_description(spec, frozenset(rp.TaskDescription._schema))
    assert fields == {"sandbox": "/tmp", "environment": {"X": "1"}, "timeout": 5.0,
                      "pre_exec": ["module load x"], "name": "t"}
    assert tr.executable_fields(spec) == ("/bin/sh", ["-c", "echo $X | wc -c"])
    argv = TaskSpec("t.2", "t", TaskKind.EXECUTABLE, command=["/bin/echo", "a  b"])
    assert tr.executable_fields(argv) == ("/bin/echo", ["a  b"])
    assert tr.rp_uid_for("task.000001", set()) == "task.000001"
    assert tr.rp_uid_for("task.000001", {"task.000001"}) == "task.000001.r1"
    assert tr.rp_uid_for("a b/c", set()) == "a_b_c"
