"""Warm worker pools inside a real pilot: small tasks without RADICAL-Pilot's per-task cost.

Function tasks and single-core executables go to the pool agent RP runs in the pilot; every
task keeps its own result, error, timeout, cancellation and true start/end stamps. These run
on the shared local.localhost pilot (its agent has 2 slots on this machine).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import time

import psutil
import pytest
from radical_helpers import MPI_AS_ROOT, close, run, sleepers

from asyncflow_hpc import (
    ExecutableNotFoundError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
    WorkerLostError,
)

pytestmark = pytest.mark.radical


def flaky(i: int) -> int:
    if i % 100 == 7:
        raise ValueError(f"bad {i}")
    return i * 3


def nap(mark: str, seconds: float) -> str:
    """Leave our pid in ``mark``, then sleep; a second call with the same mark returns."""
    p = pathlib.Path(mark)
    if p.exists() and seconds < 0:
        return "again"
    p.write_text(str(os.getpid()))
    time.sleep(abs(seconds))
    return mark


async def _wait_files(*paths: pathlib.Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() and p.read_text() for p in paths):
        assert time.monotonic() < deadline, f"never appeared: {paths}"
        await asyncio.sleep(0.05)


async def _gone(pid: int, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - t0
        except psutil.NoSuchProcess:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"process {pid} still alive"
        await asyncio.sleep(0.05)


def test_small_tasks_run_warm_with_true_stamps(make_flow, rp_backend):
    async def main():
        flow = await make_flow()
        try:
            @flow.function_task
            def clock():
                import os as o
                import time as t
                return t.time(), o.getpid()

            @flow.executable_task
            def echo(x):
                return ["/bin/echo", x]

            @flow.function_task
            async def later(x):
                await asyncio.sleep(0.01)
                return x + 1

            futs = [clock() for _ in range(50)]
            vals = await asyncio.gather(*futs)
            gaps = []
            for fut, (t, pid) in zip(futs, vals, strict=True):
                rec = fut.task
                assert pid != os.getpid()
                assert rec.node  # where it ran
                # stamped where the body ran: the body's own clock reading is inside
                assert rec.started <= t <= rec.finished
                gaps.append(t - rec.started)
            # within 5 ms of the body's own reading; a loaded machine may deschedule the
            # worker between the stamp and the body now and then, hence the percentile
            gaps.sort()
            assert gaps[len(gaps) * 9 // 10] < 0.005, gaps
            assert gaps[-1] < 0.5, gaps
            assert await echo("hi") == "hi\n"
            assert await asyncio.gather(*[later(i) for i in range(5)]) == [1, 2, 3, 4, 5]
            warm = rp_backend.describe()["warm"]
            assert warm["agents"], warm
            assert warm["ended"] >= 56
        finally:
            await close(flow)

    run(main(), 300)


def test_warm_executables_errors_env_and_shell(make_flow):
    async def main():
        flow = await make_flow()
        try:
            @flow.executable_task
            def fails():
                return ["sh", "-c", "echo oops >&2; exit 3"]

            @flow.executable_task
            def missing():
                return ["/no/such/program", "x"]

            @flow.executable_task(task_description={"environment": {"GREETING": "bonjour"}})
            def env():
                return ["sh", "-c", "echo $GREETING"]

            @flow.executable_task(task_description={"shell": True})
            def piped():
                return "echo abc | tr a z"

            @flow.executable_task
            def writes(name):  # each task has a folder of its own: no collision
                return ["sh", "-c", f"echo {name} > out.txt; cat out.txt"]

            with pytest.raises(TaskExecutionError) as info:
                await fails()
            assert info.value.exit_code == 3 and "oops" in str(info.value)
            with pytest.raises(ExecutableNotFoundError, match="/no/such/program"):
                await missing()
            assert await env() == "bonjour\n"
            assert await piped() == "zbc\n"
            names = [f"n{i}" for i in range(20)]
            assert await asyncio.gather(*[writes(n) for n in names]) == [n + "\n" for n in names]
        finally:
            await close(flow)

    run(main(), 300)


@pytest.mark.timeout(600)
def test_hundred_thousand_tasks_exact_accounting(make_flow):
    n = 100_000

    async def main():
        flow = await make_flow()
        try:
            f = flow.function_task(flaky)
            res = await asyncio.gather(*[f(i) for i in range(n)], return_exceptions=True)
            for i, r in enumerate(res):
                if i % 100 == 7:
                    assert isinstance(r, ValueError) and str(r) == f"bad {i}", (i, r)
                    assert "warm worker" in r.__notes__[0]  # the remote traceback came along
                else:
                    assert r == i * 3, (i, r)
            assert flow.counts["done"] == n - n // 100
            assert flow.counts["failed"] == n // 100
        finally:
            await close(flow)

    run(main(), 550)


def test_cancel_queued_and_running(make_flow, rp_backend, tmp_path):
    async def main():
        flow = await make_flow()
        try:
            f = flow.function_task(nap)
            await f(str(tmp_path / "first"), 0)  # the pool is up
            slots = sum(a["slots"] for a in rp_backend.describe()["warm"]["agents"].values())
            busy = [f(str(tmp_path / f"long{i}"), 120) for i in range(slots)]  # every slot
            await _wait_files(*(tmp_path / f"long{i}" for i in range(slots)))
            queued = f(str(tmp_path / "queued"), 0)
            mates = [f(str(tmp_path / f"mate{i}"), 0) for i in range(3)]
            await asyncio.sleep(0.5)  # they reached the agent's queue
            queued.cancel()
            pid = int((tmp_path / "long0").read_text())
            busy[0].cancel()  # a running one: its worker process is stopped
            assert await _gone(pid, 10) < 10
            done = await asyncio.wait_for(asyncio.gather(*mates), 60)  # bundle mates run
            assert done == [str(tmp_path / f"mate{i}") for i in range(3)]
            assert not (tmp_path / "queued").exists()  # left its bundle without running
            assert queued.cancelled() and busy[0].cancelled()
            for fut in busy[1:]:
                fut.cancel()
        finally:
            await close(flow)

    run(main(), 300)


def test_timeout_inside_a_bundle_kills_only_that_task(make_flow, tmp_path):
    async def main():
        flow = await make_flow()
        try:
            slow = flow.function_task(nap, task_description={"timeout": 2})
            quick = flow.function_task(nap)

            @flow.executable_task(task_description={"timeout": 2})
            def sleeper():
                return ["/bin/sleep", "641"]

            t0 = time.monotonic()
            futs = [quick(str(tmp_path / f"a{i}"), 0) for i in range(5)]
            futs.append(slow(str(tmp_path / "slow"), 60))
            futs.append(sleeper())
            futs += [quick(str(tmp_path / f"b{i}"), 0) for i in range(5)]
            res = await asyncio.gather(*futs, return_exceptions=True)
            assert time.monotonic() - t0 < 30
            assert isinstance(res[5], TaskTimeoutError), res[5]
            assert isinstance(res[6], TaskTimeoutError), res[6]
            assert [r for i, r in enumerate(res) if i not in (5, 6)] == \
                [str(tmp_path / f"a{i}") for i in range(5)] + \
                [str(tmp_path / f"b{i}") for i in range(5)]
            assert not sleepers("641")  # the executable's process was killed
        finally:
            await close(flow)

    run(main(), 300)


def test_killed_worker_fails_or_reruns_exactly_its_task(make_flow, tmp_path):
    async def main():
        flow = await make_flow()
        try:
            once = flow.function_task(nap)
            again = flow.function_task(nap, task_description={"retries": 1})
            victim = once(str(tmp_path / "victim"), 120)
            rerun = again(str(tmp_path / "rerun"), -120)  # second attempt returns at once
            await _wait_files(tmp_path / "victim", tmp_path / "rerun")
            mates = [once(str(tmp_path / f"m{i}"), 0) for i in range(4)]
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            for mark in ("victim", "rerun"):
                psutil.Process(int((tmp_path / mark).read_text())).kill()
            with pytest.raises(WorkerLostError, match="died"):
                await asyncio.wait_for(victim, 10)
            assert await asyncio.wait_for(rerun, 10) == "again"
            assert time.monotonic() - t0 < 10
            assert rerun.task.attempts == 2 and victim.task.attempts == 1
            assert await asyncio.gather(*mates) == [str(tmp_path / f"m{i}") for i in range(4)]
        finally:
            await close(flow)

    run(main(), 300)


def test_small_tasks_and_two_rank_mpi_share_the_pilot(make_flow):
    """Both paths at once: the MPI tasks need cores the warm pool holds, which makes room
    (its agent stops and comes back), and nothing waits forever."""

    async def main():
        flow = await make_flow()
        try:
            @flow.function_task
            def square(x):
                return x * x

            @flow.executable_task(task_description={"ranks": 2, "pre_launch": MPI_AS_ROOT})
            def ranks():
                return [sys.executable, "-c",
                        "from mpi4py import MPI; c = MPI.COMM_WORLD; r = c.gather(c.rank); "
                        "print(sorted(r) if c.rank == 0 else '', end='')"]

            first = [square(i) for i in range(500)]
            mpi = [ranks() for _ in range(2)]
            later = [square(i) for i in range(500, 1000)]
            res = await asyncio.wait_for(asyncio.gather(*first, *mpi, *later), 400)
            assert res[:500] == [i * i for i in range(500)]
            assert res[500:502] == ["0: [0, 1]\n", "0: [0, 1]\n"]  # rank-tagged output
            assert res[502:] == [i * i for i in range(500, 1000)]
            assert all(f.task.state is TaskState.DONE for f in mpi)
        finally:
            await close(flow)

    run(main(), 500)
