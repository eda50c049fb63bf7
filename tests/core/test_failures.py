"""Failures, dependency failures, cancellation and unknown backends."""

import asyncio
import os
import threading
import time

import psutil
import pytest
from conftest import run

from asyncflow_hpc import (
    ConfigurationError,
    DependencyFailureError,
    TaskState,
    UnknownBackendError,
)


def test_awaiting_a_failed_task_reraises_the_original(make_flow):
    async def main():
        flow = await make_flow()

        class Boom(Exception):
            pass

        @flow.function_task
        async def bad():
            raise Boom("original")

        @flow.function_task
        def bad_sync():
            raise KeyError("k")

        with pytest.raises(Boom, match="original"):
            await bad()
        with pytest.raises(KeyError):
            await bad_sync()
        await flow.shutdown()

    run(main())


def test_dependency_failure_chain(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def ok():
            return 1

        @flow.function_task
        async def bad():
            raise ValueError("root")

        @flow.function_task
        async def use(*xs):
            return sum(xs)

        b = bad()
        mid = use(ok(), b)
        top = use(mid)
        with pytest.raises(DependencyFailureError) as info:
            await top
        err = info.value
        assert str(err) == ("Cannot execute 'use' due to dependency failure: 'bad' (upstream "
                            "of input 'use') failed with ValueError: root")
        assert err.failed_dependencies == ["use"]
        # every hop points at the root error, not at the previous hop (short tracebacks)
        assert isinstance(err.root_cause, ValueError) and err.root_task == "bad"
        assert err.__cause__ is err.root_cause
        assert err.original_error is err.root_cause
        assert mid.state is TaskState.FAILED and top.state is TaskState.FAILED
        await flow.shutdown()

    run(main())


def test_all_failed_inputs_are_named(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def bad1():
            raise ValueError("1")

        @flow.function_task
        async def bad2():
            await asyncio.sleep(0.05)
            raise ValueError("2")

        @flow.function_task
        async def use(*xs):
            return 0

        with pytest.raises(DependencyFailureError) as info:
            await use(bad1(), bad2())
        assert info.value.failed_dependencies == ["bad1", "bad2"]
        assert str(info.value.root_cause) == "1"
        await flow.shutdown()

    run(main())


def test_other_workflows_unaffected_by_a_failure(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def t(x):
            if x == 2:
                raise RuntimeError("wf 2 broke")
            return x

        async def wf(i):
            async with flow.workflow_scope(f"wf{i}"):
                return await t(t(i))

        res = await asyncio.gather(*[wf(i) for i in range(5)], return_exceptions=True)
        assert res[:2] == [0, 1] and res[3:] == [3, 4]
        assert isinstance(res[2], DependencyFailureError)
        await flow.shutdown()

    run(main())


def test_cancel_pending_task_cancels_dependents_at_once(make_flow):
    async def main():
        flow = await make_flow()
        gate = threading.Event()  # the bodies run on the backend's loops, not this one

        @flow.function_task
        async def slow():
            while not gate.is_set():
                await asyncio.sleep(0.002)
            return 1

        @flow.function_task
        async def after(*x):
            return 2

        s = slow()
        other = slow()
        d1 = after(s, other)  # `other` is still running: the cancel must not wait for it
        d2 = after(d1)
        for _ in range(500):  # until its body runs (a loaded machine may take a while)
            if s.state is TaskState.RUNNING:
                break
            await asyncio.sleep(0.01)
        assert s.state is TaskState.RUNNING
        s.cancel()
        await asyncio.sleep(0)
        assert d1.cancelled() and d2.cancelled()
        assert d2.state is TaskState.CANCELLED
        gate.set()
        assert await other == 1
        await flow.shutdown()

    run(main())


def test_cancel_running_executable_kills_its_process_group(make_flow, tmp_path):
    async def main():
        flow = await make_flow()
        pidfile = tmp_path / "pids"

        @flow.executable_task
        def tree():
            # a shell with a child in the background: both must die
            return f"sh -c 'sleep 300 & echo $$ $! > {pidfile}; wait'"

        fut = tree()
        for _ in range(200):
            if pidfile.exists() and len(pidfile.read_text().split()) == 2:
                break
            await asyncio.sleep(0.02)
        pids = [int(p) for p in pidfile.read_text().split()]
        assert all(psutil.pid_exists(p) for p in pids)
        fut.cancel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            await asyncio.sleep(0.05)
        assert not any(_alive(p) for p in pids)
        assert fut.state is TaskState.CANCELLED
        await flow.shutdown()

    run(main())


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_block_cancels_what_it_submitted(make_flow):
    async def main():
        flow = await make_flow()
        submitted = []

        @flow.function_task
        async def forever():
            await asyncio.sleep(3600)

        @flow.block
        async def inner():
            f = forever()
            submitted.append(f)
            return await f

        @flow.block
        async def outer():
            f = forever()
            submitted.append(f)
            submitted.append(inner())
            return await f

        b = outer()
        while len(submitted) < 3 or any(f.state is not TaskState.RUNNING for f in submitted):
            await asyncio.sleep(0.01)
        b.cancel()
        await asyncio.sleep(0.01)
        assert all(f.cancelled() for f in submitted)
        assert b.state is TaskState.CANCELLED
        await flow.shutdown()

    run(main())


def test_unknown_backend_fails_only_that_task(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task(backend="gpu-cluster")
        async def elsewhere():
            return 1

        @flow.function_task
        async def here():
            return 2

        bad = elsewhere()
        good = here()
        with pytest.raises(UnknownBackendError, match="'gpu-cluster'.*local"):
            await bad
        assert await good == 2
        assert flow.is_running
        assert await here() == 2
        await flow.shutdown()

    run(main())


def test_bad_task_description_fails_the_task_with_a_suggestion(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def t():
            return 1

        with pytest.raises(ConfigurationError, match="'walltime'.*did you mean 'timeout'"):
            await t(task_description={"walltime": 10})
        with pytest.raises(ConfigurationError, match="must be a dict"):
            await t(task_description=["ranks"])
        with pytest.raises(ConfigurationError, match="ranks"):
            await t(task_description={"ranks": "two"})
        with pytest.raises(ConfigurationError, match="unknown task_description key 'rnaks'"):
            @flow.function_task(task_description={"rnaks": 2})
            async def u():
                return 1
        assert await t() == 1
        await flow.shutdown()

    run(main())


def test_retries_and_timeouts(make_flow):
    async def main():
        flow = await make_flow()
        attempts = []

        @flow.function_task(retries=2)
        async def flaky():
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError(f"try {len(attempts)}")
            return "ok"

        assert await flaky() == "ok" and len(attempts) == 3

        @flow.function_task(retries=1)
        async def hopeless():
            raise OSError("never")

        with pytest.raises(OSError) as info:
            await hopeless()
        assert "ran 2 times" in "".join(getattr(info.value, "__notes__", []))

        from asyncflow_hpc import TaskTimeoutError

        @flow.executable_task(timeout=0.3)
        def hang():
            return "sleep 30"

        t0 = time.monotonic()
        with pytest.raises(TaskTimeoutError, match="timeout of 0.3 s"):
            await hang()
        assert time.monotonic() - t0 < 5
        await flow.shutdown()

    run(main())


def test_shutdown_cancels_everything_and_leaves_nothing(make_flow):
    import threading

    before_threads = {t.ident for t in threading.enumerate()}

    async def main():
        flow = await make_flow()

        @flow.executable_task
        def sleeper():
            return "sleep 300"

        @flow.function_task
        def thread_work(x):
            return x

        @flow.function_task
        async def pending(x):
            return x

        assert await thread_work(1) == 1
        running = [sleeper() for _ in range(3)]
        later = pending(running[0])
        await asyncio.sleep(0.2)
        await flow.shutdown()
        assert all(f.cancelled() for f in running) and later.cancelled()

    run(main())
    me = psutil.Process(os.getpid())
    deadline = time.monotonic() + 5
    while me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert me.children(recursive=True) == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t.ident not in before_threads]
        if not extra:
            break
        time.sleep(0.05)
    assert extra == []


def test_a_bad_task_description_fails_only_that_task(make_flow):
    """Unknown keys, bad values and an unknown backend fail the one call's future; its
    siblings (same function, same workflow) run. A task_description that is not a dict is a
    TypeError at the call, as radical.asyncflow raises it."""
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def echo(i):
            return f"echo {i}"

        @flow.function_task
        def square(i):
            return i * i

        bad = {3: {"walltime": 5}, 7: {"ranks": 0}, 11: {"timeout": "soon"},
               13: {"cores_per_rank": -1}}
        async with flow.workflow_scope("wf-bad-td"):
            futs = [square(i, task_description=bad.get(i)) for i in range(16)]
            exes = [echo(i, task_description=bad.get(i)) for i in range(16)]
            results = await asyncio.gather(*futs, *exes, return_exceptions=True)
        for i, (r, e) in enumerate(zip(results[:16], results[16:], strict=True)):
            if i in bad:
                assert isinstance(r, ConfigurationError) and isinstance(e, ConfigurationError)
                key = next(iter(bad[i]))
                assert key in str(r) and key in str(e)
            else:
                assert r == i * i and e.strip() == str(i)
        with pytest.raises(TypeError, match="must be a dict"):
            square(1, task_description="ranks=2")
        assert await square(5) == 25
        await flow.shutdown()

    run(main())
