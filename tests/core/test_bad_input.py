"""Bad input never hangs or crashes the engine; each error names the problem."""

import asyncio
import resource
import threading

import pytest
from conftest import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow_hpc import ConfigurationError, WorkflowEngine


def test_wrong_types_are_named(make_flow):
    async def main():
        flow = await make_flow()
        with pytest.raises(TypeError, match="must decorate a function"):
            flow.function_task(42)
        with pytest.raises(TypeError, match="async def"):
            @flow.block
            def not_async():
                return 1
        with pytest.raises(ConfigurationError, match="retries"):
            flow.function_task(retries="3")(lambda: 1)
        with pytest.raises(ConfigurationError, match="timeout"):
            flow.executable_task(timeout=-1)(lambda: "true")

        @flow.function_task
        async def t():
            return 1

        with pytest.raises(ConfigurationError, match="workflow_id"):
            await t(workflow_id=7)
        with pytest.raises(ConfigurationError, match="env"):
            await t(task_description={"env": "A=1"})
        with pytest.raises(ConfigurationError, match="backend"):
            await WorkflowEngine.create(backend="local", install_signal_handlers=False)
        assert await t() == 1
        await flow.shutdown()

    run(main())


def test_self_containing_arguments_do_not_hang(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def first():
            return 1

        @flow.function_task
        async def use(x, y):
            return len(y)

        loop_list: list = [1]
        loop_list.append(loop_list)
        assert await use(1, loop_list) == 2  # no dependency inside: passed as it is
        loop_list.append(first())
        with pytest.raises(ConfigurationError, match="nested too deeply"):
            await use(1, loop_list)
        await flow.shutdown()

    run(main())


def test_wrong_engine_use_is_explained():
    flow = WorkflowEngine(install_signal_handlers=False)

    @flow.function_task
    def t():
        return 1

    with pytest.raises(RuntimeError, match="not started"):
        t()


def test_hundred_thousand_tasks_with_random_failures_and_retries(make_flow):
    """Exact accounting: every task either succeeds within its retries or fails, never both."""
    n, retries = 100_000, 2

    def fails(i, attempt):  # deterministic "random" 10% failure per attempt
        return (i * 7919 + attempt * 104729) % 10 == 0

    expected_failed = sum(1 for i in range(n) if all(fails(i, a) for a in range(retries + 1)))

    async def main():
        flow = await make_flow()
        attempts = {}

        @flow.function_task(retries=retries)
        async def work(i):
            a = attempts.get(i, 0)
            attempts[i] = a + 1
            if fails(i, a):
                raise RuntimeError(f"task {i} attempt {a}")
            return i

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ok = failed = 0
        for start in range(0, n, 20_000):
            res = await asyncio.gather(*[work(i) for i in range(start, start + 20_000)],
                                       return_exceptions=True)
            for i, r in enumerate(res, start):
                if isinstance(r, RuntimeError):
                    failed += 1
                    assert "ran 3 times" in r.__notes__[0]
                else:
                    assert r == i
                    ok += 1
        growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        total_attempts = sum(attempts.values())
        expected_attempts = sum(
            next((a + 1 for a in range(retries + 1) if not fails(i, a)), retries + 1)
            for i in range(n))
        assert (ok, failed) == (n - expected_failed, expected_failed)
        assert total_attempts == expected_attempts
        assert flow.counts["failed"] == failed and flow.counts["done"] == ok
        assert growth_mb < 200, growth_mb  # bounded: batches of 20k, records freed
        await flow.shutdown()

    run(main(), timeout=300)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
# (no pre_exec: random text must never reach a shell)
_keys = st.sampled_from(["shell", "timeout", "retries", "cwd", "env", "ranks",
                         "cores_per_rank", "walltime", "named_env", "bogus", "sandbox"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(td=st.dictionaries(_keys, _values, max_size=4), args=st.lists(_values, max_size=3))
def test_fuzzed_descriptions_and_arguments_end_in_time(make_flow, td, args):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def fn(*a):
            return len(a)

        @flow.executable_task
        def exe(*a):
            return ["printf", "%s", *map(str, a)]

        for task in (fn, exe):
            try:
                await asyncio.wait_for(task(*args, task_description=td), 10)
            except asyncio.TimeoutError:
                raise AssertionError(f"task hung with task_description={td!r}") from None
            except Exception as exc:  # every failure is an ordinary, explained exception
                assert str(exc) or isinstance(exc, (TypeError, ValueError))
        await flow.shutdown()

    run(main(), timeout=60)
    assert threading.active_count() < 50


def test_cli_run_reports_configuration_errors_without_traceback(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "campaign.py"
    script.write_text(
        "import asyncio\nfrom asyncflow_hpc import WorkflowEngine\n\n"
        "async def main():\n    async with WorkflowEngine.create():\n        pass\n\n"
        "asyncio.run(main())\n")
    env = {**__import__("os").environ, "ASYNCFLOW_HPC_BACKEND": "slurmish"}
    out = subprocess.run([sys.executable, "-m", "asyncflow_hpc", "run", "--quiet", str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "ConfigurationError" in out.stderr and "slurmish" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
