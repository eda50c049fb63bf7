"""The RADICAL-Pilot backend through the public API, on one shared local pilot."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from radical_helpers import MPI_AS_ROOT, LoopLag, close, run, sleepers

from asyncflow_hpc import (
    ConfigurationError,
    DependencyFailureError,
    ExecutableNotFoundError,
    TaskExecutionError,
    TaskState,
    TaskTimeoutError,
)

pytestmark = pytest.mark.radical


class Boom(Exception):
    """A user exception class: must come back as itself, not as a string."""


@pytest.mark.timeout(300)
def test_executables_results_and_failures(make_flow, tmp_path):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        async def echo(*words):
            return ["/bin/echo", *words]

        @flow.executable_task(task_description={"shell": True})
        def sh(cmd):
            return cmd

        @flow.executable_task
        def missing():
            return "/no/such/program --flag"

        work = tmp_path / "cwd"
        work.mkdir()
        results = await asyncio.gather(
            echo("hello", "a  b"),
            sh("printf '%s|' \"a  b\" c"),
            sh("echo $GREETING; pwd", task_description={"env": {"GREETING": "hi"},
                                                        "cwd": str(work)}),
            sh("seq 1 3000"),  # RP keeps only 1 KiB of stdout; the backend reads the file
            sh("echo partial; echo oops >&2; exit 3"),
            missing(),
            return_exceptions=True,
        )
        assert results[0] == "hello a  b\n"
        assert results[1] == "a  b|c|"
        assert results[2].split() == ["hi", str(work)]
        assert results[3] == "".join(f"{i}\n" for i in range(1, 3001))
        err = results[4]
        assert isinstance(err, TaskExecutionError), err
        assert err.exit_code == 3 and "oops" in err.stderr and "oops" in str(err)
        assert "sandbox:" in str(err)
        assert isinstance(results[5], ExecutableNotFoundError), results[5]
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_function_tasks_through_raptor(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        def add(x, y=1):
            return (x + y, "tuple survives")

        @flow.function_task
        async def double(x):
            await asyncio.sleep(0.01)
            return {"doubled": x * 2}

        @flow.function_task
        def fail():
            raise Boom("kaput")

        @flow.function_task
        def where():
            import os
            return os.getpid()

        assert await add(2, y=5) == (7, "tuple survives")
        assert await double(21) == {"doubled": 42}
        with pytest.raises(Boom, match="kaput") as info:
            await fail()
        assert any("remote traceback" in note for note in getattr(info.value, "__notes__", []))
        assert await where() != __import__("os").getpid()  # ran elsewhere
        # a batch: many function tasks submitted in one loop iteration
        assert await asyncio.gather(*(add(i) for i in range(20))) == [
            (i + 1, "tuple survives") for i in range(20)]
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_dependencies_across_kinds(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        def make_word(n):
            return "w" * n

        @flow.executable_task
        def shout(word):
            return ["/bin/echo", word.upper()]

        @flow.function_task
        def length(text):
            return len(text.strip())

        @flow.executable_task(task_description={"shell": True})
        def broken():
            return "exit 7"

        @flow.function_task
        def after(x):
            return x

        word = make_word(3)
        loud = shout(word)  # future as argument: a dependency
        assert await length(loud) == 3
        assert await loud == "WWW\n"
        with pytest.raises(DependencyFailureError) as info:
            await after(broken())
        assert isinstance(info.value.root_cause, TaskExecutionError)
        await close(flow)

    run(main(), 240)


#: each rank: 300 lines (every 10th 8 KB long, one write() each), a line on stderr, and a last
#: line without a newline; rank 1 then exits with argv[1]. (RP puts arguments in double quotes
#: in its exec script: no "$" or backquote in here.)
MPI_RANKS = (
    "import os, sys; from mpi4py import MPI; c = MPI.COMM_WORLD; r = c.rank\n"
    "for i in range(300):\n"
    "    os.write(1, f'r{r} line {i} {str(r) * 8000 if i % 10 == 0 else 1}\\n'.encode())\n"
    "os.write(2, f'r{r} complains\\n'.encode())\n"
    "os.write(1, f'r{r} size {c.size} sum {c.allreduce(r + 1)}'.encode())\n"
    "c.Barrier(); sys.exit(int(sys.argv[1]) if r == 1 else 0)\n")


@pytest.mark.timeout(300)
def test_mpi_executable_with_two_ranks(make_flow):
    """Every line of every rank comes back whole and tagged "RANK: " (rank by rank; the lines
    of two ranks on one launcher's stdout would mix)."""
    pytest.importorskip("mpi4py")

    async def main():
        flow = await make_flow()

        @flow.executable_task(task_description={"ranks": 2, "pre_launch": MPI_AS_ROOT})
        def ranks(code):
            return [sys.executable, "-c", MPI_RANKS, str(code)]

        out = await ranks(0)
        assert out.endswith("\n"), out[-200:]
        expected = [f"{r}: r{r} line {i} {str(r) * 8000 if i % 10 == 0 else 1}"
                    for r in (0, 1) for i in range(300)]
        expected += [f"{r}: r{r} size 2 sum 3" for r in (0, 1)]
        assert sorted(out[:-1].split("\n")) == sorted(expected)
        assert out.startswith("0: r0 line 0 ") and "\n1: r1 line 0 " in out  # rank by rank

        with pytest.raises(TaskExecutionError) as info:
            await ranks(3)
        lines = info.value.stderr.split("\n")
        assert "0: r0 complains" in lines and "1: r1 complains" in lines, info.value.stderr
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_cancel_running_task_kills_it(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def nap():
            return "/bin/sleep 913"

        fut = nap()
        deadline = time.monotonic() + 120
        while fut.state is not TaskState.RUNNING:
            assert time.monotonic() < deadline, "task never reported RUNNING"
            await asyncio.sleep(0.1)
        for _ in range(50):  # the launch script may need a moment to exec sleep
            if sleepers("913"):
                break
            await asyncio.sleep(0.1)
        assert sleepers("913"), "the sleep process was not found while RUNNING"
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        deadline = time.monotonic() + 30
        while sleepers("913"):
            assert time.monotonic() < deadline, "cancelled task's process still runs"
            await asyncio.sleep(0.2)

        @flow.executable_task
        def after():
            return "/bin/echo still-works"

        assert await after() == "still-works\n"
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_timeout_stops_the_task(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task(timeout=2)
        def slow():
            return "/bin/sleep 914"

        t = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            await slow()
        assert time.monotonic() - t < 60
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_bad_task_description_keys(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def cmd():
            return "/bin/true"

        @flow.function_task
        def fn():
            return 1

        # the engine's catalogue or the backend (keys RP cannot take): either way the
        # task fails with a ConfigurationError naming the key
        for td, needle in [({"coress": 2}, "coress"),
                           ({"executable": "/bin/ls"}, "'executable'.*set by asyncflow-hpc"),
                           ({"stdin": "data"}, "'stdin'.*not supported on RADICAL-Pilot"),
                           ({"ranks": "two"}, "ranks")]:
            with pytest.raises(ConfigurationError, match=needle):
                await cmd(task_description=td)
        with pytest.raises(ConfigurationError, match="coress"):
            await fn(task_description={"coress": 1})
        assert await cmd() == ""  # the backend is fine afterwards
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_describe_and_many_tasks(make_flow, rp_backend):
    async def main():
        flow = await make_flow()

        @flow.executable_task(task_description={"warm": False})  # RP's own path
        def true():
            return "/bin/true"

        # a spy on the real task manager (in the RP client process, or this one): tasks
        # ready in one loop iteration -> ONE call
        def install(backend):
            tmgr = backend.tmgr
            backend.spy_calls = calls = []
            real_submit = tmgr.submit_tasks

            def spy(descriptions):
                calls.append(len(descriptions))
                return real_submit(descriptions)

            tmgr.submit_tasks = spy

        def remove(backend):
            del backend.tmgr.submit_tasks
            return backend.spy_calls

        await rp_backend.run_in_client(install)
        try:
            with LoopLag() as lag:
                futs = [true() for _ in range(60)]
                assert await asyncio.gather(*futs) == [""] * 60
        finally:
            calls = await rp_backend.run_in_client(remove)
        assert calls == [60], calls
        # generous: the machine's own load stalls an idle loop for tens of ms at times
        assert lag.max < 0.5, f"event loop stalled {lag.max * 1e3:.0f} ms"
        assert futs[0].task.node == "localhost"  # from RP's slots
        info = rp_backend.describe()
        assert info["name"] == "radical" and info["pilot_state"] == "PMGR_ACTIVE"
        assert info["unfinished_tasks"] == 0
        await close(flow)

    run(main(), 240)
