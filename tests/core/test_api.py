"""The AsyncFlow programming model: futures, dependencies, descriptions, scopes, records."""

import asyncio

import pytest
from conftest import run

from asyncflow_hpc import (
    NoopExecutionBackend,
    TaskFuture,
    TaskState,
    WorkflowEngine,
)


def test_call_returns_future_at_once(make_flow):
    async def main():
        flow = await make_flow()
        started = asyncio.Event()

        @flow.function_task
        async def slow():
            started.set()
            await asyncio.sleep(0.2)
            return 1

        fut = slow()
        assert isinstance(fut, asyncio.Future) and isinstance(fut, TaskFuture)
        assert not fut.done()
        assert await fut == 1
        assert fut.state is TaskState.DONE
        await flow.shutdown()

    run(main())


def test_decorators_bare_and_with_arguments(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        def plain(x):
            return x * 2

        @flow.function_task(service=False)
        async def coro(x):
            return x + 1

        @flow.executable_task()
        def cmd(word):
            return f"echo {word}"

        @flow.block
        async def blk(x):
            return await coro(plain(x))

        assert await plain(3) == 6
        assert await coro(3) == 4
        assert await cmd("hi") == "hi\n"
        assert await blk(5) == 11
        await flow.shutdown()

    run(main())


def test_dependencies_everywhere_in_arguments(make_flow):
    async def main():
        flow = await make_flow()
        calls = []

        @flow.function_task
        async def one(x):
            calls.append(x)
            return x

        @flow.function_task
        async def collect(a, lst, tup, dct, *, kw, nested):
            return a, lst, tup, dct, kw, nested

        a, b, c, d, e = one(1), one(2), one(3), one(4), one(5)
        res = await collect(a, [b, 7], (c,), {"k": d}, kw=e, nested={"l": [a, (b,)]})
        assert res == (1, [2, 7], (3,), {"k": 4}, 5, {"l": [1, (2,)]})
        rec = flow.components[collect(a, a, a, {}, kw=a, nested=None).uid]
        assert rec["dependencies"] == [a.uid]  # the same future counts once
        await flow.shutdown()

    run(main())


def test_dependent_waits_for_all_inputs(make_flow):
    async def main():
        flow = await make_flow()
        order = []

        @flow.function_task
        async def step(name, delay, *deps):
            await asyncio.sleep(delay)
            order.append(name)
            return name

        a = step("a", 0.1)
        b = step("b", 0.01)
        c = step("c", 0, a, b)
        assert await c == "c"
        # c ran after both of its inputs, whatever order they finished in on a loaded machine
        assert order[-1] == "c" and sorted(order[:2]) == ["a", "b"]
        await flow.shutdown()

    run(main())


def test_plain_asyncio_futures_are_dependencies(make_flow):
    async def main():
        flow = await make_flow()
        loop = asyncio.get_running_loop()
        ext = loop.create_future()

        @flow.function_task
        async def add(x, y):
            return x + y

        fut = add(ext, 1)
        await asyncio.sleep(0.01)
        assert not fut.done()
        ext.set_result(41)
        assert await fut == 42
        await flow.shutdown()

    run(main())


def test_task_description_merge_and_never_passed_to_body(make_flow, tmp_path):
    async def main():
        flow = await make_flow()
        seen = {}

        @flow.function_task
        async def f(x, task_description={"ranks": 2, "env": {"A": "1"}}):  # noqa: B006
            seen["td"] = task_description
            return x

        fut = f(1, task_description={"env": {"B": "2"}, "timeout": 30})
        assert await fut == 1
        assert seen["td"] == {"ranks": 2, "env": {"A": "1"}}  # the body sees its own default
        td = flow.components[fut.uid]["description"]["task_description"]
        assert td == {"ranks": 2, "env": {"B": "2"}, "timeout": 30}  # shallow, call-time wins

        @flow.executable_task
        def where(task_description={"cwd": str(tmp_path)}):  # noqa: B006
            return "pwd"

        assert (await where()).strip() == str(tmp_path)
        await flow.shutdown()

    run(main())


def test_workflow_scope_and_call_time_id(make_flow):
    async def main():
        flow = await make_flow()
        bodies = []

        @flow.function_task
        async def t(*a, **kw):
            bodies.append(kw)
            return 1

        async with flow.workflow_scope("experiment-42") as wid:
            assert wid == "experiment-42"
            a = t()
            b = t(workflow_id="run-007")
        c = t()
        async with flow.workflow_scope() as auto:
            assert auto.startswith("wf-") and len(auto) == 11
            d = t()
        await asyncio.gather(a, b, c, d)
        wf = [flow.components[f.uid]["description"]["workflow_id"] for f in (a, b, c, d)]
        assert wf == ["experiment-42", "run-007", None, auto]
        assert bodies == [{}, {}, {}, {}]  # workflow_id is stripped before the body runs
        await flow.shutdown()

    run(main())


def test_scopes_never_leak_between_engines(make_flow):
    async def main():
        f1 = await make_flow()
        f2 = await make_flow()

        @f1.function_task
        async def t1():
            await asyncio.sleep(0)
            return 1

        @f2.function_task
        async def t2():
            return 2

        async def wf1():
            async with f1.workflow_scope("one"):
                await asyncio.sleep(0.01)
                x = t1()
                await asyncio.sleep(0.01)
                return x, t2()

        async def wf2():
            async with f2.workflow_scope("two"):
                await asyncio.sleep(0.005)
                y = t2()
                await asyncio.sleep(0.01)
                return y, t1()

        (x, x2), (y, y1) = await asyncio.gather(wf1(), wf2())
        await asyncio.gather(x, x2, y, y1)
        assert f1.components[x.uid]["description"]["workflow_id"] == "one"
        assert f2.components[x2.uid]["description"]["workflow_id"] is None
        assert f2.components[y.uid]["description"]["workflow_id"] == "two"
        assert f1.components[y1.uid]["description"]["workflow_id"] is None
        await f1.shutdown()
        await f2.shutdown()

    run(main())


def test_blocks_inherit_scope_and_tag_their_tasks(make_flow):
    async def main():
        flow = await make_flow()
        inner = []

        @flow.function_task
        async def t():
            return 1

        @flow.block
        async def wf():
            f = t()
            inner.append(f)
            return await f

        async with flow.workflow_scope("outer"):
            b = wf()
        assert await b == 1
        rec = flow.components[inner[0].uid]
        assert rec["description"]["workflow_id"] == "outer"
        assert rec["description"]["parent"] == b.uid
        await flow.shutdown()

    run(main())


def test_component_record_contents(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def a():
            return 1

        @flow.function_task
        async def b(x):
            return x

        fa = a()
        fb = b(fa)
        rec = flow.components[fb.uid]
        assert rec["name"] == "b" and rec["backend"] == "local"
        assert rec["dependencies"] == [fa.uid]
        assert rec["state"] in (TaskState.PENDING, TaskState.RUNNING)
        await fb
        assert rec["state"] is TaskState.DONE and fb.state == "DONE"
        await flow.shutdown()

    run(main())


def test_engine_as_async_context_manager_and_dry_run():
    async def main():
        async with WorkflowEngine.create(dry_run=True, install_signal_handlers=False) as flow:
            assert isinstance(flow.backends["dryrun"], NoopExecutionBackend)

            @flow.executable_task
            def never(): return "rm -rf /definitely/not"

            assert await never() == ""
            assert flow.backends["dryrun"].submitted[0].command == ["rm", "-rf", "/definitely/not"]
        assert not flow.is_running
        with pytest.raises(RuntimeError, match="shut down"):
            never()

    run(main())


@pytest.mark.parametrize("name,cls", [("local", "LocalExecutionBackend"),
                                      ("dryrun", "NoopExecutionBackend")])
def test_default_backend_from_environment(monkeypatch, name, cls):
    monkeypatch.setenv("ASYNCFLOW_HPC_BACKEND", name)

    async def main():
        flow = await WorkflowEngine.create(install_signal_handlers=False)
        assert type(next(iter(flow.backends.values()))).__name__ == cls
        await flow.shutdown()

    run(main())


def test_unknown_environment_backend_is_a_clear_error(monkeypatch):
    from asyncflow_hpc import ConfigurationError

    monkeypatch.setenv("ASYNCFLOW_HPC_BACKEND", "slurmy")

    async def main():
        with pytest.raises(ConfigurationError, match="unknown backend 'slurmy'.*local"):
            await WorkflowEngine.create(install_signal_handlers=False)

    run(main())


def test_multiple_backends_select_by_name(make_flow):
    async def main():
        from concurrent.futures import ThreadPoolExecutor

        from asyncflow_hpc import LocalExecutionBackend
        b1 = await LocalExecutionBackend(ThreadPoolExecutor(2), name="fast")
        b2 = NoopExecutionBackend(name="dry")
        flow = await WorkflowEngine.create(backend=[b1, b2], install_signal_handlers=False)

        @flow.function_task
        async def real():
            return "ran"

        @flow.function_task(backend="dry")
        async def pretend():
            return "ran"

        assert await real() == "ran"
        assert await pretend() is None
        await flow.shutdown()

    run(main())


def test_run_workflow_sync_entry_point():
    from asyncflow_hpc import run_workflow

    async def main(flow):
        @flow.function_task
        def square(x):
            return x * x

        return sum(await asyncio.gather(*[square(i) for i in range(10)]))

    assert run_workflow(main, install_signal_handlers=False) == 285
