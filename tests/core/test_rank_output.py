"""MPI tasks' output per rank: every line whole and tagged ``RANK: `` (local backend, real mpirun;
RADICAL-Pilot's pre_exec/post_launch lines run as RP's scripts run them)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import run

from asyncflow_hpc import TaskExecutionError, TaskKind, TaskSpec
from asyncflow_hpc.backends.radical import translate as tr
from asyncflow_hpc.hpc.launchers import mpi_launch_prefix
from asyncflow_hpc.hpc.rank_output import (
    RANK_DIR_PREFIX,
    RANK_VARIABLES,
    merge_rank_files,
    rank_wrapper,
    rp_post_launch,
    rp_pre_exec,
    tag_lines,
)

needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun on PATH")

#: each rank: N lines of its own (every 5th one 20 KB long, written with one write() each, as
#: fast as it can), one line on stderr, and a last line without a newline
RANK_PROGRAM = r"""
import os, sys
r, n = os.environ["OMPI_COMM_WORLD_RANK"], int(sys.argv[1])
for i in range(n):
    os.write(1, f"r{r} line {i} {(r * 20000) if i % 5 == 0 else 'short'}\n".encode())
os.write(2, f"r{r} complains\n".encode())
os.write(1, f"r{r} end".encode())
sys.exit(int(sys.argv[2]) if r == "1" else 0)
"""


def expected_stdout(n: int, ranks: int = 2) -> list[str]:
    return sorted([f"{r}: r{r} line {i} {(str(r) * 20000) if i % 5 == 0 else 'short'}"
                   for r in range(ranks) for i in range(n)]
                  + [f"{r}: r{r} end" for r in range(ranks)])


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n"), text[-200:]  # the last line got its newline
    return text[:-1].split("\n")


# ----------------------------------------------------------------------------- tagging


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_tag_lines_streams_any_chunking(tmp_path, chunk):
    data = b"a\n\nlong " + b"x" * 5000 + b"\nno newline at the end"
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    with open(src, "rb") as s, open(dst, "wb") as d:
        n = tag_lines(s.fileno(), d.fileno(), 12, chunk=chunk)
    out = dst.read_bytes()
    assert out == (b"12: a\n12: \n12: long " + b"x" * 5000 + b"\n12: no newline at the end\n")
    assert n == len(out)


def test_tag_lines_of_nothing_is_nothing(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with open(tmp_path / "empty", "rb") as s, open(tmp_path / "dst", "wb") as d:
        assert tag_lines(s.fileno(), d.fileno(), 0) == 0
    assert (tmp_path / "dst").read_bytes() == b""


def test_merge_goes_rank_by_rank_after_the_launchers_own_output(tmp_path):
    for rank, out, err in [(10, b"ten\n", b""), (2, b"two\n", b"oops\n"), (0, b"zero", b"")]:
        (tmp_path / f"rank.{rank}.out").write_bytes(out)
        (tmp_path / f"rank.{rank}.err").write_bytes(err)
    (tmp_path / "unrelated.out").write_bytes(b"not a rank\n")
    with open(tmp_path / "o", "wb") as o, open(tmp_path / "e", "wb") as e:
        o.write(b"launcher\n")
        o.flush()
        merge_rank_files(str(tmp_path), o.fileno(), e.fileno())
    assert (tmp_path / "o").read_bytes() == b"launcher\n0: zero\n2: two\n10: ten\n"
    assert (tmp_path / "e").read_bytes() == b"2: oops\n"


def test_wrapper_finds_the_rank_or_leaves_the_output_to_the_launcher(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    cmd = ["sh", "-c", "echo out; echo err >&2; exit 4"]
    # no rank number, not a number, or a folder this node does not see: output as before
    for extra, folder in (({}, tmp_path), ({"PMI_RANK": "x"}, tmp_path),
                          ({"PMI_RANK": "1"}, tmp_path / "absent")):
        proc = subprocess.run(rank_wrapper(str(folder)) + cmd, env={**env, **extra},
                              capture_output=True)
        assert (proc.returncode, proc.stdout, proc.stderr) == (4, b"out\n", b"err\n")
    assert os.listdir(tmp_path) == []
    # the launcher's variable wins over a batch script's SLURM_PROCID=0
    proc = subprocess.run(rank_wrapper(str(tmp_path)) + cmd, capture_output=True,
                          env={**env, "PMI_RANK": "1", "SLURM_PROCID": "0"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, b"", b"")
    assert (tmp_path / "rank.1.out").read_bytes() == b"out\n"
    assert (tmp_path / "rank.1.err").read_bytes() == b"err\n"


# ----------------------------------------------------------------------------- local backend


@needs_mpirun
@pytest.mark.timeout(120)
def test_two_ranks_many_and_long_lines_come_out_whole_and_tagged(make_flow, tmp_path,
                                                               monkeypatch):
    temp = tmp_path / "temp"  # where the backend keeps the ranks' files while they run
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    async def main():
        flow = await make_flow()

        @flow.executable_task
        def ranks(n, task_description={"ranks": 2}):  # noqa: B006
            return [sys.executable, "-c", RANK_PROGRAM, str(n), "0"]

        @flow.executable_task
        def solo():
            return [sys.executable, "-c", "print('one rank: untouched')"]

        out = await ranks(3000)
        got = lines_of(out)
        assert sorted(got) == expected_stdout(3000)
        # each rank's own lines keep their order
        for r in (0, 1):
            mine = [x.split(" ")[3] for x in got if x.startswith(f"{r}: r{r} line")]
            assert mine == [str(i) for i in range(3000)]
        assert await solo() == "one rank: untouched\n"
        await flow.shutdown()

    run(main(), 100)
    assert not [d for d in os.listdir(temp) if d.startswith(RANK_DIR_PREFIX)]  # removed


@needs_mpirun
@pytest.mark.timeout(120)
def test_stderr_is_tagged_in_the_error_and_in_captured_files(make_flow, tmp_path):
    async def main():
        flow = await make_flow()

        @flow.executable_task
        def failing(task_description={"ranks": 2}):  # noqa: B006
            return [sys.executable, "-c", RANK_PROGRAM, "50", "3"]

        @flow.executable_task(capture_stdio=True)
        def captured(task_description={"ranks": 2}):  # noqa: B006
            return [sys.executable, "-c", RANK_PROGRAM, "50", "0"]

        @flow.executable_task
        def named(task_description={"ranks": 2, "stderr": "err.txt",  # noqa: B006
                                    "cwd": str(tmp_path)}):
            return [sys.executable, "-c", RANK_PROGRAM, "10", "0"]

        with pytest.raises(TaskExecutionError) as info:
            await failing()
        assert info.value.exit_code != 0
        stderr = info.value.stderr.split("\n")
        assert "0: r0 complains" in stderr and "1: r1 complains" in stderr, info.value.stderr

        path = await captured()
        with open(path) as fh:
            assert sorted(lines_of(fh.read())) == expected_stdout(50)
        with open(path[: -len(".stdout")] + ".stderr") as fh:
            assert sorted(lines_of(fh.read())) == ["0: r0 complains", "1: r1 complains"]

        assert sorted(lines_of(await named())) == expected_stdout(10)
        assert sorted(lines_of((tmp_path / "err.txt").read_text())) == [
            "0: r0 complains", "1: r1 complains"]
        await flow.shutdown()

    run(main(), 100)


@needs_mpirun
@pytest.mark.timeout(120)
def test_shell_commands_are_tagged_and_pre_exec_output_comes_first(make_flow):
    async def main():
        flow = await make_flow()

        # on this backend pre_exec runs once, before the launcher: its lines are not a rank's
        @flow.executable_task(task_description={"shell": True, "ranks": 2,
                                                "pre_exec": ["echo prepared"]})
        def sh():
            return 'echo "rank $OMPI_COMM_WORLD_RANK"; printf "a  b\\n" >&2'

        out = await sh()
        assert out.startswith("prepared\n"), out
        assert sorted(lines_of(out)) == ["0: rank 0", "1: rank 1", "prepared"]
        await flow.shutdown()

    run(main(), 100)


# ----------------------------------------------------------------------------- RADICAL-Pilot


def test_rp_translation_adds_the_rank_lines_first():
    spec = TaskSpec("t.1", "t", TaskKind.EXECUTABLE, command=["/bin/true"],
                    description={"ranks": 3, "pre_exec": ["module load x"],
                                 "post_launch": "echo after", "stdout": "my.out"})
    fields = tr.task_description(spec)
    assert fields["pre_exec"] == [rp_pre_exec(), "module load x"]
    assert fields["post_launch"] == [rp_post_launch(3, "my.out", None), "echo after"]
    assert '"$RP_TASK_SANDBOX"/my.out' in fields["post_launch"][0]
    captured = TaskSpec("t.2", "t", TaskKind.EXECUTABLE, command=["/bin/true"],
                        description={"ranks": 2}, stdio=("/w/t.2.stdout", "/w/t.2.stderr"))
    assert tr.task_description(captured)["post_launch"] == [
        rp_post_launch(2, "/w/t.2.stdout", "/w/t.2.stderr")]
    for one in ({}, {"ranks": 1}):  # single-rank tasks (and functions) are untouched
        spec = TaskSpec("t.3", "t", TaskKind.EXECUTABLE, command=["/bin/true"], description=one)
        assert "pre_exec" not in tr.task_description(spec)
    func = TaskSpec("t.4", "t", TaskKind.FUNCTION, function=print, description={"ranks": 2})
    assert "post_launch" not in tr.task_description(func)


@needs_mpirun
@pytest.mark.timeout(120)
def test_rp_lines_give_the_same_bytes_as_the_local_backend(tmp_path):
    """RP's scripts, reduced to what touches output: launch.sh runs the launcher with stdout and
    stderr in <uid>.out/err and then post_launch; each rank's exec.sh exports RP_RANK and runs
    pre_exec before the executable. The result must equal the local backend's merge."""
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    exec_sh = sandbox / "t.exec.sh"
    exec_sh.write_text("#!/bin/sh\nexport RP_RANK=$OMPI_COMM_WORLD_RANK\n"
                       f"{rp_pre_exec()} || exit 1\n"
                       f'exec {sys.executable} -c "$RANK_PROGRAM" 400 0\n')
    exec_sh.chmod(0o755)
    launch = shlex.join(mpi_launch_prefix(2, "mpirun", oversubscribe=True) + [str(exec_sh)])
    launch_sh = (f'cd "$RP_TASK_SANDBOX"\n( {launch} ) 1> "$RP_TASK_SANDBOX/$RP_TASK_ID.out" '
                 f'2> "$RP_TASK_SANDBOX/$RP_TASK_ID.err"\n{rp_post_launch(2)} || exit 1\n')
    env = dict(os.environ, RP_TASK_SANDBOX=str(sandbox), RP_TASK_ID="t",
               RANK_PROGRAM=RANK_PROGRAM)
    subprocess.run(["/bin/sh", "-c", launch_sh], env=env, check=True, timeout=100)
    assert sorted(os.listdir(sandbox)) == ["t.err", "t.exec.sh", "t.out"]  # rank files gone
    rp_out, rp_err = (sandbox / "t.out").read_bytes(), (sandbox / "t.err").read_bytes()
    assert sorted(lines_of(rp_out.decode())) == expected_stdout(400)

    # the same ranks through the local backend's wrapper and merge
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    argv = (mpi_launch_prefix(2, "mpirun", oversubscribe=True) + rank_wrapper(str(ranks))
            + [sys.executable, "-c", RANK_PROGRAM, "400", "0"])
    subprocess.run(argv, check=True, timeout=100, stdout=subprocess.DEVNULL)
    with open(tmp_path / "o", "wb") as o, open(tmp_path / "e", "wb") as e:
        merge_rank_files(str(ranks), o.fileno(), e.fileno())
    assert (tmp_path / "o").read_bytes() == rp_out
    assert (tmp_path / "e").read_bytes() == rp_err == b"0: r0 complains\n1: r1 complains\n"
