"""The telemetry worker process: lifetime, crash safety, escaping, the in-process fallback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from telemetry_testlib import (
    EVENT_KEYS,
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    events,
    make_engine,
    read_lines,
    run,
    spans,
    types,
)

import asyncflow_hpc
from asyncflow_hpc.telemetry import rows
from asyncflow_hpc.telemetry.translator import Translator

pytestmark = pytest.mark.usefixtures("clean_env")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))
WEIRD = ['say "hi"', "line\nbreak\ttab", "ünïcödé ✓ 日本", "back\\slash", "ctrl\x01\x1f",
         "percent %s %d %%", "{\"json\": [1]}"]


def _workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if any("worker.py" in part for part in _cmdline(p))]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.timeout(120)
def test_the_worker_runs_while_the_engine_does_and_is_gone_after_shutdown(tmp_path, clean_env):
    clean_env.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", "process")  # also on a single CPU
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)
        session = next(a for a in flow._attachments if hasattr(a, "worker"))
        pid = session.worker.proc.pid  # the default: a worker process
        assert pid in {p.pid for p in _workers()}

        @flow.function_task
        async def one(i):
            return i

        assert await asyncio.gather(*[one(i) for i in range(300)]) == list(range(300))
        await flow.shutdown()
        assert session.worker.proc.poll() == 0
        assert pid not in {p.pid for p in _workers()}

    run(main())
    lines = read_lines(path)
    assert len({e["task_id"] for e in events(lines) if e["task_id"]}) == 300
    assert types(events(lines))[-1] == "SessionEnded"


@pytest.mark.timeout(120)
def test_user_strings_are_escaped(tmp_path, clean_env):
    clean_env.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", "process")
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)
        futs = []
        for k, text in enumerate(WEIRD):
            async def body(x):
                return x

            body.__name__ = body.__qualname__ = text
            task = flow.function_task(body)
            futs.append(task(k, workflow_id=f"wf {text}"))
        assert await asyncio.gather(*futs) == list(range(len(WEIRD)))
        await flow.shutdown()

    run(main())
    lines = read_lines(path)  # every line parses
    by_task: dict = {}
    for e in events(lines):
        if e["task_id"]:
            assert [k for k in e if k not in ("duration_seconds", "error_type")] == EVENT_KEYS
            by_task.setdefault(e["task_id"], []).append(e)
    names = {evs[0]["attributes"]["task_name"] for evs in by_task.values()}
    assert names == set(WEIRD)
    for evs in by_task.values():
        name = evs[0]["attributes"]["task_name"]
        for e in evs:
            assert e["attributes"]["task_name"] == e["attributes"]["executable"] == name
            assert e["attributes"]["workflow_id"] == f"wf {name}"
    assert {s["attributes"]["workflow_id"] for s in spans(lines, "workflow")} == {
        f"wf {t}" for t in WEIRD}


@pytest.mark.timeout(120)
def test_in_process_writing_on_request(tmp_path, clean_env):
    from asyncflow_hpc.telemetry.thread_worker import ThreadWorker

    clean_env.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", "thread")
    path = tmp_path / "ev.jsonl"

    async def main():
        before = {p.pid for p in _workers()}  # an earlier test's worker may still be exiting
        flow = await make_engine(path)
        session = next(a for a in flow._attachments if hasattr(a, "worker"))
        assert isinstance(session.worker, ThreadWorker)
        assert {p.pid for p in _workers()} <= before

        @flow.function_task
        def square(x):
            return x * x

        assert await square(3) == 9
        await flow.shutdown()

    run(main())
    task = events(read_lines(path), "task.000001")
    assert types(task) == ["TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted",
                           "TaskStarted", "TaskCompleted"]


def test_the_translator_writes_what_it_always_wrote():
    """Rows of stamped records (and a failure as an item of its own), through marshal as on
    the pipe, give the lines recorded in tests/telemetry/data/weird_tasks_lines.json: the
    same keys in the same order, the same values, for awkward names too (ids aside)."""
    import marshal

    from asyncflow_hpc.events import EventType
    from asyncflow_hpc.tasks import TaskKind, TaskRecord, TaskState

    t = 1_700_000_000.0
    recs = []
    for i, name in enumerate(WEIRD):
        r = TaskRecord(f"task.{i:06d}", name, TaskKind.FUNCTION, None, None)
        r.workflow_id, r.backend, r.attempts = f"wf-{i % 2}", "local", 1
        r.dependencies = [recs[-1].uid] if recs else []
        r.created, r.resolved, r.queued, r.submitted, r.started = (
            t + k + 0.25 for k in range(5))
        r.node = "node-1"
        r.state = TaskState.RUNNING
        recs.append(r)
    err = RuntimeError('bad "value"\n')
    # the failure is packed before the record changes, the rest as rows when done
    items = [rows.rare_item(EventType.FAILED, recs[0], err, t + 9.5)]
    for r in recs[1:]:
        r.finished, r.state = t + 9.5, TaskState.DONE
    emit = t + 10
    items.append(rows.pack_rows(recs[1:], emit))
    tr = Translator("engine.x", "0xabc", "0xdef")
    for item in marshal.loads(marshal.dumps(items, 2)):
        tr.feed(item, emit)
    out: list[bytes] = []
    tr.lines(out)
    got = [json.loads(x) for x in b"".join(out).splitlines()]
    for d in got:
        for k in ("event_id", "span_id", "parent_span_id"):
            d.pop(k, None)
    with open(os.path.join(os.path.dirname(__file__), "data", "weird_tasks_lines.json"),
              encoding="utf-8") as fh:
        want = json.load(fh)
    assert len(got) == len(want) == len(WEIRD) * 7
    for a, b in zip(got, want, strict=True):
        assert list(a) == list(b) and a == b


KILLED = textwrap.dedent("""
    import asyncio, sys
    from concurrent.futures import ThreadPoolExecutor
    from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine

    async def main(path):
        flow = await WorkflowEngine.create(
            backend=await LocalExecutionBackend(ThreadPoolExecutor(2)), telemetry=path,
            install_signal_handlers=False)

        @flow.function_task
        async def step(i):
            await asyncio.sleep(0.001)
            return i

        n = 0
        while True:
            await asyncio.gather(*[step(n + k) for k in range(100)])
            n += 100
            if n == 2000:
                print("ready", flush=True)

    asyncio.run(main(sys.argv[1]))
""")


@pytest.mark.timeout(120)
def test_after_a_sigkill_the_worker_writes_what_it_has_and_exits(tmp_path):
    path = tmp_path / "killed.jsonl"
    script = tmp_path / "campaign.py"
    script.write_text(KILLED)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               ASYNCFLOW_HPC_TELEMETRY_WRITER="process")
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        parent = psutil.Process(proc.pid)
        workers = [p for p in parent.children() if any("worker.py" in a for a in _cmdline(p))]
        assert len(workers) == 1
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert alive == [] and gone
    finally:
        if proc.poll() is None:
            proc.kill()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")  # the worker writes whole lines only
    lines = [json.loads(x) for x in raw.split(b"\n")[:-1]]
    assert sum(1 for e in events(lines) if e["event_type"] == "TaskCompleted") >= 2000
    assert lines[-1]["section"] == "metric"  # the worker's last snapshot
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_values_marshal_cannot_carry_are_written_as_text():
    """A backend's node as an object, a command with a Path in it: the frame falls back to
    their str() instead of losing the batch."""
    import marshal
    import pathlib

    from asyncflow_hpc.events import EventType
    from asyncflow_hpc.framing import frame
    from asyncflow_hpc.tasks import TaskKind, TaskRecord, TaskState
    from asyncflow_hpc.telemetry.writer import _dumps

    class Node:
        def __str__(self) -> str:
            return "node-7"

    r = TaskRecord("task.000001", "cp", TaskKind.EXECUTABLE, None, None)
    r.backend, r.attempts, r.node = "local", 1, Node()
    r.command = ["cp", pathlib.Path("/tmp/a b"), "/tmp/c"]
    r.created = r.resolved = r.queued = r.submitted = r.started = 1_700_000_000.0
    r.finished, r.state = 1_700_000_001.0, TaskState.DONE
    f = TaskRecord("task.000002", "bad", TaskKind.FUNCTION, None, None)
    f.backend, f.attempts, f.node, f.created = "local", 1, Node(), 1_700_000_000.0
    items = [rows.pack_rows([r], 1_700_000_002.0),
             rows.rare_item(EventType.FAILED, f, ValueError("x"), 1_700_000_001.5)]
    data = frame(("L", 1_700_000_002.0, items), _dumps)
    _, emit, got = marshal.loads(data[4:])
    tr = Translator("engine.x", "0x1", "0x2")
    for item in got:
        tr.feed(item, emit)
    out: list[bytes] = []
    tr.lines(out)
    lines = [json.loads(x) for x in b"".join(out).splitlines()]
    done = [d for d in lines if d.get("event_type") == "TaskCompleted"][0]
    assert done["node_id"] == "node-7"
    assert done["attributes"]["executable"] == "cp /tmp/a b /tmp/c"
    failed = [d for d in lines if d.get("event_type") == "TaskFailed"][0]
    assert failed["node_id"] == "node-7" and failed["error_type"] == "ValueError"
