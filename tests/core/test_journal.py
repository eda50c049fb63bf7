"""Journal and resume: finished work is never run twice."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run

from asyncflow_hpc import ConfigurationError

CAMPAIGN = textwrap.dedent('''
    import asyncio, os, sys
    from asyncflow_hpc import WorkflowEngine

    COUNTS = sys.argv[1]

    async def main():
        flow = await WorkflowEngine.create(journal=sys.argv[2])

        @flow.function_task
        async def square(i):
            with open(COUNTS, "a") as fh:          # count every real execution
                fh.write(f"f{i}\\n")
            await asyncio.sleep(0.01 if i < 20 else 0.5)
            return i * i

        @flow.executable_task
        def echo(x):
            return f"sh -c 'echo e{x} >> {COUNTS}; echo {x}'"

        @flow.function_task
        def total(*xs):
            return sum(int(str(x).strip()) for x in xs)

        outs = [echo(square(i)) for i in range(40)]
        print("TOTAL", await total(*outs), flush=True)
        await flow.shutdown()

    asyncio.run(main())
''')


def test_kill_9_then_resume_runs_only_unfinished_tasks(tmp_path):
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    counts = tmp_path / "counts"
    journal = tmp_path / "state" / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), str(counts), str(journal)],
                            start_new_session=True)
    deadline = time.monotonic() + 60
    # wait until the quick half is done, then kill the whole campaign without warning
    while time.monotonic() < deadline:
        if counts.exists() and counts.read_text().count("e") >= 20:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    first = counts.read_text().split()
    done_before = {line for line in first if line.startswith("e")}
    assert len(done_before) >= 20
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    kept_lines = journal.read_text().splitlines()

    out = subprocess.run([sys.executable, str(script), str(counts), str(journal)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"TOTAL {sum(i * i for i in range(40))}" in out.stdout
    second = counts.read_text().split()[len(first):]
    # no executable recorded before the kill ran again (one that wrote its line but was
    # killed before its end was recorded may run again: that is not lost work)
    recorded = {f"e{json.loads(line)['j'].strip()}" for line in kept_lines
                if line.endswith("}") and json.loads(line).get("name") == "echo"}
    assert len(recorded) >= 10 and recorded <= done_before
    assert not recorded & set(second)
    assert sorted(done_before | {x for x in second if x.startswith("e")}) == \
        sorted(f"e{i * i}" for i in range(40))

    # a third run replays everything
    before = len(counts.read_text().split())
    out = subprocess.run([sys.executable, str(script), str(counts), str(journal)],
                         capture_output=True, text=True, timeout=120)
    assert "TOTAL" in out.stdout and len(counts.read_text().split()) == before


def test_identical_calls_are_recorded_separately(make_flow, tmp_path):
    journal = tmp_path / "j.jsonl"

    async def campaign():
        flow = await make_flow(journal=str(journal))
        calls = []

        @flow.function_task
        async def sample():
            calls.append(1)
            return len(calls)

        res = await asyncio.gather(*[sample() for _ in range(5)])
        await flow.shutdown()
        return res, len(calls)

    first, n1 = run(campaign())
    assert sorted(first) == [1, 2, 3, 4, 5] and n1 == 5
    second, n2 = run(campaign())
    assert n2 == 0 and sorted(second) == [1, 2, 3, 4, 5]


def test_unpicklable_results_are_reported_once(make_flow, tmp_path, caplog):
    import threading

    async def main():
        flow = await make_flow(journal=str(tmp_path / "j.jsonl"))

        @flow.function_task
        async def lock():
            return threading.Lock()

        await asyncio.gather(lock(), lock())
        await flow.shutdown()

    with caplog.at_level("WARNING", logger="asyncflow_hpc.journal"):
        run(main())
    msgs = [r.getMessage() for r in caplog.records if "cannot be pickled" in r.getMessage()]
    assert len(msgs) == 1 and "'lock'" in msgs[0]


def test_failures_are_not_recorded(make_flow, tmp_path):
    journal = tmp_path / "j.jsonl"

    async def main(fail):
        flow = await make_flow(journal=str(journal))

        @flow.function_task
        async def maybe(x):
            if fail:
                raise RuntimeError("no")
            return x

        try:
            return await maybe(3)
        except RuntimeError:
            return "failed"
        finally:
            await flow.shutdown()

    assert run(main(True)) == "failed"
    assert run(main(False)) == 3


class MemoryStore:
    """A result store of a user's own (the ResultStore plug-in): kept in a dict."""

    def __init__(self):
        self.results, self.asked, self.closed = {}, [], False

    def key_for(self, rec, command=None):
        return None if rec.name == "never" else f"{rec.name}{rec.args}"

    def lookup(self, key):
        self.asked.append(key)
        return (True, self.results[key]) if key in self.results else (False, None)

    def record(self, key, rec, value):
        self.results[key] = value

    async def close(self):
        self.closed = True


def test_a_result_store_of_ones_own_is_asked_before_and_told_after(make_flow):
    store = MemoryStore()
    ran = []

    async def campaign():
        flow = await make_flow(journal=store)
        assert flow.journal is store

        @flow.function_task
        async def square(x):
            ran.append(x)
            return x * x

        @flow.function_task
        async def never():  # key_for says None: never stored, always runs
            ran.append("never")
            return 0

        out = await asyncio.gather(square(2), square(3), never())
        await flow.shutdown()
        return out

    assert run(campaign()) == [4, 9, 0] and sorted(map(str, ran)) == ["2", "3", "never"]
    assert store.closed and store.results == {"square(2,)": 4, "square(3,)": 9}
    ran.clear()
    store.results["square(3,)"] = 99  # what the store says wins: the task does not run
    assert run(campaign()) == [4, 99, 0] and ran == ["never"]
    assert store.asked.count("square(2,)") == 2


def test_journal_must_be_a_path_or_a_result_store(make_flow):
    async def main():
        with pytest.raises(ConfigurationError, match="journal= must be a path or a "
                                                     "ResultStore.*got int"):
            await make_flow(journal=42)

    run(main())


@pytest.mark.parametrize("payload", [b"", b'{"k": "trunc'])
def test_torn_journal_is_readable(tmp_path, payload):
    from asyncflow_hpc.journal import Journal

    path = tmp_path / "j.jsonl"
    path.write_bytes(payload)
    j = Journal(path)
    assert len(j) == 0
    run(j.close())
