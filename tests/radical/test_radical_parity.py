"""radical.asyncflow parity on a real pilot: capture_stdio, files between tasks, async bodies.

All tests share the session's pilot (``rp_backend`` in conftest: RP's client in a child
process, so every spec also crosses the client process's socket), each with its own engine.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from radical_helpers import close, run
from scenarios import missing_declared_output_fails_the_producer

from asyncflow_hpc import InputFile, OutputFile, TaskExecutionError

pytestmark = pytest.mark.radical


@pytest.mark.timeout(300)
def test_capture_stdio_result_is_the_stdout_path(make_flow, tmp_path):
    async def main():
        flow = await make_flow(uid="cap")

        @flow.executable_task(capture_stdio=True, task_description={"shell": True})
        def hello():
            return "echo hello; seq 1 2000; echo note >&2"

        @flow.executable_task(capture_stdio=True, task_description={"shell": True})
        def broken():
            return "echo partial; echo bad input >&2; exit 3"

        @flow.function_task(capture_stdio=True)
        async def fn():
            return 42

        fut = hello()
        path = await fut
        assert path == str(tmp_path / "cap" / f"{fut.uid}.stdout")
        expected = "hello\n" + "".join(f"{i}\n" for i in range(1, 2001))
        assert open(path).read() == expected  # whole, not RP's last KiB
        assert open(str(tmp_path / "cap" / f"{fut.uid}.stderr")).read() == "note\n"
        with pytest.raises(TaskExecutionError) as info:
            await broken()
        err = info.value
        assert err.exit_code == 3
        assert open(err.stdout_path).read() == "partial\n"
        assert open(err.stderr_path).read() == "bad input\n"
        assert "bad input" in str(err)
        assert await fn() == 42  # recorded, ignored on function tasks
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_executables_pass_files_by_future_name_and_path(make_flow, tmp_path):
    async def main():
        flow = await make_flow(uid="exe-files")

        @flow.executable_task(task_description={"shell": True})
        def produce(out):
            return f"echo data > {out.filename}; pwd"  # relative to its own directory

        @flow.executable_task
        def consume(_):
            return "cat a.txt"  # implicit data: the producer's output is in our directory

        @flow.executable_task
        def show(inp):
            return ["cat", inp.filename]

        made = produce(OutputFile("a.txt"))
        assert await consume(made) == "data\n"
        task_dir = (await made).strip()
        assert task_dir == str(tmp_path / "exe-files" / made.uid)
        assert open(os.path.join(task_dir, "a.txt")).read() == "data\n"
        assert await show(InputFile("a.txt")) == "data\n"  # matched by name
        outside = tmp_path / "outside.txt"
        outside.write_text("from outside\n")
        fut = show(InputFile(str(outside)))
        assert await fut == "from outside\n"
        copy = tmp_path / "exe-files" / fut.uid / "outside.txt"
        assert copy.read_text() == "from outside\n" and not copy.samefile(outside)  # a copy
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_function_tasks_pass_files(make_flow, tmp_path):
    async def main():
        flow = await make_flow(uid="fn-files")

        @flow.function_task
        def write(out, text):
            with open(out, "w") as fh:  # an absolute path in the task's directory
                fh.write(text)
            return os.getcwd()

        @flow.function_task
        async def read(inp):
            await asyncio.sleep(0.01)
            with open(inp) as fh:
                return fh.read()

        @flow.function_task
        def read_relative(_):
            with open("f.txt") as fh:  # raptor runs the function in its task directory
                return fh.read()

        @flow.executable_task
        def cat(_):
            return "cat f.txt"

        made = write(OutputFile("f.txt"), "from a function\n")
        assert await read_relative(made) == "from a function\n"
        assert await made == str(tmp_path / "fn-files" / made.uid)
        assert await read(InputFile("f.txt")) == "from a function\n"
        assert await cat(made) == "from a function\n"  # function -> executable
        outside = tmp_path / "outside.txt"
        outside.write_text("outside\n")
        assert await read(InputFile(str(outside))) == "outside\n"
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_missing_declared_output_fails_the_producer(make_flow):
    async def main():
        flow = await make_flow()
        await missing_declared_output_fails_the_producer(flow)
        await close(flow)

    run(main(), 240)


@pytest.mark.timeout(300)
def test_async_bodies_run_on_raptor_again_and_again(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def nap(x):
            t = asyncio.get_running_loop().time()
            await asyncio.sleep(0.2)
            await asyncio.gather(asyncio.sleep(0.05), asyncio.sleep(0.05))
            return x, asyncio.get_running_loop().time() - t >= 0.25

        assert await nap(1) == (1, True)
        assert await nap(2) == (2, True)  # in a row (each raptor task is a fresh fork in RP 1.103)
        assert await asyncio.gather(nap(3), nap(4)) == [(3, True), (4, True)]
        await close(flow)

    run(main(), 240)
