"""Bodies are stamped where they ran: a worker thread, a worker loop, a pool process.

Under a flood the loop hears of starts and ends late; the records must still say when each
body really ran: its own clock reading lies inside [started, finished], and no more bodies
overlap than there are workers. (A thread may lose the GIL between the stamp and the body's
first line, so the bound on that gap is on a high percentile, with a loose cap on the worst.)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run


def _peak(records) -> int:
    events = []
    for rec in records:
        events += [(rec.started, 1), (rec.finished, -1)]
    events.sort()  # an end before a start at the same instant: a worker's next body
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _check(futs, readings, workers: int, gap_p95: float) -> list[float]:
    gaps = []
    for fut, t in zip(futs, readings, strict=True):
        rec = fut.task
        assert rec.started <= t <= rec.finished, (rec.started, t, rec.finished)
        gaps.append(t - rec.started)
    assert _peak([f.task for f in futs]) <= workers
    gaps.sort()
    assert gaps[int(len(gaps) * 0.95)] < gap_p95, gaps[-20:]
    assert gaps[-1] < 0.5, gaps[-20:]
    return gaps


def clock(i):
    t = time.time()
    time.sleep(0.0005 if i % 10 else 0.002)
    return t


def failing_clock(i):
    raise ValueError(time.time())


def test_thread_bodies_are_stamped_where_they_ran(make_flow):
    async def main():
        flow = await make_flow(ThreadPoolExecutor(3))
        task = flow.function_task(clock)
        futs = [task(i) for i in range(3000)]
        readings = await asyncio.gather(*futs)
        _check(futs, readings, 3, 0.005)
        # a failing body: its end is where it raised, not when the loop heard of it
        bad = flow.function_task(failing_clock)(0)
        with pytest.raises(ValueError) as err:
            await bad
        assert bad.task.started <= float(str(err.value)) <= bad.task.finished
        await flow.shutdown()

    run(main(), 120)


def test_async_bodies_on_worker_loops_are_stamped_there(make_flow):
    async def main():
        flow = await make_flow(ThreadPoolExecutor(2))

        @flow.function_task
        async def aclock(i):
            t = time.time()
            await asyncio.sleep(0.001)
            return t

        futs = [aclock(i) for i in range(500)]
        readings = await asyncio.gather(*futs)
        for fut, t in zip(futs, readings, strict=True):
            rec = fut.task
            assert rec.started <= t <= rec.finished, (rec.started, t, rec.finished)
            assert rec.finished - t >= 0.001  # the end is after the body's sleep
        await flow.shutdown()

    run(main(), 120)


def test_pool_process_bodies_are_stamped_in_the_process(make_flow):
    async def main():
        flow = await make_flow(ProcessPoolExecutor(2))
        task = flow.function_task(clock)
        futs = [task(i) for i in range(400)]
        readings = await asyncio.gather(*futs)
        _check(futs, readings, 2, 0.005)
        # a long body is reported running while it runs (the process tells), not before
        slow = flow.function_task(lambda: time.sleep(1.0) or os.getpid())
        started = time.time()
        fut = slow()
        while fut.task.state.name != "RUNNING":
            await asyncio.sleep(0.01)
        assert fut.task.started >= started
        assert not fut.done()
        await fut
        bad = flow.function_task(failing_clock)(0)
        with pytest.raises(ValueError) as err:
            await bad
        assert bad.task.started <= float(str(err.value)) <= bad.task.finished
        assert not hasattr(err.value, "asyncflow_stamps")
        await flow.shutdown()

    run(main(), 120)


def test_a_timed_out_attempt_never_settles_its_retry(make_flow):
    """retries=1 with a timeout: the first attempt's late end (a thread body that could not
    be stopped, a cancelled coroutine) must not settle or cancel the second attempt."""
    async def main():
        flow = await make_flow(ThreadPoolExecutor(4))
        calls = {"sync": 0, "async": 0}

        @flow.function_task(retries=1, timeout=0.3)
        def slow():
            calls["sync"] += 1
            n = calls["sync"]
            time.sleep(0.6 if n == 1 else 0.01)
            return n

        @flow.function_task(retries=1, timeout=0.3)
        async def aslow():
            calls["async"] += 1
            n = calls["async"]
            await asyncio.sleep(0.6 if n == 1 else 0.01)
            return n

        assert await slow() == 2
        assert await aslow() == 2
        await asyncio.sleep(0.5)  # the first sync attempt ends meanwhile: nothing changes
        await flow.shutdown()

    run(main(), 60)


def test_executables_are_stamped_around_their_process(make_flow):
    """A subprocess's own clock reading lies inside [started, finished] of its record: the
    start is stamped when the process was spawned, the end when it was reaped."""
    async def main():
        flow = await make_flow(ThreadPoolExecutor(2))

        @flow.executable_task
        def clock(i):
            return [sys.executable, "-c", "import time; print(repr(time.time()))"]

        futs = [clock(i) for i in range(40)]
        outs = await asyncio.gather(*futs)
        for fut, out in zip(futs, outs, strict=True):
            t = float(out)
            assert fut.task.started <= t <= fut.task.finished, (fut.task.started, t)
        assert _peak([f.task for f in futs]) <= 2  # as many at once as the pool's size
        await flow.shutdown()

    run(main(), 120)
