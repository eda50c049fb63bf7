"""Resume never loses work silently (issue 15 item 1).

A run that fails before any task finished leaves the journal as it was; a new run moves an
earlier journal aside only when it records its first result, and says where to; ``--resume``
without a journal refuses; a task whose function changed runs again on resume (its untouched
siblings are reused), and the run says how many of each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import asyncflow_hpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))

CAMPAIGN = textwrap.dedent('''
    import asyncio, os, sys
    from asyncflow_hpc import WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create()

        @flow.function_task
        def square(i):
            with open(os.environ["RAN_LOG"], "a") as fh:
                fh.write(f"square {i}\\n")
            return i * i  # SQUARE

        @flow.function_task
        def cube(i):
            with open(os.environ["RAN_LOG"], "a") as fh:
                fh.write(f"cube {i}\\n")
            return i ** 3

        @flow.executable_task
        def echo(i):
            return f"echo E{i}"  # ECHO

        out = await asyncio.gather(*[square(i) for i in range(4)], *[cube(i) for i in range(3)],
                                   *[echo(i) for i in range(2)])
        print("RESULT", out[:7], [o.strip() for o in out[7:]])
        await flow.shutdown()

    asyncio.run(main())
''')


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    for var in [v for v in os.environ if v.startswith("ASYNCFLOW_HPC_")]:
        monkeypatch.delenv(var)
    script = tmp_path / "campaign.py"
    script.write_text(CAMPAIGN)
    return script


def afhpc(tmp_path, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    e.update(PYTHONPATH=REPO, XDG_CONFIG_HOME=str(tmp_path / "xdg"),
             RAN_LOG=str(tmp_path / "ran.log"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", "run", "-q", *map(str, args)],
                          cwd=tmp_path, env=e, capture_output=True, text=True, timeout=120)


def ran(tmp_path) -> list[str]:
    path = tmp_path / "ran.log"
    lines = sorted(path.read_text().splitlines()) if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def journals(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / ".asyncflow-hpc").glob("*.journal.jsonl*")
                  if not p.name.endswith(".lock"))


def test_resume_without_a_journal_refuses_and_resume_if_any_starts(tmp_path, campaign):
    res = afhpc(tmp_path, "--resume", campaign)
    assert res.returncode == 2
    assert "--resume: no journal to resume at" in res.stderr and "--resume-if-any" in res.stderr
    assert ran(tmp_path) == []  # nothing ran
    res = afhpc(tmp_path, "--resume-if-any", campaign)
    assert res.returncode == 0, res.stderr
    assert len(ran(tmp_path)) == 7


def test_a_run_that_fails_before_any_task_leaves_the_journal_alone(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    ran(tmp_path)
    [name] = journals(tmp_path)
    before = (tmp_path / ".asyncflow-hpc" / name).read_bytes()
    # a typo in the backend's name (from the environment): the engine is never created
    res = afhpc(tmp_path, campaign, env={"ASYNCFLOW_HPC_BACKEND": "locl"})
    assert res.returncode != 0 and "locl" in res.stderr, res.stderr
    assert journals(tmp_path) == [name]
    assert (tmp_path / ".asyncflow-hpc" / name).read_bytes() == before
    # ... so the earlier results are still there to resume from
    res = afhpc(tmp_path, "--resume", campaign)
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == []
    assert "RESULT [0, 1, 4, 9, 0, 1, 8] ['E0', 'E1']" in res.stdout


def test_a_new_run_moves_the_journal_aside_and_says_where(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    [name] = journals(tmp_path)
    old = (tmp_path / ".asyncflow-hpc" / name).read_text()
    res = afhpc(tmp_path, campaign)
    assert res.returncode == 0, res.stderr
    names = journals(tmp_path)
    assert len(names) == 2 and name in names
    [backup] = [n for n in names if n != name]
    assert str(tmp_path / ".asyncflow-hpc" / backup) in res.stderr  # said where
    assert (tmp_path / ".asyncflow-hpc" / backup).read_text() == old


def test_changed_code_reruns_only_its_tasks_and_says_how_many(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    assert len(ran(tmp_path)) == 7
    # fix a "bug" in square (and the command of echo); cube is untouched
    campaign.write_text(CAMPAIGN.replace("return i * i  # SQUARE", "return i * i + 1000")
                        .replace('return f"echo E{i}"  # ECHO', 'return f"echo F{i}"'))
    res = afhpc(tmp_path, "--resume", campaign)
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == [f"square {i}" for i in range(4)]
    assert "RESULT [1000, 1001, 1004, 1009, 0, 1, 8] ['F0', 'F1']" in res.stdout
    assert "resuming from" in res.stderr and "(9 recorded results)" in res.stderr
    # cube's 3 reused; square's 4 ran again because their code changed (echo's command
    # changed too: a different call, not a code change)
    assert "3 result(s) reused, 4 ran again because their code changed" in res.stderr, \
        res.stderr


def test_moved_lines_and_comments_do_not_count_as_code_changes(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    ran(tmp_path)
    campaign.write_text("# a comment on top\n\n\n" + CAMPAIGN.replace(
        "return i * i  # SQUARE", "return i * i  # a different comment"))
    res = afhpc(tmp_path, "--resume", campaign)
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == []
    assert "9 result(s) reused" in res.stderr


def test_ignore_code_changes_matches_by_name_and_arguments(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    ran(tmp_path)
    campaign.write_text(CAMPAIGN.replace("return i * i  # SQUARE", "return i * i + 1000"))
    res = afhpc(tmp_path, "--resume", "--ignore-code-changes", campaign)
    assert res.returncode == 0, res.stderr
    assert ran(tmp_path) == []
    assert "RESULT [0, 1, 4, 9, 0, 1, 8]" in res.stdout


def test_keys_carry_a_code_digest(tmp_path, campaign):
    assert afhpc(tmp_path, campaign).returncode == 0
    [name] = journals(tmp_path)
    keys = [json.loads(line)["k"] for line in
            (tmp_path / ".asyncflow-hpc" / name).read_text().splitlines()]
    assert len(keys) == 9 and all("@" in k for k in keys)
