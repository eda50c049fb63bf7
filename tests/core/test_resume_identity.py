"""Resume returns this campaign's results only, and only results this user's runs wrote.

Journals named after the script's path (not its stem), campaigns started from tasks with
their own journal and log, one run per journal (a lock), a torn last line that does not
swallow the next record, JSON or signed records (a planted pickle never runs), write
failures as JournalError.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import math
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
import types

import pytest
from conftest import run

import asyncflow_hpc
from asyncflow_hpc import AsyncFlowError, JournalError
from asyncflow_hpc.cli.run import default_journal
from asyncflow_hpc.journal import Journal, journal_key_path
from asyncflow_hpc.report import read_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """The journal key of these tests lives in the test's folder, not in ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("ASYNCFLOW_HPC_JOURNAL", "ASYNCFLOW_HPC_TELEMETRY", "ASYNCFLOW_HPC_CLAIMED",
                "ASYNCFLOW_HPC_BACKEND"):
        monkeypatch.delenv(var, raising=False)


def cli_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    env.update(PYTHONPATH=REPO, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return env


def afhpc(tmp_path, *args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", "run", *map(str, args)],
                          cwd=cwd or tmp_path, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------ script identity

EXPERIMENT = textwrap.dedent('''
    import asyncio, os
    from asyncflow_hpc import WorkflowEngine

    HERE = os.path.dirname(os.path.abspath(__file__))

    async def main():
        flow = await WorkflowEngine.create()

        @flow.function_task
        async def measure():                   # same name and arguments in both experiments
            with open(os.path.join(HERE, "runs"), "a") as fh:
                fh.write("x\\n")
            return os.path.basename(HERE)

        print("RESULT", await measure())
        await flow.shutdown()

    asyncio.run(main())
''')


def test_two_campaigns_with_one_stem_do_not_share_results(tmp_path):
    for exp in ("exp1", "exp2"):
        (tmp_path / exp).mkdir()
        (tmp_path / exp / "campaign.py").write_text(EXPERIMENT)
    first = afhpc(tmp_path, "exp1/campaign.py", "-q")
    assert first.returncode == 0, first.stderr
    assert "RESULT exp1" in first.stdout
    # same folder, same stem, --resume: exp2 must not get exp1's result
    second = afhpc(tmp_path, "--resume-if-any", "exp2/campaign.py", "-q")
    assert second.returncode == 0, second.stderr
    assert "RESULT exp2" in second.stdout
    assert (tmp_path / "exp2" / "runs").read_text().count("x") == 1
    # and each resumes its own
    again = afhpc(tmp_path, "--resume", "exp1/campaign.py", "-q")
    assert "RESULT exp1" in again.stdout
    assert (tmp_path / "exp1" / "runs").read_text().count("x") == 1
    journals = sorted(p.name for p in (tmp_path / ".asyncflow-hpc").glob("*.journal.jsonl"))
    assert len(journals) == 2 and all(j.startswith("campaign-") for j in journals)
    # an explicit campaign id names the journal instead
    assert default_journal("exp1/campaign.py", "sweep-7").name == "sweep-7.journal.jsonl"
    assert default_journal(str(tmp_path / "exp1/campaign.py")) == \
        default_journal(os.path.relpath(tmp_path / "exp1/campaign.py"))


# ------------------------------------------------------------------ campaigns in tasks

PARENT = textwrap.dedent('''
    import asyncio, sys
    from asyncflow_hpc import WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create()

        @flow.function_task
        async def shared():                    # the child has a task with this name too
            with open("parent-runs", "a") as fh:
                fh.write("x\\n")
            return "parent-value"

        @flow.executable_task
        def child(_):                          # a campaign run by the CLI
            return [sys.executable, "-m", "asyncflow_hpc", "run", "CHILD_SCRIPT", "-q"]

        @flow.executable_task
        def plain_child(_):                    # a campaign run by python itself
            return [sys.executable, "CHILD_SCRIPT"]

        first = await shared()
        out = await child(first)
        plain = await plain_child(first)
        print("PARENT", first)
        print("CHILD", out.strip())
        print("PLAIN", plain.strip())
        await flow.shutdown()

    asyncio.run(main())
''')

CHILD = textwrap.dedent('''
    import asyncio, os
    from asyncflow_hpc import WorkflowEngine

    HERE = os.path.dirname(os.path.abspath(__file__))

    async def main():
        flow = await WorkflowEngine.create()

        @flow.function_task
        async def shared():
            with open(os.path.join(HERE, "child-runs"), "a") as fh:
                fh.write("x\\n")
            return "child-value"

        @flow.function_task
        async def child_only():
            return 1

        print(await shared(), await child_only())
        await flow.shutdown()

    asyncio.run(main())
''')


def test_a_campaign_started_from_a_task_has_its_own_journal_and_log(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT.replace("CHILD_SCRIPT", str(child)))
    out = afhpc(tmp_path, "parent.py", "--telemetry", "events.jsonl", "-q", timeout=180)
    assert out.returncode == 0, out.stderr
    assert "PARENT parent-value" in out.stdout
    assert "CHILD child-value 1" in out.stdout  # not the parent's result of 'shared'
    assert "PLAIN child-value 1" in out.stdout
    # the parent's log was neither truncated nor written by the children
    log = read_log(tmp_path / "events.jsonl")
    names = {t.name for t in log.tasks}
    assert {"shared", "child", "plain_child"} <= names and "child_only" not in names
    assert len(log.sessions) == 1 and not log.truncated
    journals = {p.name.split("-")[0]: p for p in (tmp_path / ".asyncflow-hpc").glob("*.jsonl")}
    assert set(journals) == {"parent", "child"}
    parent_names = {json.loads(line)["name"] for line in journals["parent"].read_text().splitlines()}
    assert parent_names == {"shared", "child", "plain_child"}

    # resume: everything of the parent is in its journal, nothing runs again
    again = afhpc(tmp_path, "--resume", "parent.py", "-q", timeout=180)
    assert again.returncode == 0, again.stderr
    assert "CHILD child-value 1" in again.stdout and "PLAIN child-value 1" in again.stdout
    assert (tmp_path / "parent-runs").read_text().count("x") == 1
    assert (tmp_path / "child-runs").read_text().count("x") == 2


# ------------------------------------------------------------------ one run per journal

GATED = textwrap.dedent('''
    import asyncio, os
    from asyncflow_hpc import WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create()

        @flow.function_task
        async def wait_for_gate():
            open("started", "w").close()
            while not os.path.exists("gate"):
                await asyncio.sleep(0.05)
            with open("runs", "a") as fh:
                fh.write("x\\n")
            return 7

        print("RESULT", await wait_for_gate())
        await flow.shutdown()

    asyncio.run(main())
''')


def test_a_second_run_on_a_journal_in_use_is_refused(tmp_path):
    (tmp_path / "gated.py").write_text(GATED)
    first = subprocess.Popen([sys.executable, "-m", "asyncflow_hpc", "run", "gated.py", "-q"],
                             cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        journal = tmp_path / default_journal(str(tmp_path / "gated.py"))
        for args in (["--resume"], []):  # neither resumes nor moves the journal aside
            second = afhpc(tmp_path, *args, "gated.py", "-q")
            assert second.returncode == 2
            assert f"{journal} is in use by another run (pid {first.pid} on" in second.stderr
            assert "Traceback" not in second.stderr and len(second.stderr.splitlines()) == 1
        assert sorted(p.name for p in journal.parent.iterdir()) == [journal.name,
                                                                    journal.name + ".lock"]
    finally:
        (tmp_path / "gate").touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "RESULT 7" in out
    # once it ended, the journal is free again and resumes without running anything
    again = afhpc(tmp_path, "--resume", "gated.py", "-q")
    assert again.returncode == 0 and "RESULT 7" in again.stdout, again.stderr
    assert (tmp_path / "runs").read_text().count("x") == 1


def test_one_journal_is_one_run_in_process_too(tmp_path):
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    with pytest.raises(JournalError, match=f"{path} is in use by another run .pid {os.getpid()}"):
        Journal(path)
    run(first.close())
    second = Journal(path)
    run(second.close())


# ------------------------------------------------------------------ torn last line

def test_a_torn_last_line_does_not_swallow_the_next_record(make_flow, tmp_path):
    journal = tmp_path / "j.jsonl"
    calls: list[str] = []

    async def campaign():
        flow = await make_flow(journal=str(journal))

        @flow.function_task
        async def first():
            calls.append("first")
            return 1

        @flow.function_task
        async def second(x):
            calls.append("second")
            return x + 1

        result = await second(await first())
        await flow.shutdown()
        return result

    assert run(campaign()) == 2 and calls == ["first", "second"]
    data = journal.read_bytes()
    journal.write_bytes(data[:-15])  # killed while writing the second record
    assert run(campaign()) == 2 and calls[2:] == ["second"]
    assert run(campaign()) == 2 and calls[3:] == []  # the re-run's record was readable
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # first, torn, second again


# ------------------------------------------------------------------ what a record holds

class _Point(tuple):
    pass


VALUES = [None, True, 3, -0.0, 2.5, "text \ud800", [1, [2, "x"]], {"a": {"b": None}},
          2 ** 70, (1, 2), {1: "an int key"}, {"t": (1,)}, {3, 4}, b"bytes", float("nan"),
          float("inf"), 10 ** 5000, _Point((1, 2))]
AS_JSON = 9  # the first nine come back from JSON exactly; the rest need the envelope


def test_results_come_back_with_their_types(make_flow, tmp_path):
    journal = tmp_path / "j.jsonl"
    calls = []

    async def campaign():
        flow = await make_flow(journal=str(journal))

        @flow.function_task
        async def produce(i):
            calls.append(i)
            return VALUES[i]

        out = await asyncio.gather(*[produce(i) for i in range(len(VALUES))])
        await flow.shutdown()
        return out

    run(campaign())
    again = run(campaign())
    assert len(calls) == len(VALUES)  # the second run replayed every result
    for want, got in zip(VALUES, again, strict=True):
        assert type(got) is type(want)
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want, (want, got)
    records = {json.loads(line)["k"].split("#")[0]: json.loads(line)
               for line in journal.read_text().splitlines()}
    kinds = sorted(("j" in r, "p" in r and len(r["h"]) == 64) for r in records.values())
    assert kinds.count((True, False)) == AS_JSON
    assert kinds.count((False, True)) == len(VALUES) - AS_JSON
    key = journal_key_path()
    assert key.startswith(str(tmp_path / "xdg"))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("forgery", ["old unsigned", "no key", "wrong key"])
def test_a_planted_pickle_never_runs(make_flow, tmp_path, caplog, forgery):
    journal = tmp_path / "j.jsonl"
    marker = tmp_path / "pwned"
    calls = []

    async def campaign():
        flow = await make_flow(journal=str(journal))

        @flow.function_task
        async def compute():
            calls.append(1)
            return (1, 2)  # a tuple: recorded in a signed envelope

        result = await compute()
        await flow.shutdown()
        return result

    assert run(campaign()) == (1, 2)
    rec = json.loads(journal.read_text())
    blob = base64.b64encode(pickle.dumps(_Evil(marker))).decode()
    planted = {"old unsigned": {"k": rec["k"], "v": blob},
               "no key": {"k": rec["k"], "p": blob, "h": "0" * 64},
               "wrong key": {"k": rec["k"], "p": blob, "h": rec["h"]}}[forgery]
    journal.write_text(json.dumps(planted) + "\n")
    with caplog.at_level("WARNING", logger="asyncflow_hpc.journal"):
        assert run(campaign()) == (1, 2)
    assert not marker.exists()
    assert len(calls) == 2  # the task ran again instead
    assert any("not signed" in r.getMessage() or "does not verify" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------ failures of the file

def test_a_failed_write_is_a_journal_error(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    read_only = os.open(path, os.O_RDONLY)
    os.dup2(read_only, journal._fd)  # every write now fails, as on a full disk
    os.close(read_only)
    rec = types.SimpleNamespace(name="t", uid="task.000001", workflow_id=None)
    with pytest.raises(JournalError) as info:
        journal.record("k#0", rec, 1)
    err = info.value
    assert isinstance(err, OSError) and isinstance(err, AsyncFlowError)
    assert err.errno == errno.EBADF and err.path == str(path)
    assert str(err) == f"cannot write to journal {path}: Bad file descriptor"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is JournalError and back.errno == errno.EBADF and str(back) == str(err)
    journal.release()


def test_an_unusable_journal_path_is_one_line(tmp_path):
    (tmp_path / "camp.py").write_text("print('ran')\n")
    (tmp_path / "afile").write_text("")
    out = afhpc(tmp_path, "camp.py", "--journal", "afile/j.jsonl", "-q")
    assert out.returncode == 2 and "ran" not in out.stdout
    assert out.stderr.startswith(
        f"asyncflow-hpc: JournalError: cannot use journal {tmp_path}/afile/j.jsonl: ")
    assert len(out.stderr.splitlines()) == 1
