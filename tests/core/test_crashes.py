"""One crash costs one task; nothing a campaign started outlives it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

CRASHES = textwrap.dedent('''
    import asyncio, os, signal, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine, WorkerLostError

    class TwoArgs(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a}/{b}")

    async def main():
        # the engine's own signal handlers are installed (main thread): a worker's SIGTERM
        # must not reach them
        flow = await WorkflowEngine.create(
            backend=await LocalExecutionBackend(ProcessPoolExecutor(2)))

        @flow.function_task
        def ok(i):
            time.sleep(0.1)
            return i

        @flow.function_task
        def exits():
            os._exit(3)

        @flow.function_task
        def sigkill():
            os.kill(os.getpid(), signal.SIGKILL)

        @flow.function_task
        def sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        @flow.function_task
        def unpicklable():
            raise TwoArgs(1, 2)

        for bad in (exits, sigkill, sigterm, unpicklable):
            futs = [ok(i) for i in range(3)] + [bad()] + [ok(i) for i in range(3, 6)]
            out = await asyncio.gather(*futs, return_exceptions=True)
            good = [r for r in out if not isinstance(r, BaseException)]
            errors = [r for r in out if isinstance(r, BaseException)]
            assert good == list(range(6)), (bad.__name__, out)
            assert len(errors) == 1, (bad.__name__, out)
            print(bad.__name__, type(errors[0]).__name__, str(errors[0]).splitlines()[0],
                  flush=True)
        print("workers", *[c.pid for c in __import__("psutil").Process().children()], flush=True)
        await flow.shutdown()
        print("survived", flush=True)

    asyncio.run(main())
''')


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.timeout(180)
def test_a_crashing_worker_fails_one_task_and_the_campaign_goes_on(tmp_path):
    script = tmp_path / "crashes.py"
    script.write_text(CRASHES)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=150, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "survived"
    kinds = {line.split()[0]: line.split()[1] for line in lines[:4]}
    assert kinds == {"exits": "WorkerLostError", "sigkill": "WorkerLostError",
                     "sigterm": "WorkerLostError", "unpicklable": "TaskBodyError"}
    assert "TwoArgs: 1/2" in proc.stdout
    workers = [int(p) for p in lines[4].split()[1:]]
    assert not _gone(workers)


BUSY_POOL = textwrap.dedent('''
    import asyncio, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from asyncflow_hpc import LocalExecutionBackend, TaskTimeoutError, WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create(
            backend=await LocalExecutionBackend(ProcessPoolExecutor(2)))

        def body(path):
            with open(path, "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            time.sleep(120)

        busy = flow.function_task(body)

        @flow.executable_task
        def sleeper(path):
            return f"sh -c 'echo $$ >> {path}; exec sleep 300'"

        if sys.argv[1] == "timeout":
            try:
                await flow.function_task(timeout=1)(body)(sys.argv[2])
            except TaskTimeoutError:
                print("timed out", flush=True)
            t = time.monotonic()
            await flow.shutdown()
            print(f"shutdown {time.monotonic() - t:.1f}", flush=True)
            return
        await asyncio.gather(busy(sys.argv[2]), busy(sys.argv[2]), sleeper(sys.argv[2]))

    asyncio.run(main())
''')


def _pids(path, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= n:
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"the campaign did not start {n} processes")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
@pytest.mark.timeout(120)
def test_nothing_outlives_a_stopped_or_killed_campaign(tmp_path, how):
    """Busy pool workers and running executables end with the campaign, also after kill -9
    (pool workers: PR_SET_PDEATHSIG; executables: the reaper)."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY_POOL)
    pids_file = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, str(script), "run", str(pids_file)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        pids = _pids(pids_file, 3)
        proc.send_signal(how)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = _gone(pids)
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert left == []


@pytest.mark.timeout(120)
def test_a_timed_out_process_task_does_not_hold_the_exit(tmp_path):
    script = tmp_path / "busy.py"
    script.write_text(BUSY_POOL)
    pids_file = tmp_path / "pids"
    out = subprocess.run([sys.executable, str(script), "timeout", str(pids_file)],
                         capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "timed out" in out.stdout
    took = float(out.stdout.split("shutdown")[1].split()[0])
    assert took < 10, out.stdout  # not the task's 120 s
    pids = [int(p) for p in pids_file.read_text().split()]
    assert not _gone(pids)


def test_huge_stdout_is_capped_in_memory_and_spilled_to_a_file(tmp_path):
    import asyncio

    from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine
    from asyncflow_hpc.backends.local import SpilledOutput

    async def main():
        backend = await LocalExecutionBackend(max_output=1 << 20)
        async with WorkflowEngine.create(backend=backend, install_signal_handlers=False) as flow:
            @flow.executable_task
            def big():
                return "sh -c 'head -c 50000000 /dev/zero | tr \"\\\\0\" a'"

            @flow.executable_task
            def small():
                return "echo hi"

            out = await big()
            assert isinstance(out, SpilledOutput) and len(out) == 1 << 20
            assert out.size == 50_000_000 == os.path.getsize(out.path)
            assert oct(os.stat(out.path).st_mode & 0o777) == "0o600"
            os.unlink(out.path)
            assert await small() == "hi\n" and not isinstance(await small(), SpilledOutput)

    asyncio.run(main())


def test_huge_stderr_of_a_failed_executable_is_kept_whole_in_a_file():
    import asyncio

    from asyncflow_hpc import TaskExecutionError, WorkflowEngine

    async def main():
        async with WorkflowEngine.create(install_signal_handlers=False) as flow:
            @flow.executable_task
            def noisy():
                return "sh -c 'head -c 3000000 /dev/zero | tr \"\\\\0\" e >&2; exit 2'"

            try:
                await noisy()
            except TaskExecutionError as err:
                assert len(err.stderr) == 1 << 20  # the tail in memory
                assert os.path.getsize(err.stderr_path) == 3_000_000
                assert str(err.stderr_path) in str(err)
                os.unlink(err.stderr_path)
            else:
                raise AssertionError("noisy did not fail")

    asyncio.run(main())
