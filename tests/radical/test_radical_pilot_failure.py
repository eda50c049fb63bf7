"""Pilots that die: pending futures fail (or move to a new pilot) instead of hanging.

Each test starts its own backend (its own session and pilot), so the shared pilot is not
disturbed; each checks that shutdown leaves no process of its session behind.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from radical_helpers import PILOT, LoopLag, live_children, refuse_network_tools, run

from asyncflow_hpc import PilotFailedError, TaskState, WorkflowEngine
from asyncflow_hpc.backends.radical import RadicalPilotBackend, leftover_processes

pytestmark = pytest.mark.radical


async def _wait_running(fut, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while fut.state is not TaskState.RUNNING:
        assert time.monotonic() < deadline, "task never reported RUNNING"
        await asyncio.sleep(0.1)


def _kill_pilot_job(session_uid: str) -> int:
    """Crash the pilot: SIGKILL the bootstrap process of this session's pilot and its tree."""
    killed = 0
    for p in psutil.process_iter():  # the pilot is detached: not a child of ours
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "bootstrap_0.sh" in cmd and session_uid in cmd:
            tree = [p, *p.children(recursive=True)]
            for q in tree:
                try:
                    q.kill()
                    killed += 1
                except psutil.Error:
                    pass
    return killed


@pytest.mark.timeout(420)
def test_cancelled_pilot_fails_unfinished_tasks(tmp_path):
    refuse_network_tools()
    before = live_children()

    async def main():
        with LoopLag() as lag:
            backend = await RadicalPilotBackend(PILOT, work_dir=tmp_path / "rp")
        # RP's session and pilot start take seconds; none of it may run on the loop
        assert lag.max < 1.0, f"event loop blocked for {lag.max:.3f} s during start"
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False,
                                           work_dir=tmp_path)

        @flow.executable_task
        def long():
            return "/bin/sleep 915"

        @flow.function_task
        def fn():
            import time as t
            t.sleep(600)

        try:
            running = long()
            queued = [long() for _ in range(6)]  # more than the pilot's free cores
            func = fn()
            await backend.wait_active(240)
            await _wait_running(running)
            # cancel the pilot behind the backend's back, through RP (the agent then exits
            # cleanly and RP reports DONE; a job killed by the batch system ends FAILED)
            t0 = time.monotonic()
            await backend.run_in_client(lambda b, uid: b.pmgr.cancel_pilots(uid),
                                        backend.pilot_uid)
            for fut in [running, *queued, func]:
                with pytest.raises(PilotFailedError) as info:
                    await asyncio.wait_for(fut, 30)
                err = info.value
                assert err.pilot_id == backend.pilot_uid
                assert err.state in ("DONE", "CANCELED")
                assert err.log_dir and backend.pilot_uid in err.log_dir
                assert err.pilot_id in str(err) and err.log_dir in str(err)
            assert time.monotonic() - t0 < 30
            # later tasks fail at once instead of waiting for a pilot that will not come
            with pytest.raises(PilotFailedError):
                await asyncio.wait_for(long(), 10)
            return backend, backend.session_uid
        finally:
            await flow.shutdown()

    backend, session = run(main(), 360)
    time.sleep(0.5)
    assert not leftover_processes(session, backend.work_dir)
    assert not (live_children() - before), "processes left behind after shutdown"


@pytest.mark.timeout(600)
def test_crashed_pilot_is_replaced_when_asked(tmp_path):
    refuse_network_tools()
    before = live_children()
    marker = tmp_path / "first-attempt-ran"

    async def main():
        # an explicit raptor= config instead of the automatic sizing
        backend = await RadicalPilotBackend(PILOT, work_dir=tmp_path / "rp",
                                            on_pilot_failure="resubmit", max_pilot_restarts=1,
                                            raptor={"workers": 1, "cores_per_worker": 1})
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False,
                                           work_dir=tmp_path)

        @flow.executable_task(task_description={"shell": True})
        def once_hangs():
            # the first attempt hangs (its pilot is killed), the requeued one finishes
            return f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 916; fi"

        @flow.executable_task
        def hangs():
            return "/bin/sleep 917"

        @flow.function_task
        def square(x):
            return x * x

        try:
            assert await square(3) == 9
            assert backend.describe()["raptor"] == {"workers": 1, "cores_per_worker": 1}
            fut = once_hangs()
            await _wait_running(fut)
            first_pilot = backend.pilot_uid
            assert _kill_pilot_job(backend.session_uid) > 0
            assert await asyncio.wait_for(fut, 300) == "second\n"
            assert backend.pilot_uid != first_pilot
            assert await asyncio.wait_for(square(4), 120) == 16  # raptor restarted
            assert backend.describe()["pilot_restarts"] == 1
            # bounded: the replacement dies too and no third pilot is started
            fut = hangs()
            await _wait_running(fut)
            second_pilot = backend.pilot_uid
            assert _kill_pilot_job(backend.session_uid) > 0
            with pytest.raises(PilotFailedError) as info:
                await asyncio.wait_for(fut, 30)
            assert info.value.pilot_id == second_pilot and info.value.state == "FAILED"
            assert "1 of 1 replacement" in str(info.value)
            assert backend.pilot_uid == second_pilot
            return backend, backend.session_uid
        finally:
            await flow.shutdown()

    backend, session = run(main(), 540)
    time.sleep(0.5)
    assert not leftover_processes(session, backend.work_dir)
    assert not (live_children() - before), "processes left behind after shutdown"
