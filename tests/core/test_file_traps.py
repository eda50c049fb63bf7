"""No file traps on shared machines: links, other users' files and folders are refused.

The traps are set by another user: these tests run as root and make ``nobody`` own the
planted links and folders (``os.lchown``/``os.chown``), then check that asyncflow-hpc —
running as root, the worst case — neither follows nor writes through them, and that the
victim file is untouched. Folders asyncflow-hpc creates are 0700 even under umask 000.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner
from conftest import run

import asyncflow_hpc
from asyncflow_hpc import LocalExecutionBackend, UnsafePathError, WorkflowEngine
from asyncflow_hpc.cli.report import report_command
from asyncflow_hpc.journal import Journal
from asyncflow_hpc.report import read_log, write_report
from asyncflow_hpc.safe_files import check_dir, private_dir, safe_open, write_file
from asyncflow_hpc.telemetry.writer import open_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="another user sets the traps: needs root")

# a small, valid telemetry log
EVENTS = "".join(json.dumps(d) + "\n" for d in [
    {"section": "event", "event_type": "SessionStarted", "session_id": "s", "event_time": 1.0},
    {"section": "event", "event_type": "TaskCreated", "session_id": "s", "task_id": "t1",
     "event_time": 1.0, "attributes": {"task_name": "a"}},
    {"section": "event", "event_type": "TaskStarted", "session_id": "s", "task_id": "t1",
     "event_time": 1.1},
    {"section": "event", "event_type": "TaskCompleted", "session_id": "s", "task_id": "t1",
     "event_time": 1.5, "duration_seconds": 0.4},
    {"section": "event", "event_type": "SessionEnded", "session_id": "s", "event_time": 2.0},
])


@pytest.fixture
def trap(tmp_path, monkeypatch):
    """A precious file of root, and helpers that plant links and folders owned by nobody."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    pw = pwd.getpwnam("nobody")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    planted: list = []

    def link(at, target=victim):
        os.symlink(target, at)
        os.lchown(at, pw.pw_uid, pw.pw_gid)
        planted.append(at)
        return at

    def folder(at, mode=0o755, owner=pw.pw_uid):
        at.mkdir()
        os.chown(at, owner, pw.pw_gid)
        at.chmod(mode)
        planted.append(at)
        return at

    def intact():
        st = victim.lstat()
        return (victim.read_text() == "precious\n" and stat.S_IMODE(st.st_mode) == 0o644
                and st.st_uid == 0)

    yield types.SimpleNamespace(victim=victim, link=link, folder=folder, intact=intact,
                                uid=pw.pw_uid)
    for path in reversed(planted):  # leave nothing of nobody's behind
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def cli(tmp_path, *args, umask=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    env.update(PYTHONPATH=REPO, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", *map(str, args)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=None if umask is None else lambda: os.umask(umask))


def one_line(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


# ------------------------------------------------------------------ journal

@as_root
def test_symlinked_journal_is_refused(tmp_path, trap):
    journal = trap.link(tmp_path / "j.jsonl")
    with pytest.raises(UnsafePathError, match=f"refusing to open {journal}: it is a symbolic"):
        Journal(journal)
    lock = trap.link(tmp_path / "k.jsonl.lock")  # the lock file beside it: the same
    with pytest.raises(UnsafePathError, match="symbolic link"):
        Journal(tmp_path / "k.jsonl")
    (tmp_path / "camp.py").write_text("print('ran')\n")
    for args in ([], ["--resume"]):
        out = cli(tmp_path, "run", "camp.py", "--journal", journal, "-q", *args)
        one_line(out, f"refusing to open {journal}: it is a symbolic link")
        assert "ran" not in out.stdout
    assert trap.intact() and journal.is_symlink() and lock.is_symlink()


@as_root
def test_journal_in_another_users_folder_or_file_is_refused(tmp_path, trap):
    theirs = trap.folder(tmp_path / "theirs")
    with pytest.raises(UnsafePathError, match="belongs to user 'nobody'"):
        Journal(theirs / "j.jsonl")
    assert not list(theirs.iterdir())
    # a journal file planted by nobody in a folder of ours that their group may write to
    shared = tmp_path / "group"
    shared.mkdir(mode=0o770)
    planted = shared / "j.jsonl"
    planted.write_text('{"k": "x#0", "j": 1}\n')
    os.chown(planted, trap.uid, -1)
    with pytest.raises(UnsafePathError, match=f"refusing to open {planted}: it belongs to user"):
        Journal(planted)
    os.chown(planted, 0, -1)  # once it is ours, it is used
    run(Journal(planted).close())


# ------------------------------------------------------------------ telemetry

@as_root
def test_symlinked_telemetry_file_is_refused(tmp_path, trap):
    events = trap.link(tmp_path / "events.jsonl")
    with pytest.raises(UnsafePathError, match=f"refusing to open {events}: it is a symbolic"):
        open_log(str(events))

    async def main():
        backend = await LocalExecutionBackend()
        try:
            with pytest.raises(UnsafePathError):
                await WorkflowEngine.create(backend=backend, telemetry=str(events),
                                            install_signal_handlers=False)
        finally:
            await backend.shutdown()

    run(main())
    (tmp_path / "camp.py").write_text(
        "import asyncio\nfrom asyncflow_hpc import WorkflowEngine\n"
        "async def main():\n    flow = await WorkflowEngine.create()\n"
        "    await flow.shutdown()\nasyncio.run(main())\n")
    out = cli(tmp_path, "run", "camp.py", "--telemetry", events, "-q")
    one_line(out, f"refusing to open {events}: it is a symbolic link")
    assert trap.intact()


# ------------------------------------------------------------------ folders others may write

@as_root
def test_world_writable_folders_are_refused(tmp_path, trap):
    open_to_all = trap.folder(tmp_path / "open", 0o777)
    mine_but_open = trap.folder(tmp_path / "open-mine", 0o777, owner=0)
    for folder in (open_to_all, mine_but_open):
        with pytest.raises(UnsafePathError, match=f"in {folder}: .*anyone may write"):
            Journal(folder / "j.jsonl")
        with pytest.raises(UnsafePathError, match="anyone may write"):
            open_log(str(folder / "events.jsonl"))
        with pytest.raises(UnsafePathError, match="anyone may write"):
            write_report(read_log(_events(tmp_path)), folder)
        with pytest.raises(UnsafePathError, match="anyone may change"):
            private_dir(folder / "sub")  # a folder below one anyone may rename
        assert not list(folder.iterdir())
    # a /tmp-like folder (sticky): a folder of ours inside is fine, one of nobody's is not
    sticky = trap.folder(tmp_path / "sticky", 0o1777, owner=0)
    theirs = trap.folder(sticky / "theirs", 0o777)
    with pytest.raises(UnsafePathError, match=f"{theirs} belongs to user 'nobody' .* in the shared"):
        private_dir(theirs / "mine")
    run(Journal(os.path.join(private_dir(sticky / "mine"), "j.jsonl")).close())
    (tmp_path / "camp.py").write_text("print('ran')\n")
    out = cli(tmp_path, "run", "camp.py", "--journal", open_to_all / "j.jsonl", "-q")
    one_line(out, f"refusing to write in {open_to_all}: anyone may write to this folder")


# ------------------------------------------------------------------ report outputs

def _events(tmp_path):
    path = tmp_path / "events.jsonl"
    if not path.exists():
        path.write_text(EVENTS)
    return path


@as_root
def test_report_output_symlink_is_refused(tmp_path, trap):
    out_dir = tmp_path / "out"
    out_dir.mkdir(mode=0o700)
    summary = trap.link(out_dir / "summary.json")
    with pytest.raises(UnsafePathError, match=f"refusing to write {summary}: it is a symbolic"):
        write_report(read_log(_events(tmp_path)), out_dir)
    result = CliRunner().invoke(report_command, [str(_events(tmp_path)), "--out", str(out_dir)])
    assert result.exit_code == 2
    assert f"refusing to write {summary}: it is a symbolic link" in result.output
    assert trap.intact() and summary.is_symlink()
    theirs = trap.folder(tmp_path / "theirs")
    with pytest.raises(UnsafePathError, match="belongs to user 'nobody'"):
        write_report(read_log(_events(tmp_path)), theirs)
    assert not list(theirs.iterdir())


# ------------------------------------------------------------------ batch scripts

@as_root
def test_submit_script_symlink_is_refused(tmp_path, trap, monkeypatch):
    import asyncflow_hpc.cli.submit as submit

    submitted = []
    monkeypatch.setattr(submit, "submit_script", lambda *a: submitted.append(a) or "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "camp.py").write_text("print('hi')\n")
    (tmp_path / "sites.toml").write_text(
        '[sites.mine]\nscheduler = "slurm"\npartition = "debug"\naccount = "acc"\n')
    camp = tmp_path / "camp"
    camp.mkdir(mode=0o700)
    script = trap.link(camp / "afhpc-camp.slurm.sh")
    args = ["camp.py", "--site", "mine", "--site-file", "sites.toml", "--campaign-dir"]
    result = CliRunner().invoke(submit.submit_command, [*args, str(camp)])
    assert result.exit_code != 0
    assert f"refusing to write {script}: it is a symbolic link" in result.output
    theirs = trap.folder(tmp_path / "theirs")
    result = CliRunner().invoke(submit.submit_command, [*args, str(theirs)])
    assert result.exit_code != 0 and "belongs to user 'nobody'" in result.output
    assert not submitted and trap.intact() and not list(theirs.iterdir())
    script.unlink()
    result = CliRunner().invoke(submit.submit_command, [*args, str(camp)])
    assert result.exit_code == 0, result.output
    assert len(submitted) == 1 and stat.S_IMODE(script.stat().st_mode) == 0o700


# ------------------------------------------------------------------ modes

def test_folders_are_0700_and_files_0600_under_umask_000(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    old = os.umask(0)
    try:
        journal = Journal(tmp_path / "j1" / "j2" / "j.jsonl")
        run(journal.close())
        os.close(open_log(str(tmp_path / "t1" / "t2" / "events.jsonl")))
        files = write_report(read_log(_events(tmp_path)), tmp_path / "r1" / "r2")
        written = write_file(tmp_path / "w1" / "w2" / "f", b"x", make_dirs=True)
        os.close(safe_open(tmp_path / "s1" / "s2" / "f", os.O_WRONLY | os.O_CREAT,
                           make_dirs=True))
    finally:
        os.umask(old)
    for top in ("j1", "t1", "r1", "w1", "s1"):
        for folder in (tmp_path / top, *[p for p in (tmp_path / top).rglob("*") if p.is_dir()]):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in (journal.path, str(journal.path) + ".lock", tmp_path / "t1/t2/events.jsonl",
                 written, tmp_path / "s1/s2/f", *files.values()):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # and the run command's default journal folder, in a process with umask 000
    (tmp_path / "camp.py").write_text("print('ran')\n")
    out = cli(tmp_path, "run", "camp.py", "-q", umask=0)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((tmp_path / ".asyncflow-hpc").stat().st_mode) == 0o700
    # an existing folder of the user keeps its mode
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    assert private_dir(mine) == str(mine) and stat.S_IMODE(mine.stat().st_mode) == 0o755
    check_dir(mine)


# ------------------------------------------------------------------ bad input files

@pytest.mark.parametrize("content, problem", [
    ('[1, 2, 3]\n', "line 1 is not a JSON object"),
    ('{"k": "abc#0", "j": 1}\n', "line 1: no section"),
    ('{"section": "event", "event_type": "TaskCompleted", "task_id": "t", '
     '"event_time": "noon"}\n', 'line 1: event_time must be a number, got "noon"'),
    ('{"section": "event", "event_type": "TaskCreated", "task_id": ["t"]}\n',
     "task_id must be a string"),
    ('{"section": "event", "event_type": "TaskCreated", "task_id": "t", "attributes": [1]}\n',
     "attributes must be an object"),
    ('{"section": "event", "event_type": "TaskCreated", "task_id": "t", '
     '"attributes": {"task_name": 5}}\n', "attributes.task_name must be a string"),
    ("[" * 100_000 + "\n", "line 1 is not JSON"),
])
def test_report_on_a_file_of_the_wrong_shape_exits_2(tmp_path, content, problem):
    path = tmp_path / "wrong.json"
    path.write_text(content)
    result = CliRunner().invoke(report_command, [str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path} is not an asyncflow-hpc telemetry log" in result.output
    assert problem in result.output and "Traceback" not in result.output
    # a wrong record among good ones is skipped and counted
    path.write_text(EVENTS + content)
    log = read_log(path)
    assert log.bad_lines == 1 and len(log.tasks) == 1
