"""RP's client in a child process (``client="process"``): what crosses, and its lifetime.

The shared pilot (``rp_backend``) runs in the default mode, the process mode; the other RP
test files exercise it through the public API. Here: the choice of mode, errors crossing the
process boundary as themselves, and the child never outliving its parent (SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from radical_helpers import close, live_children, refuse_network_tools, run, sleepers

from asyncflow_hpc import (
    BackendError,
    ConfigurationError,
    DependencyFailureError,
    ExecutableNotFoundError,
    PilotFailedError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
    WorkflowEngine,
)
from asyncflow_hpc.backends.radical import RadicalPilotBackend, leftover_processes
from asyncflow_hpc.backends.radical import messages as wire
from asyncflow_hpc.errors import UnknownBackendError

pytestmark = pytest.mark.radical


class Oops(Exception):
    """A user exception with an attribute, raised by a function defined in this module.

    (Pickle rebuilds an exception as ``cls(*args)``: one whose ``__init__`` takes other
    parameters than its ``args`` needs its own ``__reduce__``, here as everywhere.)
    """


def shout(text: str) -> str:
    """A module-level function task (pickled by reference, imported by the raptor worker)."""
    return text.upper()


def raise_oops(code: int) -> None:
    err = Oops(f"oops {code}")
    err.code = code
    raise err


# --------------------------------------------------------------------- no pilot needed

@pytest.mark.parametrize("exc", [
    TaskExecutionError(["/bin/x", "-v"], 3, "line\nboom", task="t1", details="sandbox: /s"),
    PilotFailedError("pilot.0000", "FAILED", "/sandbox/pilot.0000", "agent died"),
    ExecutableNotFoundError("/no/such", "/no/such --flag"),
    UnknownBackendError("gpu", ["local", "radical"]),
    DependencyFailureError("dependency failed", ["t.1"], ValueError("root")),
    TaskTimeoutError("too slow"),
    ConfigurationError("bad key"),
])
def test_errors_cross_as_themselves(exc):
    back = wire.load_error(wire.dump_error(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args
    assert vars(back).keys() == vars(exc).keys()
    for key, value in vars(exc).items():
        assert repr(getattr(back, key)) == repr(value), key
    assert pickle.loads(pickle.dumps(exc)).args == exc.args  # plain pickle too


def test_unpicklable_error_becomes_a_backend_error_naming_it():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("no pickling")

    back = wire.load_error(wire.dump_error(Local("detail")))
    assert isinstance(back, BackendError)
    assert "Local" in str(back) and "detail" in str(back)
    # a cause that does not pickle is dropped, the error itself survives
    err = BackendError("outer")
    err.__cause__ = Local("inner")
    back = wire.load_error(wire.dump_error(err))
    assert type(back) is BackendError and str(back) == "outer"


def test_client_mode_is_checked_before_anything_starts(tmp_path, monkeypatch):
    before = live_children()
    monkeypatch.delenv("ASYNCFLOW_HPC_RP_CLIENT", raising=False)
    assert RadicalPilotBackend(work_dir=tmp_path).client == "process"  # the default
    assert RadicalPilotBackend(work_dir=tmp_path, client="thread").client == "thread"
    with pytest.raises(ConfigurationError, match="client= must be 'process'.*'fork'"):
        RadicalPilotBackend(work_dir=tmp_path, client="fork")
    monkeypatch.setenv("ASYNCFLOW_HPC_RP_CLIENT", "thread")
    backend = RadicalPilotBackend(work_dir=tmp_path)
    assert backend.client == "thread" and backend.describe()["client"] == "thread"
    assert RadicalPilotBackend(work_dir=tmp_path, client="process").client == "process"
    monkeypatch.setenv("ASYNCFLOW_HPC_RP_CLIENT", "threads")
    with pytest.raises(ConfigurationError, match=r"\$ASYNCFLOW_HPC_RP_CLIENT must be"):
        RadicalPilotBackend(work_dir=tmp_path)
    # pilot keys are still checked here, in this process, with their suggestions
    with pytest.raises(ConfigurationError, match="did you mean 'runtime'"):
        RadicalPilotBackend(walltime=10, work_dir=tmp_path, client="process")
    assert not (live_children() - before), "a client process started before start()"


# --------------------------------------------------------------------- on the shared pilot

@pytest.mark.timeout(300)
def test_results_and_errors_cross_from_the_client_process(make_flow, rp_backend):
    assert rp_backend.client == "process"
    pid = rp_backend.client_pid
    assert pid and psutil.Process(pid).ppid() == os.getpid()

    async def main():
        flow = await make_flow()
        up = flow.function_task(shout)
        oops = flow.function_task(raise_oops)

        @flow.function_task
        def local_closure(n):  # defined in a test function: travels by value
            return [shout(str(i)) for i in range(n)]

        @flow.executable_task(task_description={"shell": True})
        def fails():
            return "echo bad >&2; exit 7"

        assert await up("pilot") == "PILOT"
        assert await local_closure(2) == ["0", "1"]
        with pytest.raises(Oops) as info:
            await oops(42)
        assert type(info.value) is Oops and info.value.code == 42
        assert str(info.value) == "oops 42"
        with pytest.raises(TaskExecutionError) as info:
            await fails()
        err = info.value
        assert err.exit_code == 7 and "bad" in err.stderr and err.task == "fails"
        assert "sandbox:" in err.details and "exited with code 7" in str(err)
        info = rp_backend.describe()
        assert info["client"] == "process" and info["client_pid"] == pid
        assert info["pilot_uid"] == rp_backend.pilot_uid
        assert info["session"] == rp_backend.session_uid
        assert rp_backend.timings["pilot_submitted"] > 0
        await close(flow)

    run(main(), 240)


# --------------------------------------------------------------------- parent killed

KILLED_SCRIPT = textwrap.dedent("""
    import asyncio

    from asyncflow_hpc import RadicalPilotBackend, TaskState, WorkflowEngine


    async def main():
        backend = await RadicalPilotBackend(cores=2, runtime=20, work_dir="rp", client="process")
        flow = await WorkflowEngine.create(backend=backend)

        @flow.executable_task
        def nap():
            return "/bin/sleep 921"

        fut = nap()
        while fut.state is not TaskState.RUNNING:
            await asyncio.sleep(0.1)
        print("RUNNING", backend.client_pid, backend.session_uid, flush=True)
        await fut


    asyncio.run(main())
""")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(300)
def test_parent_killed_the_client_process_ends_rp_and_itself(tmp_path):
    refuse_network_tools()
    before = live_children()
    script = tmp_path / "campaign.py"
    script.write_text(KILLED_SCRIPT)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    child = session = None
    try:
        lines = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 200
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("RUNNING") or not line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert line.startswith("RUNNING"), "".join(lines)
        _, pid, session = line.split()
        child = int(pid)
        forked = psutil.Process(child).children(recursive=True)
        for _ in range(100):
            if sleepers("921"):
                break
            time.sleep(0.1)
        assert sleepers("921"), "the task's process is not running"
        t0 = time.monotonic()
        proc.kill()  # SIGKILL: the program cannot clean up; the client process must
        proc.wait(10)
        while time.monotonic() - t0 < 60 and not (
                _gone(child) and not leftover_processes(session, tmp_path / "rp")
                and not sleepers("921") and all(_gone(p.pid) for p in forked)):
            time.sleep(0.5)
        took = time.monotonic() - t0
        assert _gone(child), "the RP client process outlived its killed parent"
        assert not [p for p in forked if not _gone(p.pid)], "a process RP forked outlived"
        left = leftover_processes(session, tmp_path / "rp")
        assert not left, f"processes of {session} left: {[p.cmdline() for p in left]}"
        assert not sleepers("921"), "the task's process outlived the program"
        assert took < 60
        print(f"client process, pilot and task gone {took:.1f}s after SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)
        if session:
            for p in leftover_processes(session, tmp_path / "rp"):
                try:
                    p.kill()
                except psutil.Error:
                    pass
    assert not (live_children() - before)



@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_client_process_killed_fails_tasks_and_shutdown_cleans_up(tmp_path, sig):
    """SIGKILL: the parent ends what the child left. SIGTERM: the child closes RP itself."""
    refuse_network_tools()
    before = live_children()
    forked: list[psutil.Process] = []

    async def main():
        backend = await RadicalPilotBackend(cores=2, runtime=20, work_dir=tmp_path / "rp",
                                            client="process")
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False,
                                           work_dir=tmp_path)

        @flow.executable_task
        def nap():
            return "/bin/sleep 922"

        try:
            fut = nap()
            while fut.state is not TaskState.RUNNING:
                await asyncio.sleep(0.1)
            # what RP forked in the child (its proxy worker) carries the child's command
            # line only: shutdown must end it too, by pid
            forked.extend(psutil.Process(backend.client_pid).children(recursive=True))
            os.kill(backend.client_pid, sig)  # the child only, not this process
            with pytest.raises(BackendError, match="RADICAL-Pilot client process"):
                await asyncio.wait_for(fut, 30)
            with pytest.raises(BackendError):  # later tasks fail at once
                await asyncio.wait_for(nap(), 5)
            assert backend.describe()["session"] == backend.session_uid  # last known
            return backend.session_uid
        finally:
            await flow.shutdown()  # ends the session's RP processes by session id

    session = run(main(), 240)
    time.sleep(0.5)
    left = leftover_processes(session, tmp_path / "rp")
    assert not left, f"processes of {session} left: {[p.cmdline() for p in left]}"
    assert not sleepers("922")
    assert not [p for p in forked if not _gone(p.pid)], "a process RP forked outlived"
    assert not (live_children() - before)
