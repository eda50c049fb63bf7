"""Output of MPI tasks, per rank: every line a rank writes, whole and tagged ``RANK: ``.

A launcher forwards its ranks' output in pieces: OpenMPI 4.1's ``mpirun`` reads each rank's
pipe in chunks of about 1 KiB and writes them out as they come (``--tag-output`` tags chunks,
not lines), so two ranks' lines mix, even short lines each written with one ``write()``. So an
executable task with more than one rank does not write to the launcher at all: each rank sends
its stdout and stderr to files of its own (``rank.R.out``, ``rank.R.err``), and once the
launcher has ended the files are appended to the task's stdout and stderr in rank order, every
line prefixed with its rank and ``": "`` (``srun --label``'s format, without padding)::

    0: hello from 0
    0: done
    1: hello from 1

A last line without a newline gets one. The local backend merges with :func:`merge_rank_files`;
on RADICAL-Pilot a ``pre_exec`` command (:func:`rp_pre_exec`) redirects each rank and a
``post_launch`` command (:func:`rp_post_launch`, ``awk``) merges. Both give the same bytes.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Mapping

__all__ = ["RANK_DIR_PREFIX", "RANK_VARIABLES", "RP_OMPI_SESSION_DIR", "make_ompi_session_dir",
           "merge_rank_files", "rank_tag", "rank_wrapper", "rp_post_launch", "rp_pre_exec",
           "tag_lines"]

#: where a rank finds its number, first set wins: OpenMPI, MPICH/Intel (hydra), PMIx, srun
#: (``SLURM_PROCID`` last: a batch script's own environment has it, as 0)
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
#: ``tempfile.mkdtemp`` prefix of the local backend's per-task folder of rank files
RANK_DIR_PREFIX = "asyncflow-hpc-ranks-"

# $1: the folder; then the rank's argv. No rank number, or a folder this node does not see
# (ranks on other nodes, TMPDIR not shared): the rank writes to the launcher, as without us.
# ">>": two ranks that claim the same number append rather than truncate each other.
_WRAPPER = ('d=$1; shift; r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-$SLURM_PROCID}}}; '
            'case $r in ""|*[!0-9]*) ;; *) if [ -d "$d" ]; then '
            'exec >>"$d/rank.$r.out" 2>>"$d/rank.$r.err"; fi ;; esac; exec "$@"')
_RANK_FILE = re.compile(r"rank\.(\d+)\.(out|err)")


def rank_tag(rank: int) -> bytes:
    """What each line of rank ``rank`` starts with."""
    return f"{rank}: ".encode()


def rank_wrapper(directory: str) -> list[str]:
    """argv prefix, after the launcher's, that sends each rank's output to ``directory``."""
    return ["/bin/sh", "-c", _WRAPPER, "asyncflow-hpc-rank", directory]


def tag_lines(src_fd: int, dst_fd: int, rank: int, chunk: int = 1 << 20) -> int:
    """Append what ``src_fd`` holds to ``dst_fd``, each line tagged; returns bytes written.

    Streams in ``chunk``-sized reads: a line of any length is tagged once, at its start.
    """
    tag = rank_tag(rank)
    sep = b"\n" + tag
    written, at_start = 0, True
    while data := os.read(src_fd, chunk):
        body = data.replace(b"\n", sep)
        if at_start:
            body = tag + body
        at_start = data.endswith(b"\n")
        if at_start:
            body = body[:-len(tag)]  # the next line's tag waits for the next line
        written += _write_all(dst_fd, body)
    if not at_start:
        written += _write_all(dst_fd, b"\n")
    return written


def merge_rank_files(directory: str, stdout_fd: int, stderr_fd: int) -> None:
    """Append the rank files in ``directory`` to ``stdout_fd`` / ``stderr_fd``, rank by rank."""
    found: list[tuple[int, str, str]] = []
    for name in os.listdir(directory):
        m = _RANK_FILE.fullmatch(name)
        if m:
            found.append((int(m.group(1)), m.group(2), name))
    for rank, stream, name in sorted(found):
        dst = stdout_fd if stream == "out" else stderr_fd
        src = os.open(os.path.join(directory, name), os.O_RDONLY)
        try:
            os.lseek(dst, 0, os.SEEK_END)  # after what the launcher itself wrote
            tag_lines(src, dst, rank)
        finally:
            os.close(src)


def _write_all(fd: int, data: bytes) -> int:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])
    return done


# ----------------------------------------------------------------------------- RADICAL-Pilot
# RP's exec script (one per rank) exports RP_RANK before pre_exec; its launch script runs
# post_launch after the launcher ended, in the task sandbox. Both take these lines verbatim.

_RP_RANK_FILE = '"$RP_TASK_SANDBOX/$RP_TASK_ID.rank.'  # RP's output-file scan skips "<uid>.*"


#: OpenMPI 4 makes ``$TMPDIR/ompi.<host>.<uid>`` when mpirun starts; two mpiruns starting
#: at once can both try and one fails ("orte_session_dir failed ... File exists"). Making it
#: before the launcher removes the race.
RP_OMPI_SESSION_DIR = ('mkdir -p -m 700 "${TMPDIR:-/tmp}/ompi.$(hostname | cut -d. -f1).$(id -u)"'
                       ' 2>/dev/null || true')


def make_ompi_session_dir(env: Mapping[str, str]) -> None:
    """The local backend's counterpart of :data:`RP_OMPI_SESSION_DIR` (best effort)."""
    base = env.get("TMPDIR") or "/tmp"
    host = socket.gethostname().split(".")[0]
    try:
        os.makedirs(os.path.join(base, f"ompi.{host}.{os.getuid()}"), mode=0o700, exist_ok=True)
    except OSError:
        pass  # mpirun reports what is wrong with the folder itself


def rp_pre_exec() -> str:
    """``pre_exec`` line: the rest of the rank (the executable, later pre/post_exec) writes to
    files of its own."""
    return (f'exec >>{_RP_RANK_FILE}$RP_RANK.out" 2>>{_RP_RANK_FILE}$RP_RANK.err"')


def rp_post_launch(ranks: int, stdout: str | os.PathLike[str] | None = None,
                   stderr: str | os.PathLike[str] | None = None) -> str:
    """``post_launch`` line: append the rank files, tagged, to the task's stdout and stderr
    files (RP's ``stdout``/``stderr``: relative to the sandbox; default ``<uid>.out/err``),
    then remove them. A rank that wrote nothing has no file; nothing here fails the task."""
    # one awk per stream, reading the ranks' files in rank order (getline: -1 when absent)
    prog = ("BEGIN { f = ENVIRON[\"RP_TASK_SANDBOX\"] \"/\" ENVIRON[\"RP_TASK_ID\"] \".rank.\"; "
            "for (i = 0; i < n; i++) { p = f i \".\" s; "
            "while ((getline l < p) > 0) print i \": \" l; close(p) } }")
    merge = [f"LC_ALL=C awk -v n={int(ranks)} -v s={stream} '{prog}' >>{_rp_target(path, stream)}"
             for stream, path in (("out", stdout), ("err", stderr))]
    return "; ".join([*merge, f'rm -f {_RP_RANK_FILE}"*'])


def _rp_target(path: str | os.PathLike[str] | None, suffix: str) -> str:
    if not path:
        return f'"$RP_TASK_SANDBOX/$RP_TASK_ID.{suffix}"'
    text = os.fspath(path)
    return shlex.quote(text) if text.startswith("/") else '"$RP_TASK_SANDBOX"/' + shlex.quote(text)
