"""Whole programs on RADICAL-Pilot, each in its own process with its own pilot.

* the seed example, unchanged, selected with ``ASYNCFLOW_HPC_BACKEND=radical`` (RP's client
  in the program's process: ``ASYNCFLOW_HPC_RP_CLIENT=thread``);
* SIGTERM / SIGINT while tasks run: the program ends, the pilot and its tasks with it (RP's
  client in a child process, the default).

Both check afterwards that nothing of the run's RP session is left on the machine and that
the test process has no new children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from radical_helpers import live_children, refuse_network_tools, sleepers

from asyncflow_hpc.backends.radical import leftover_processes

pytestmark = pytest.mark.radical

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_workflows.py"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ASYNCFLOW_HPC_RESOURCE", None)
    env.update(ASYNCFLOW_HPC_BACKEND="radical", PYTHONUNBUFFERED="1", **extra)
    return env


def _sessions(cwd: Path) -> list[tuple[str, Path]]:
    """(session id, backend work dir) of every RP session a program ran under ``cwd``."""
    out = []
    for folder in sorted(cwd.glob("asyncflow-work/radical-*/session/rp.session.*")):
        out.append((folder.name, folder.parents[1]))
    return out


def _assert_nothing_left(cwd: Path, before: set[int]) -> None:
    sessions = _sessions(cwd)
    assert sessions, f"no RP session folder under {cwd}/asyncflow-work"
    time.sleep(0.5)
    for sid, work_dir in sessions:
        left = leftover_processes(sid, work_dir)
        assert not left, f"processes of {sid} left: {[p.cmdline() for p in left]}"
        # RP's id counters must not stay in $HOME either
        assert not (Path.home() / ".radical" / "utils" / sid).exists()
    assert not (live_children() - before), "the program left children of the test process"


def _reap(cwd: Path) -> None:
    """After a failed test: end whatever the program's sessions left (never by name)."""
    procs = [p for sid, wd in _sessions(cwd) for p in leftover_processes(sid, wd)]
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.mark.timeout(300)
def test_seed_example_runs_on_a_pilot_selected_by_env(tmp_path):
    refuse_network_tools()
    before = live_children()
    t0 = time.monotonic()
    try:
        # RP's client in the program's own process, chosen by environment like the backend
        proc = subprocess.run([sys.executable, str(SEED)], cwd=tmp_path,
                              env=_env(ASYNCFLOW_HPC_RP_CLIENT="thread"),
                              capture_output=True, text=True, timeout=280)
    except subprocess.TimeoutExpired:
        _reap(tmp_path)
        raise
    out = proc.stdout
    assert proc.returncode == 0, f"seed example failed:\n{out}\n{proc.stderr[-3000:]}"
    for wf in range(5):
        assert f"workflow seed-{wf} done" in out, out
    assert "5 workflows finished" in out
    (sid, work_dir), = _sessions(tmp_path)
    # the session, sandbox and config folders live in the backend's work dir
    assert (work_dir / "session" / sid).is_dir()
    # the function tasks ran on the warm worker pool's agent (an RP task in the pilot)
    assert list((work_dir / "sandbox").glob(f"*/{sid}/pilot.0000/warm.000.*"))
    assert list((work_dir / "config").glob(".radical/pilot/configs/resource_local.json"))
    print(f"seed example on RADICAL-Pilot: {time.monotonic() - t0:.1f}s\n{out}")
    _assert_nothing_left(tmp_path, before)


SIGNAL_SCRIPT = textwrap.dedent("""
    import asyncio

    from asyncflow_hpc import TaskState, WorkflowEngine


    async def main():
        flow = await WorkflowEngine.create()  # ASYNCFLOW_HPC_BACKEND=radical

        @flow.executable_task
        def nap():
            return "/bin/sleep {tag}"

        futs = [nap() for _ in range(3)]
        while not any(f.state is TaskState.RUNNING for f in futs):
            await asyncio.sleep(0.1)
        print("RUNNING", flush=True)
        await asyncio.gather(*futs)
        print("NOT REACHED", flush=True)


    asyncio.run(main())
""")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig, tag", [(signal.SIGTERM, "918"), (signal.SIGINT, "919")])
def test_signal_during_a_run_stops_pilot_and_tasks(tmp_path, sig, tag):
    refuse_network_tools()
    before = live_children()
    script = tmp_path / "campaign.py"
    script.write_text(SIGNAL_SCRIPT.format(tag=tag))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 200
        lines = []
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip() == "RUNNING" or not line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert line.strip() == "RUNNING", "".join(lines)
        for _ in range(100):  # AGENT_EXECUTING comes a moment before the launch script execs
            if sleepers(tag):
                break
            time.sleep(0.1)
        assert sleepers(tag), "the task's process is not running"
        t0 = time.monotonic()
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=90)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:  # the test failed early: let the program clean up first
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _reap(tmp_path)
    assert "NOT REACHED" not in rest
    # SIGTERM's default action ends the program; SIGINT surfaces as KeyboardInterrupt
    assert proc.returncode in (-sig, 128 + sig, 1), (proc.returncode, rest[-3000:])
    assert took < 60, f"shutdown after {sig.name} took {took:.1f}s"
    assert not sleepers(tag), "the task's process outlived the program"
    _assert_nothing_left(tmp_path, before)
