"""capture_stdio, file plans and async bodies on RADICAL-Pilot, without a pilot.

The translation into RP's TaskDescription (real ``rp.TaskDescription`` objects, nothing
submitted), the spec fields that cross the client process's socket, and REMOTE_CALL (the
function every raptor task runs) exactly as it is shipped: dill-pickled by value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

rp = pytest.importorskip("radical.pilot")

from asyncflow_hpc import ConfigurationError, MissingOutputError, TaskKind, TaskSpec  # noqa: E402
from asyncflow_hpc.backends.radical import RadicalPilotBackend  # noqa: E402
from asyncflow_hpc.backends.radical import messages as wire  # noqa: E402
from asyncflow_hpc.backends.radical import translate as tr  # noqa: E402
from asyncflow_hpc.backends.radical.inprocess import InProcessClient  # noqa: E402
from asyncflow_hpc.files import FilePlan, StageIn  # noqa: E402
from asyncflow_hpc.framing import FrameReader, frame  # noqa: E402

pytestmark = pytest.mark.radical


def _translator(tmp_path) -> InProcessClient:
    """A client that never starts: enough for ``_translate`` (raptor faked)."""
    client = RadicalPilotBackend(cores=4, client="thread", work_dir=tmp_path / "w")._client
    client.rp = rp
    client.cores.ensure_raptor = lambda: "raptor.0000"  # type: ignore[method-assign]
    return client


def _exe(uid="t.1", **kw) -> TaskSpec:
    return TaskSpec(uid, "job", TaskKind.EXECUTABLE, command=["/bin/cat", "a.txt"], **kw)


@pytest.mark.timeout(30)
def test_file_plan_becomes_sandbox_and_staging_directives(tmp_path):
    client = _translator(tmp_path)
    task_dir = str(tmp_path / "eng" / "t.1")
    producer = str(tmp_path / "eng" / "t.0" / "a.txt")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    plan = FilePlan(task_dir, [
        StageIn(producer, "a.txt", "link"),
        StageIn(str(outside), "o.txt", "copy"),
        StageIn(f"file://{outside}", "f.txt", "copy"),
        StageIn("https://example.org/data/y.txt", "y.txt", "copy"),
    ], ["b.txt"])
    user_sd = {"source": "/etc/hostname", "target": "task:///host", "action": rp.COPY}
    for kind in (TaskKind.EXECUTABLE, TaskKind.FUNCTION):
        spec = TaskSpec("t.1", "job", kind, command=["/bin/true"], function=len,
                        args=("ab",), files=plan, description={"input_staging": [user_sd]})
        td, _ = client.translate(spec)
        assert td.sandbox == task_dir
        assert [(sd["source"], sd["target"], sd["action"]) for sd in td.input_staging] == [
            (producer, "task:///a.txt", rp.LINK),
            (str(outside), "task:///o.txt", rp.TRANSFER),
            (str(outside), "task:///f.txt", rp.TRANSFER),
            ("https://example.org/data/y.txt", "task:///y.txt", rp.DOWNLOAD),
            ("/etc/hostname", "task:///host", rp.COPY),  # the user's own directives follow
        ]
    # a sandbox of the user's own wins (as on the local backend); inputs still go to task_dir
    spec = _exe(files=plan, description={"cwd": str(tmp_path)})
    td, _ = client.translate(spec)
    assert td.sandbox == str(tmp_path)
    assert td.input_staging[0]["target"] == os.path.join(task_dir, "a.txt")
    # schemes RP cannot stage fail that task with a clear error
    bad = FilePlan(task_dir, [StageIn("ftp://example.org/z", "z", "copy")], [])
    with pytest.raises(ConfigurationError, match="ftp://example.org/z"):
        client.translate(_exe(files=bad))


@pytest.mark.timeout(30)
def test_a_retry_finds_no_stale_inputs(tmp_path):
    """RP's agent links with os.link, which fails on an existing target: a second attempt
    (retry, resubmission to a replacement pilot) must find the task dir clean."""
    client = _translator(tmp_path)
    task_dir = tmp_path / "t.1"
    task_dir.mkdir()
    (task_dir / "a.txt").write_text("old")
    (task_dir / "mine.txt").write_text("kept")
    plan = FilePlan(str(task_dir), [StageIn(str(tmp_path / "src"), "a.txt", "link")], [])
    client.translate(_exe(files=plan, attempt=2))
    assert sorted(os.listdir(task_dir)) == ["mine.txt"]


@pytest.mark.timeout(30)
def test_capture_stdio_sends_output_to_the_engine_files(tmp_path):
    client = _translator(tmp_path)
    out, err = str(tmp_path / "e" / "t.1.stdout"), str(tmp_path / "e" / "t.1.stderr")
    td, _ = client.translate(_exe(stdio=(out, err)))
    assert (td.stdout, td.stderr) == (out, err)  # absolute: RP's executor uses them as is
    td, _ = client.translate(_exe())
    assert not td.stdout and not td.stderr  # RP's default <uid>.out in the sandbox
    with pytest.raises(ConfigurationError, match="capture_stdio"):
        client.translate(_exe(stdio=(out, err), description={"stdout": "mine.out"}))
    spaced = str(tmp_path / "my runs" / "t.1.stdout")
    with pytest.raises(ConfigurationError, match="spaces"):
        client.translate(_exe(stdio=(spaced, err)))
    # function tasks ignore capture_stdio
    fn = TaskSpec("t.2", "fn", TaskKind.FUNCTION, function=len, args=("ab",), stdio=(out, err))
    td, _ = client.translate(fn)
    assert not td.stdout


@pytest.mark.timeout(30)
def test_missing_outputs_are_reported_by_name(tmp_path):
    plan = FilePlan(str(tmp_path), [], ["b.txt", "c.txt"])
    (tmp_path / "c.txt").write_text("here")
    err = tr.missing_output_error(_exe(files=plan))
    assert isinstance(err, MissingOutputError) and err.names == ["b.txt"]
    assert "b.txt" in str(err) and err.task_dir == str(tmp_path)
    (tmp_path / "b.txt").write_text("here")
    assert tr.missing_output_error(_exe(files=plan)) is None


@pytest.mark.timeout(30)
def test_wire_carries_inline_stdio_and_files():
    plan = FilePlan("/w/e/t.1", [StageIn("/w/e/t.0/a.txt", "a.txt", "link")], ["b.txt"])
    spec = TaskSpec("t.1", "job", TaskKind.EXECUTABLE, command=["/bin/true"], inline=True,
                    stdio=("/w/e/t.1.stdout", "/w/e/t.1.stderr"), files=plan, attempt=3)
    [[msg]] = FrameReader().feed(frame([wire.spec_to_wire(spec, None)]))
    back = wire.spec_from_wire(msg)
    assert back.inline is True and back.attempt == 3
    assert back.stdio == ("/w/e/t.1.stdout", "/w/e/t.1.stderr")
    assert back.files.task_dir == "/w/e/t.1" and back.files.outputs == ["b.txt"]
    assert [(i.source, i.name, i.action) for i in back.files.inputs] == [
        ("/w/e/t.0/a.txt", "a.txt", "link")]
    bare = wire.spec_from_wire(wire.spec_to_wire(TaskSpec("t.2", "x", TaskKind.FUNCTION), "p"))
    assert bare.stdio is None and bare.files is None and bare.inline is False
    assert bare.args == ("p",)


_REMOTE_SCRIPT = textwrap.dedent("""
    import asyncio, base64, multiprocessing, os, sys, threading
    import dill
    from asyncflow_hpc.backends.radical import translate as tr
    from asyncflow_hpc import TaskKind, TaskSpec
    from asyncflow_hpc.files import FilePlan

    # shipped exactly as the raptor worker gets it: by value, without this package
    remote = dill.loads(dill.dumps(tr.REMOTE_CALL))
    assert remote.__globals__.keys() <= {"__builtins__", "__name__"}

    async def body(x):
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        return x * 2, id(loop), threading.current_thread().name, os.getpid()

    async def interrupt():
        raise KeyboardInterrupt

    def payload(fn, *args, files=None):
        return tr.pack_call(TaskSpec("t", "body", TaskKind.FUNCTION, function=fn, args=args,
                                     files=files))

    async def worker(fn, *args):  # RP's worker calls the function inside its own loop
        return remote(payload(fn, *args))

    def call(fn, *args):
        return tr.unpack_result(asyncio.run(worker(fn, *args)))

    ok1, (v1, loop1, thread1, pid1) = call(body, 1)
    ok2, (v2, loop2, thread2, pid2) = call(body, 2)
    assert ok1 and ok2 and (v1, v2) == (2, 4), (v1, v2)
    assert loop1 == loop2 and thread1 == thread2 == "asyncflow-hpc-remote-loop"
    ok, exc = call(interrupt)
    assert not ok and isinstance(exc, RuntimeError) and "KeyboardInterrupt" in str(exc), exc
    ok3, (v3, loop3, _, _) = call(body, 3)  # the loop survived the body's KeyboardInterrupt
    assert ok3 and v3 == 6 and loop3 == loop1
    print("SAME LOOP", loop1 == loop2 == loop3)

    # RP 1.103's default worker forks a process per task: the child cannot use the parent's
    # loop (its thread was not copied) and must get one of its own instead of hanging
    def child(q):
        ok, (v, loop, _, pid) = call(body, 5)
        q.put((ok, v, loop, pid))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    okc, vc, loopc, pidc = q.get(timeout=30)
    p.join(30)
    assert okc and vc == 10 and pidc != pid1, (okc, vc, pidc, pid1)
    print("FORKED CHILD OK")

    # declared outputs are checked where the body ran, after it succeeded
    d = sys.argv[1]
    def writes(name):
        open(os.path.join(d, name), "w").write("x")
    plan = FilePlan(d, [], ["made.txt", "forgot.txt"])
    ok, exc = tr.unpack_result(remote(payload(writes, "made.txt", files=plan)))
    assert not ok and type(exc).__name__ == "MissingOutputError", exc
    assert exc.names == ["forgot.txt"] and exc.task == "body" and exc.task_dir == d
    def boom():
        raise ValueError("first")
    ok, exc = tr.unpack_result(remote(payload(boom, files=plan)))
    assert not ok and isinstance(exc, ValueError)  # the body's own error wins
    print("OUTPUTS CHECKED")
""")


@pytest.mark.timeout(60)
def test_remote_call_keeps_one_loop_per_process(tmp_path):
    """Runs in a fresh interpreter: the loop thread it starts and the fork stay out of
    pytest's process."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SAME LOOP True" in proc.stdout
    assert "FORKED CHILD OK" in proc.stdout and "OUTPUTS CHECKED" in proc.stdout
