"""AsyncFlow parity on the local backend: where bodies run, components kept, capture_stdio,
files between tasks, and the small items (flow.backend, TypeError, threads after shutdown)."""

import asyncio
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run
from scenarios import missing_declared_output_fails_the_producer

from asyncflow_hpc import (
    ConfigurationError,
    InputFile,
    LocalExecutionBackend,
    OutputFile,
    TaskExecutionError,
    WorkflowEngine,
)


class Peak:
    """Counts bodies running at once (thread-safe)."""

    def __init__(self):
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


# ---------------------------------------------------------------------- where bodies run
def test_blocking_async_bodies_run_in_parallel_off_the_loop(make_flow):
    """The seed's shape with blocking async bodies: workflows overlap in the executor."""
    async def main():
        flow = await make_flow(ThreadPoolExecutor(6))
        loop_thread = threading.get_ident()
        peak = Peak()
        threads = set()

        @flow.function_task
        async def task1():
            with peak:
                threads.add(threading.get_ident())
                time.sleep(0.2)
            return 1

        @flow.function_task
        async def task2():
            with peak:
                threads.add(threading.get_ident())
                time.sleep(0.2)
            return 2

        @flow.function_task
        async def task3(a, b):
            with peak:
                threads.add(threading.get_ident())
                time.sleep(0.2)
            return a + b

        results = await asyncio.gather(*[task3(task1(), task2()) for _ in range(5)])
        assert results == [3] * 5
        assert loop_thread not in threads
        assert peak.peak >= 3, peak.peak  # 10 ready bodies on 6 workers: they overlap
        assert len(threads) <= 6
        await flow.shutdown()

    run(main())


def test_the_call_runs_no_part_of_the_body(make_flow):
    async def main():
        flow = await make_flow()
        ran = threading.Event()

        @flow.function_task
        async def body():
            ran.set()
            return 1

        @flow.function_task
        def plain():
            ran.set()
            return 2

        for task in (body, plain):
            ran.clear()
            fut = task()
            assert not ran.is_set() and not fut.done()
            await fut
            assert ran.is_set()
        await flow.shutdown()

    run(main())


def test_awaiting_bodies_leave_workers_free(make_flow):
    """200 bodies awaiting sleep on 4 threads: all are in flight together, loops are kept."""
    async def main():
        flow = await make_flow(ThreadPoolExecutor(4))
        peak = Peak()
        loops = set()

        @flow.function_task
        async def nap():
            loops.add(id(asyncio.get_running_loop()))
            with peak:
                await asyncio.sleep(0.2)
            return 1

        assert sum(await asyncio.gather(*[nap() for _ in range(200)])) == 200
        assert peak.peak > 100, peak.peak  # far more than the 4 workers wait at once
        assert len(loops) <= 4  # one kept loop per worker thread, not one per task
        assert id(asyncio.get_running_loop()) not in loops
        await flow.shutdown()

    run(main())


def test_async_body_in_a_process_pool_keeps_its_loop(make_flow):
    async def main():
        flow = await make_flow(ProcessPoolExecutor(1))

        @flow.function_task
        async def where():
            await asyncio.sleep(0)
            return os.getpid(), id(asyncio.get_running_loop())

        first = await where()
        second = await where()
        assert first == second and first[0] != os.getpid()
        await flow.shutdown()

    run(main())


def test_inline_opt_in_runs_on_the_engine_loop(make_flow, monkeypatch):
    async def main():
        flow = await make_flow()
        me = threading.get_ident()

        @flow.function_task(inline=True)
        async def fast():
            return threading.get_ident()

        @flow.function_task
        async def default():
            return threading.get_ident()

        assert await fast() == me
        assert await default() != me
        await flow.shutdown()

        flow = await make_flow(inline=True)

        @flow.function_task
        async def engine_wide():
            return threading.get_ident()

        @flow.function_task(inline=False)
        async def not_inline():
            return threading.get_ident()

        assert await engine_wide() == me
        assert await not_inline() != me
        await flow.shutdown()

        monkeypatch.setenv("ASYNCFLOW_HPC_INLINE", "1")
        flow = await make_flow()
        assert flow.inline is True
        await flow.shutdown()
        monkeypatch.setenv("ASYNCFLOW_HPC_INLINE", "maybe")
        with pytest.raises(ConfigurationError, match="ASYNCFLOW_HPC_INLINE"):
            await make_flow()

    run(main())


def test_a_body_that_submits_tasks_is_told_to_use_a_block(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def leaf(x):
            return x + 1

        @flow.function_task
        async def submits():
            return await leaf(1)

        with pytest.raises(RuntimeError, match="@flow.block"):
            await submits()

        @flow.block
        async def composes():
            return await leaf(await leaf(1))

        assert await composes() == 3
        await flow.shutdown()

    run(main())


# ---------------------------------------------------------------------- components
def test_components_kept_after_futures_are_dropped(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def t1():
            return 1

        @flow.function_task
        async def t2(x):
            return x + 1

        @flow.executable_task(capture_stdio=True)
        def t3():
            return "echo hi"

        async with flow.workflow_scope("exp-1"):
            await t2(t1())
        await t3(workflow_id="exp-2")

        @flow.block
        async def blk():
            return await t1()

        await blk()
        comps = list(flow.components.values())
        names = [c["description"]["name"] for c in comps]
        assert names == ["t1", "t2", "t3", "blk", "t1"]
        by_name = {c["description"]["name"]: c["description"] for c in comps}
        assert by_name["t2"]["workflow_id"] == "exp-1"
        assert by_name["t2"]["dependencies"] == ["t1"]
        assert by_name["t2"]["state"] == "DONE"
        assert by_name["t3"]["workflow_id"] == "exp-2"
        assert by_name["t3"]["capture_stdio"] is True
        assert by_name["t3"]["stdout"].endswith(".stdout")
        for uid, comp in flow.components.items():
            d = comp["description"]
            assert d["uid"] == uid and d["type"] in ("function", "executable", "block")
            assert comp["future"] is None and comp["args"] is None  # results are not kept
            assert {"task_description", "capture_stdio", "state"} <= set(d)
        await flow.shutdown()
        assert len(flow.components) == 5

    run(main())


def test_components_opt_out_keeps_only_live_tasks(make_flow, monkeypatch):
    async def main():
        for flow in (await make_flow(keep_components=False), None):
            if flow is None:
                monkeypatch.setenv("ASYNCFLOW_HPC_KEEP_COMPONENTS", "0")
                flow = await make_flow()

            @flow.function_task
            async def t():
                return 1

            held = t()
            await held
            for _ in range(3):
                await t()
            import gc

            for _ in range(3):  # the loop's last handle may still hold the last future
                await asyncio.sleep(0)
            gc.collect()
            assert list(flow.components) == [held.uid]
            await flow.shutdown()

    run(main())


# ---------------------------------------------------------------------- capture_stdio, service
def test_capture_stdio_writes_files_and_returns_the_stdout_path(make_flow, tmp_path):
    async def main():
        flow = await make_flow(uid="cap-engine")

        @flow.executable_task(capture_stdio=True)
        def hello():
            return "sh -c 'echo hello; echo note >&2'"

        @flow.executable_task(capture_stdio=True)
        def broken():
            return "sh -c 'echo partial; echo bad input >&2; exit 3'"

        @flow.function_task(capture_stdio=True)
        async def fn():
            return 42

        path = await hello()
        first = next(iter(flow.components))
        assert path == str(tmp_path / "cap-engine" / f"{first}.stdout")
        assert open(path).read() == "hello\n"
        assert open(path[: -len(".stdout")] + ".stderr").read() == "note\n"
        with pytest.raises(TaskExecutionError) as info:
            await broken()
        err = info.value
        assert open(err.stdout_path).read() == "partial\n"
        assert open(err.stderr_path).read() == "bad input\n"
        assert "bad input" in str(err)
        assert await fn() == 42  # recorded, ignored on function tasks
        assert oct(os.stat(tmp_path / "cap-engine").st_mode & 0o777) == "0o700"
        await flow.shutdown()

    run(main())


def test_service_true_is_refused_not_ignored(make_flow):
    async def main():
        flow = await make_flow()
        with pytest.raises(ConfigurationError, match="service=True"):
            @flow.function_task(service=True)
            async def server():
                return 1
        await flow.shutdown()

    run(main())


# ---------------------------------------------------------------------- files between tasks
def test_files_follow_futures_names_and_outside_paths(make_flow, tmp_path):
    async def main():
        flow = await make_flow(uid="files")

        @flow.executable_task
        def produce(out):
            return f"sh -c 'echo data > {out.filename}'"

        @flow.executable_task
        def consume(_):
            return "cat a.txt"  # implicit data: the producer's output is in our directory

        @flow.function_task
        async def read(inp):
            with open(inp) as fh:
                return fh.read()

        @flow.function_task
        def write(out, text):
            with open(out, "w") as fh:
                fh.write(text)

        assert await consume(produce(OutputFile("a.txt"))) == "data\n"
        assert await read(InputFile("a.txt")) == "data\n"  # staged by name
        outside = tmp_path / "outside.txt"
        outside.write_text("from outside\n")
        assert await read(InputFile(str(outside))) == "from outside\n"
        # a producer still running: the InputFile by name waits for it
        w = write(OutputFile("b.txt"), "later\n")
        r = read(InputFile("b.txt"))
        assert await r == "later\n" and w.done()
        with pytest.raises(FileNotFoundError, match="nowhere.txt"):
            await read(InputFile("nowhere.txt"))
        await flow.shutdown()

    run(main())


def test_missing_declared_output_fails_the_producer(make_flow):
    async def main():
        for executor in (ThreadPoolExecutor(2), ProcessPoolExecutor(1)):
            flow = await make_flow(executor)
            await missing_declared_output_fails_the_producer(flow)
            await flow.shutdown()

    run(main())


# ---------------------------------------------------------------------- small items
def test_flow_backend_and_task_description_type_errors(make_flow):
    async def main():
        flow = await make_flow()
        assert flow.backend is flow.backends["local"]

        @flow.function_task
        async def t():
            return 1

        with pytest.raises(TypeError, match="must be a dict"):
            t(task_description=["cores", 4])
        with pytest.raises(TypeError, match="must be a dict"):
            @flow.function_task
            async def bad_default(task_description=5):
                return 1
        await flow.shutdown()

    run(main())


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_no_thread_outlives_shutdown(kind):
    async def main():
        before = set(threading.enumerate())
        executor = ThreadPoolExecutor(3) if kind == "threads" else ProcessPoolExecutor(2)
        flow = await WorkflowEngine.create(backend=await LocalExecutionBackend(executor),
                                           install_signal_handlers=False)

        @flow.function_task
        async def a(x):
            await asyncio.sleep(0.01)
            return x

        @flow.function_task
        def b(x):
            return x

        @flow.executable_task
        def c():
            return "true"

        await asyncio.gather(*[a(i) for i in range(20)], *[b(i) for i in range(20)], c())
        await flow.shutdown()
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        assert left == []

    run(main())


def test_files_with_a_relative_work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def main():
        flow = await WorkflowEngine.create(work_dir="runs", uid="rel",
                                           install_signal_handlers=False)

        @flow.executable_task
        def produce(out):
            return f"sh -c 'echo rel > {out.filename}'"

        @flow.executable_task(capture_stdio=True)
        def consume(_):
            return "cat a.txt"

        path = await consume(produce(OutputFile("a.txt")))
        assert os.path.isabs(path) and open(path).read() == "rel\n"
        assert str(flow.files_root) == str(tmp_path / "runs" / "rel")
        await flow.shutdown()

    run(main())
