"""Executable tasks: splitting, shell mode, cwd/env, errors."""

import asyncio
import os

import pytest
from conftest import run

from asyncflow_hpc import (
    ConfigurationError,
    ExecutableNotFoundError,
    LocalExecutionBackend,
    TaskExecutionError,
    WorkflowEngine,
)


def test_split_without_shell_and_shell_keeps_quoting(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        async def echo(text, task_description=None):
            return f'echo "{text}"'

        # without a shell the quotes group one argument and are removed; spacing survives
        assert await echo("a  b") == "a  b\n"
        # no shell: metacharacters are plain arguments
        assert await echo("x; echo pwned") == "x; echo pwned\n"

        @flow.executable_task(task_description={"shell": True})
        def pipeline():
            return 'printf "%s|" "a  b" c | tr "|" "\\n"'

        assert await pipeline() == "a  b\nc\n"

        @flow.executable_task
        def argv_list():
            return ["printf", "%s,", "two words", "x"]

        assert await argv_list() == "two words,x,"
        await flow.shutdown()

    run(main())


def test_cwd_and_env_are_honoured(make_flow, tmp_path):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def show():
            return "sh -c 'pwd; echo $GREETING; echo ${HOME:+home-kept}'"

        out = await show(task_description={"cwd": str(tmp_path), "env": {"GREETING": "hello"}})
        assert out.split() == [str(tmp_path), "hello", "home-kept"]
        await flow.shutdown()

    run(main())


def test_nonzero_exit_carries_command_code_and_stderr_tail(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def fail():
            return "sh -c 'for i in $(seq 1 50); do echo line$i >&2; done; exit 3'"

        with pytest.raises(TaskExecutionError) as info:
            await fail()
        err = info.value
        assert err.exit_code == 3
        assert "sh -c" in err.command and "exited with code 3" in str(err)
        assert "line50" in str(err) and "line1\n" not in str(err)  # only the tail
        assert err.stderr.count("line") == 50
        await flow.shutdown()

    run(main())


def test_missing_and_non_executable_programs_are_named(make_flow, tmp_path):
    async def main():
        flow = await make_flow()
        script = tmp_path / "not-exec.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        os.chmod(script, 0o644)

        @flow.executable_task
        def run_it(cmd):
            return cmd

        with pytest.raises(ExecutableNotFoundError, match="'no-such-program-xyz' not found"):
            await run_it("no-such-program-xyz --flag")
        with pytest.raises(ExecutableNotFoundError, match="not executable"):
            await run_it(str(script))
        with pytest.raises(ValueError, match="empty command"):
            await run_it("   ")
        with pytest.raises(TypeError, match="command string"):
            await run_it(42)
        await flow.shutdown()

    run(main())


def test_pre_exec_runs_before_the_command(make_flow, tmp_path):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def cat_marker():
            return "cat marker"

        out = await cat_marker(task_description={
            "cwd": str(tmp_path), "pre_exec": ["echo prepared > marker"]})
        assert out == "prepared\n"
        await flow.shutdown()

    run(main())


def test_executable_result_feeds_a_function(make_flow):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        async def produce():
            return "seq 1 4"

        @flow.function_task
        def total(text):
            return sum(int(x) for x in text.split())

        assert await total(produce()) == 10
        await flow.shutdown()

    run(main())


def test_huge_output_is_not_held_twice(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent('''
        import asyncio, resource
        from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine

        async def main():
            backend = await LocalExecutionBackend(max_output=1 << 30)  # kept whole in memory
            async with WorkflowEngine.create(backend=backend,
                                             install_signal_handlers=False) as flow:
                @flow.executable_task
                def big():
                    return "sh -c 'head -c 100000000 /dev/zero | tr \\"\\\\\\\\0\\" a'"
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                out = await big()
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                assert len(out) == 100_000_000 and out[:3] == "aaa", (len(out), out[:10])
                print((peak - before) // 1024)

        asyncio.run(main())
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    growth_mb = int(proc.stdout.split()[-1])
    # the 100 MB string plus at most one transient 100 MB view of it (asyncio's pipe
    # reading would hold a buffer, a bytes copy and the string: > 300 MB)
    assert growth_mb < 250, growth_mb


def test_mpi_ranks_take_process_slots(tmp_path):
    """A 2-rank task holds two of the backend's process slots, so with max_processes=2 it never
    runs beside a plain executable: the recorded intervals do not overlap."""
    import shutil

    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun on PATH")
    log = tmp_path / "log"

    async def main():
        backend = await LocalExecutionBackend(max_processes=2)
        async with WorkflowEngine.create(backend, install_signal_handlers=False) as flow:
            @flow.executable_task
            def mark(tag, task_description=None):
                return ["sh", "-c", f'echo "start {tag} $(date +%s.%N)" >> {log}; sleep 0.3; '
                        f'echo "end {tag} $(date +%s.%N)" >> {log}']

            await asyncio.gather(mark("mpi", task_description={"ranks": 2}), mark("solo"))

    run(main())
    times = {}
    for line in log.read_text().split("\n"):
        if line:
            what, tag, t = line.split()
            times.setdefault(tag, {}).setdefault(what, []).append(float(t))
    mpi_start, mpi_end = min(times["mpi"]["start"]), max(times["mpi"]["end"])
    solo_start, solo_end = times["solo"]["start"][0], times["solo"]["end"][0]
    assert len(times["mpi"]["start"]) == 2  # both ranks ran
    assert solo_start >= mpi_end or solo_end <= mpi_start


def test_srun_node_failure_with_exit_0_is_a_failure(tmp_path):
    """SLURM 22.05's srun prints "Node failure on <node>" and may exit 0: not a success."""
    async def main():
        async with WorkflowEngine.create(LocalExecutionBackend(), install_signal_handlers=False) as flow:
            @flow.executable_task
            def fake_srun():
                return ["sh", "-c", "echo partial; echo 'srun: error: Node failure on afnode2' >&2"]

            @flow.executable_task
            def noisy_ok():
                return ["sh", "-c", "echo fine; echo 'warning: something' >&2"]

            ok = await noisy_ok()
            with pytest.raises(TaskExecutionError, match="lost node afnode2"):
                await fake_srun()
            return ok

    assert run(main()).strip() == "fine"


def test_stdout_and_stderr_in_the_task_description_are_written(make_flow, tmp_path):
    """As on RADICAL-Pilot: the named files (relative to the task's working directory) get
    the output, and the result is still the output itself; also when the task fails."""
    work = tmp_path / "work"
    work.mkdir()

    async def main():
        flow = await make_flow()
        td = {"stdout": "logs/out.txt", "stderr": "err.txt", "cwd": str(work), "shell": True}

        @flow.executable_task
        def talk(code, task_description=td):
            return f"echo said; echo complained >&2; exit {code}"

        @flow.function_task
        def quiet():
            return 1

        assert await talk(0) == "said\n"
        assert (work / "logs" / "out.txt").read_text() == "said\n"
        assert (work / "err.txt").read_text() == "complained\n"
        (work / "err.txt").unlink()
        with pytest.raises(TaskExecutionError):
            await talk(3)
        assert (work / "err.txt").read_text() == "complained\n"
        with pytest.raises(ConfigurationError, match="name the output files of an executable"):
            await quiet(task_description={"stdout": "f.txt"})
        await flow.shutdown()

    run(main())
