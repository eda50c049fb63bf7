"""Long chains of dependency failures: a short error naming the root, at any length."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import traceback

import pytest
from conftest import run

from asyncflow_hpc import DependencyFailureError

CHAIN = textwrap.dedent('''
    import asyncio, sys, time, traceback
    from asyncflow_hpc import DependencyFailureError, LocalExecutionBackend, WorkflowEngine

    N = int(sys.argv[1])

    async def main():
        backend = await LocalExecutionBackend()
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False)

        @flow.function_task
        async def load():
            raise FileNotFoundError("no such file: input.dat")

        @flow.function_task
        async def parse(x):
            return x

        t0 = time.monotonic()
        fut = load()
        for _ in range(N):
            fut = parse(fut)
        try:
            await fut
        except DependencyFailureError as err:
            text = "".join(traceback.format_exception(err))
            assert type(err.root_cause) is FileNotFoundError, err.root_cause
            assert err.root_task == "load" and err.failed_dependencies == ["parse"]
            assert err.__cause__ is err.root_cause and err.root_cause.__cause__ is None
            print("LEN", len(text))
            print("MSG", err)
            print("SECONDS", round(time.monotonic() - t0, 1))
        await flow.shutdown()

    asyncio.run(main())
''')


@pytest.mark.timeout(600)
@pytest.mark.parametrize("n", [1_000, 100_000])
def test_a_long_failure_chain_prints_a_short_error(tmp_path, n):
    script = tmp_path / "chain.py"
    script.write_text(CHAIN)
    out = subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True,
                         timeout=540, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert int(lines["LEN"]) < 10_000, out.stdout
    assert lines["MSG"] == ("Cannot execute 'parse' due to dependency failure: 'load' "
                            "(upstream of input 'parse') failed with FileNotFoundError: no "
                            "such file: input.dat")
    assert len(out.stderr) < 10_000


def test_a_hop_points_at_the_root_and_pickles():
    root = ValueError("bad value\nsecond line")
    first = DependencyFailureError("Cannot execute 'b' due to dependency failure", ["a"], root)
    second = DependencyFailureError("Cannot execute 'c' due to dependency failure", ["b"], first)
    assert first.root_task == second.root_task == "a"
    assert second.root_cause is root and second.__cause__ is root
    assert second.failed_dependencies == ["b"] and second.original_error is root
    assert str(second) == ("Cannot execute 'c' due to dependency failure: 'a' (upstream of "
                           "input 'b') failed with ValueError: bad value")
    back = pickle.loads(pickle.dumps(second))
    assert type(back) is DependencyFailureError and str(back) == str(second)
    assert back.root_task == "a" and type(back.__cause__) is ValueError
    assert len("".join(traceback.format_exception(back))) < 2000
    # a message without a cause stays as it is
    assert str(DependencyFailureError("x")) == "x"
    # one long root message is cut in every hop
    long = DependencyFailureError("m", ["a"], RuntimeError("y" * 10_000))
    assert len(str(long)) < 400


def test_engine_dependency_error_names_the_root(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def bad():
            raise ValueError("root")

        @flow.function_task
        async def use(*xs):
            return sum(xs)

        top = use(use(bad()))
        with pytest.raises(DependencyFailureError) as info:
            await top
        await flow.shutdown()
        return info.value

    err = run(main())
    assert str(err) == ("Cannot execute 'use' due to dependency failure: 'bad' (upstream of "
                        "input 'use') failed with ValueError: root")
