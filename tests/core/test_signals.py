"""Ctrl-C / SIGTERM / SIGHUP: the campaign stops, its processes die, the journal survives."""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from asyncflow_hpc.cli.run import default_journal

CAMPAIGN = textwrap.dedent('''
    import asyncio, sys
    from asyncflow_hpc import WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create()

        @flow.executable_task
        def long(i):
            return f"sh -c 'echo $$ >> {sys.argv[1]}; sleep 300'"

        @flow.function_task
        async def quick(i):
            return i

        await asyncio.gather(*[quick(i) for i in range(5)])
        await asyncio.gather(*[long(i) for i in range(3)])

    asyncio.run(main())
''')


def _wait_for_pids(path, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= n:
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"campaign did not start {n} processes")


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig,codes", [(signal.SIGINT, (1, 130)), (signal.SIGTERM, (-15, 143)),
                                       (signal.SIGHUP, (-1, 129))])
@pytest.mark.timeout(120)
def test_signal_stops_campaign_and_kills_its_processes(tmp_path, sig, codes):
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    pids_file = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow_hpc", "run", "--quiet", str(script),
                             str(pids_file)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_pids(pids_file, 3)
        proc.send_signal(sig)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc in codes, proc.stderr.read()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    # the five quick tasks were journaled before the signal
    journal = tmp_path / default_journal(str(script))  # .asyncflow-hpc/campaign-<hash>...
    assert len(journal.read_text().splitlines()) == 5
