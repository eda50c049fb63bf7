"""The JSONL event log: order and fields for success, failure, cancellation, blocks."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import pytest
from telemetry_testlib import (
    EVENT_KEYS,
    SPAN_KEYS,
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    events,
    make_engine,
    read_lines,
    run,
    spans,
    types,
)

from asyncflow_hpc import DependencyFailureError

pytestmark = pytest.mark.usefixtures("clean_env")


def _keys(d: dict) -> list[str]:
    return [k for k in d if k not in ("duration_seconds", "error_type")]


@pytest.mark.timeout(120)
def test_success_event_order_and_fields(tmp_path):
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        def square(x):  # a thread-pool task: the backend reports TaskStarted
            return x * x

        async with flow.workflow_scope("wf-ok"):
            assert await square(3) == 9
        await flow.shutdown()
        return flow.uid

    uid = run(main())
    lines = read_lines(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    evs = events(lines)
    assert evs[0]["event_type"] == "SessionStarted" and evs[-1]["event_type"] == "SessionEnded"
    task = events(lines, "task.000001")
    assert types(task) == ["TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted",
                           "TaskStarted", "TaskCompleted"]
    times = [e["event_time"] for e in task]
    assert times == sorted(times)
    for e in task:
        assert _keys(e) == EVENT_KEYS, e
        assert e["session_id"] == uid
        assert e["backend"] == "local"
        assert e["name"] == e["event_type"]
        assert e["attributes"]["workflow_id"] == "wf-ok"
        assert e["attributes"]["task_type"] == "function"
        assert e["attributes"]["executable"] == "square"
        assert e["attributes"]["depends_on"] == []
        assert e["emit_time"] >= e["event_time"] - 1e-6
    assert task[0]["node_id"] is None and task[-1]["node_id"]  # known once it ran
    done = task[-1]
    assert 0 <= done["duration_seconds"] < 5 and "error_type" not in done
    # the events of a task carry its span's ids
    (span,) = [s for s in spans(lines, "task") if s["attributes"]["task_id"] == "task.000001"]
    assert list(span) == SPAN_KEYS
    assert {(e["trace_id"], e["span_id"]) for e in task} == {(span["trace_id"], span["span_id"])}
    assert span["status_code"] == "OK" and span["attributes"]["status"] == "completed"
    metric = [d for d in lines if d["section"] == "metric"][-1]
    assert metric["tasks_submitted"] == 1 and metric["tasks_completed"] == 1
    assert metric["task_duration_seconds_count"] == 1 and metric["tasks_running"] == 0


@pytest.mark.timeout(120)
def test_failure_carries_the_real_exception_class(tmp_path):
    path = tmp_path / "ev.jsonl"

    class SimulationDiverged(RuntimeError):
        pass

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def simulate():
            raise SimulationDiverged("step 42: NaN in the energy")

        @flow.function_task
        async def analyse(x):
            return x

        async with flow.workflow_scope("wf-bad"):
            s = simulate()
            a = analyse(s)
            with pytest.raises(SimulationDiverged):
                await s
            with pytest.raises(DependencyFailureError):
                await a
        await flow.shutdown()

    run(main())
    lines = read_lines(path)
    failed = events(lines, "task.000001")
    assert failed[-1]["event_type"] == "TaskFailed"
    assert failed[-1]["error_type"] == "SimulationDiverged"
    assert failed[-1]["attributes"]["error_type"] == "SimulationDiverged"
    assert "NaN in the energy" in failed[-1]["attributes"]["error_message"]
    dep = events(lines, "task.000002")
    # never submitted: created, then failed when its input failed
    assert types(dep) == ["TaskCreated", "TaskFailed"]
    assert dep[-1]["error_type"] == "DependencyFailureError"
    assert dep[-1]["attributes"]["root_cause_type"] == "SimulationDiverged"
    assert dep[-1]["attributes"]["depends_on"] == ["task.000001"]
    assert dep[-1]["attributes"]["incomplete_lifecycle"] is True
    for e in failed + dep:
        assert e["backend"] == "local" and e["attributes"]["workflow_id"] == "wf-bad"
    (span,) = [s for s in spans(lines, "task") if s["attributes"]["task_id"] == "task.000001"]
    assert span["status_code"] == "ERROR" and span["status_description"] == "SimulationDiverged"
    (wf,) = spans(lines, "workflow")
    assert wf["status_code"] == "ERROR" and wf["attributes"]["tasks_failed"] == 2


@pytest.mark.timeout(120)
def test_cancellation_events(tmp_path):
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def slow():
            await asyncio.sleep(30)

        @flow.function_task
        async def after(x):
            return x

        s = slow()
        a = after(s)
        await asyncio.sleep(0.05)
        s.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a
        left = slow()  # still running at shutdown: cancelled by it
        await asyncio.sleep(0.05)
        await flow.shutdown()
        assert left.cancelled()

    run(main())
    lines = read_lines(path)
    s = events(lines, "task.000001")
    assert types(s) == ["TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted",
                        "TaskStarted", "TaskCanceled"]
    assert s[-1]["duration_seconds"] >= 0.04
    assert types(events(lines, "task.000002")) == ["TaskCreated", "TaskCanceled"]
    assert types(events(lines, "task.000003"))[-1] == "TaskCanceled"
    metric = [d for d in lines if d["section"] == "metric"][-1]
    assert metric["tasks_canceled"] == 3 and metric["tasks_running"] == 0
    for sp in spans(lines, "task"):
        assert sp["status_code"] == "ERROR" and sp["attributes"]["status"] == "canceled"


@pytest.mark.timeout(120)
def test_blocks_executables_and_retries(tmp_path):
    path = tmp_path / "ev.jsonl"
    calls = []

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def add(a, b):
            return a + b

        @flow.executable_task
        async def greet(who):
            return f"echo hello {who}"

        @flow.function_task(retries=1)
        async def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("first try")
            return "ok"

        @flow.block
        async def pipeline(n):
            x = await add(n, 1)
            return await add(x, 1)

        async with flow.workflow_scope("wf-blocks"):
            assert await pipeline(1) == 3
            assert (await greet("world")).strip() == "hello world"
            assert await flaky() == "ok"
        await flow.shutdown()

    run(main())
    lines = read_lines(path)
    block = events(lines, "block.000001")
    assert types(block) == ["TaskCreated", "TaskResolved", "TaskStarted", "TaskCompleted"]
    assert block[0]["attributes"]["task_type"] == "block"
    inner = [e for e in events(lines) if e["attributes"].get("block_id") == "block.000001"]
    assert {e["task_id"] for e in inner} == {"task.000002", "task.000003"}
    for e in inner:
        assert e["attributes"]["workflow_id"] == "wf-blocks"  # inherited from the block
    exe = [e for e in events(lines) if e["attributes"].get("task_type") == "executable"]
    assert exe and all(e["attributes"]["executable"] == "echo hello world" for e in exe)
    assert exe[0]["attributes"]["task_name"] == "greet"
    flaky_ev = [e for e in events(lines) if e["attributes"].get("task_name") == "flaky"]
    assert "TaskRetried" in types(flaky_ev) and types(flaky_ev)[-1] == "TaskCompleted"
    retried = next(e for e in flaky_ev if e["event_type"] == "TaskRetried")
    assert retried["error_type"] == "ConnectionError"
    # blocks are not counted as tasks in the metrics
    metric = [d for d in lines if d["section"] == "metric"][-1]
    assert metric["tasks_completed"] == 4


@pytest.mark.timeout(120)
def test_every_task_event_carries_workflow_id_and_backend(tmp_path):
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def work(i):
            await asyncio.sleep(0.001 * (i % 3))
            return i

        futs = []
        for w in range(3):
            async with flow.workflow_scope(f"wf-{w}"):
                futs += [work(i) for i in range(20)]
        futs.append(work(99, workflow_id="tagged"))
        futs.append(work(100))  # no workflow
        await asyncio.gather(*futs)
        await flow.shutdown()

    run(main())
    lines = read_lines(path)
    task_events = [e for e in events(lines) if e["task_id"] is not None]
    assert len({e["task_id"] for e in task_events}) == 62
    for e in task_events:
        assert e["backend"] == "local"
        assert "workflow_id" in e["attributes"]
    by_task = {}
    for e in task_events:
        by_task.setdefault(e["task_id"], set()).add(e["attributes"]["workflow_id"])
    assert all(len(v) == 1 for v in by_task.values())
    wids = {next(iter(v)) for v in by_task.values()}
    assert wids == {"wf-0", "wf-1", "wf-2", "tagged", None}
    assert {s["attributes"]["workflow_id"] for s in spans(lines, "workflow")} == {
        "wf-0", "wf-1", "wf-2", "tagged"}


@pytest.mark.timeout(120)
def test_environment_variable_alone_switches_it_on(tmp_path, clean_env):
    path = tmp_path / "from-env.jsonl"
    clean_env.setenv("ASYNCFLOW_HPC_TELEMETRY", str(path))
    clean_env.setenv("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "0.05")

    async def main():
        flow = await make_engine()  # no telemetry= argument

        @flow.function_task
        def nap():
            import time

            time.sleep(0.3)

        await nap()
        await flow.shutdown()

    run(main())
    lines = read_lines(path)
    assert types(events(lines, "task.000001"))[-1] == "TaskCompleted"
    res = [e for e in events(lines) if e["event_type"] == "ResourceUpdate"]
    assert len(res) >= 2
    for key in ("cpu_percent", "memory_percent", "gpu_percent", "disk_read_bytes",
                "disk_write_bytes", "net_sent_bytes", "net_recv_bytes"):
        assert key in res[0]
    assert 0 <= res[-1]["memory_percent"] <= 100 and res[-1]["node_id"]
    metric = [d for d in lines if d["section"] == "metric"][-1]
    assert metric["node_memory_utilization"] is not None


@pytest.mark.timeout(120)
def test_directory_path_and_two_engines_share_a_file(tmp_path):
    async def main():
        a = await make_engine(tmp_path)  # a directory: one file per engine
        b = await make_engine(tmp_path / "shared.jsonl")
        c = await make_engine(tmp_path / "shared.jsonl")
        for flow in (a, b, c):
            @flow.function_task
            async def one():
                return 1

            await one()
        for flow in (a, b, c):
            await flow.shutdown()
        return a.uid

    uid = run(main())
    assert (tmp_path / f"{uid}.telemetry.jsonl").exists()
    lines = read_lines(tmp_path / "shared.jsonl")
    assert len({e["session_id"] for e in events(lines)}) == 2
    assert len(spans(lines, "session")) == 2


@pytest.mark.timeout(120)
def test_an_unwritable_path_fails_at_the_start(tmp_path):
    from asyncflow_hpc.errors import ConfigurationError

    blocker = tmp_path / "a-file"
    blocker.write_text("")

    async def main():
        with pytest.raises(ConfigurationError, match="cannot write the event log"):
            await make_engine(blocker / "sub" / "ev.jsonl")

    run(main())


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_telemetry_uses_the_engine_tape_not_an_observer(tmp_path, monkeypatch, writer):
    """In a worker process or on a thread, the engine is not called back per event:
    telemetry attaches to the engine's tape, and the lines are the same events in the same
    order per task."""
    from asyncflow_hpc.telemetry import attach

    monkeypatch.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", writer)

    async def main():
        flow = await make_engine()
        subscribed = []
        original = flow.subscribe
        flow.subscribe = lambda *a, **k: subscribed.append(a) or original(*a, **k)
        att = attach(flow, tmp_path / "tape.jsonl")
        assert flow._tape is not None and not subscribed

        @flow.function_task
        def square(x):
            return x * x

        assert await asyncio.gather(*[square(i) for i in range(50)]) == \
            [i * i for i in range(50)]
        await att.close()
        assert flow._tape is None  # detached at close
        await flow.shutdown()

    run(main())
    lines = read_lines(tmp_path / "tape.jsonl")
    for k in range(1, 51):
        task = events(lines, f"task.{k:06d}")
        assert types(task) == ["TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted",
                               "TaskStarted", "TaskCompleted"]
        times = [e["event_time"] for e in task]
        assert times == sorted(times)


def test_running_tasks_reach_the_log_within_a_second_or_two(tmp_path, monkeypatch):
    """A long task's steps so far are in the file while it still runs (the worker process
    writes finished tasks at once and unfinished ones at least once a second)."""
    import threading

    monkeypatch.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", "process")
    path = tmp_path / "live.jsonl"
    release = threading.Event()

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        def slow():
            release.wait(60)
            return 1

        @flow.function_task
        def quick():
            return 2

        fut = slow()
        assert await quick() == 2
        t0 = time.monotonic()
        seen: list = []
        while time.monotonic() - t0 < 30:  # the steps come within about a second
            await asyncio.sleep(0.2)
            seen = read_lines(path)
            if "TaskStarted" in types(events(seen, "task.000001")):
                break
        waited = time.monotonic() - t0
        assert not fut.done()
        release.set()
        await fut
        await flow.shutdown()
        return seen, waited

    seen, waited = run(main())
    assert waited < 5
    assert types(events(seen, "task.000002"))[-1] == "TaskCompleted"
    assert types(events(seen, "task.000001")) == ["TaskCreated", "TaskResolved", "TaskQueued",
                                                  "TaskSubmitted", "TaskStarted"]
    final = read_lines(path)
    assert types(events(final, "task.000001"))[-1] == "TaskCompleted"
    assert len(events(final, "task.000001")) == 6  # nothing written twice
