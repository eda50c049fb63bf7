"""RP's leftovers: finding, renicing and ending a session's processes, removing its folders.

RP daemonises its components and PSI/J detaches the pilot, so they are NOT children of this
process; they are found by what they inherited (folders inside the backend's work dir, the
session id), never by a program name.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["end_processes", "end_session", "identities", "kill_leftovers", "leftover_processes",
           "lower_priority", "quiet", "remove_id_counters"]

log = logging.getLogger("asyncflow_hpc.backends.radical")


def quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None if it raised (logged at debug level)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        log.debug("%s failed: %s", getattr(fn, "__name__", fn), exc)
        return None


def end_processes(procs: list[Any], grace: float = 3.0) -> None:
    """SIGTERM these psutil processes, then SIGKILL whatever is left after ``grace`` s."""
    import psutil

    for p in procs:
        quiet(p.terminate)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        quiet(p.kill)


def leftover_processes(session_uid: str, work_dir: str | os.PathLike | None = None) -> list[Any]:
    """Live processes that belong to RP session ``session_uid`` (for checks and clean-up).

    Every process started while the backend started inherits its environment, whose RP
    folders point into the backend's own ``work_dir``; that, the session id in the command
    line, or a working directory inside the session's sandbox (whose path holds the session
    id) identifies them. This process and its ancestors never count (the campaign's own
    command line may name the work dir), nor does a process that merely names the work dir.
    """
    import psutil

    marks = [session_uid] + ([str(work_dir)] if work_dir else [])
    keys = ("TMPDIR", "RADICAL_PILOT_BASE", "RADICAL_CONFIG_USER_DIR", "RADICAL_BASE",
            "RP_SESSION_ID", "RP_PILOT_SANDBOX")
    me = os.getpid()
    try:
        spared = {me, *(p.pid for p in psutil.Process(me).parents())}
    except psutil.Error:
        spared = {me}
    uid = os.getuid()
    out = []
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        try:
            if proc.pid in spared or proc.info["uids"].real != uid \
                    or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.cmdline())
            if session_uid not in text:
                env = proc.environ()
                text = " ".join(env.get(k, "") for k in keys)
                if not any(m in text for m in marks):
                    # the agent's components are forked (no exec): their recorded environment
                    # is the agent's, their title is rp.<component>; they work in the sandbox
                    try:
                        text = proc.cwd()
                    except (psutil.Error, OSError):
                        continue
                    if session_uid not in text:
                        continue
            out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


def lower_priority(session_uid: str, work_dir: Path, own_pids: Iterable[int], nice: int) -> None:
    """Lower the CPU priority (``nice``) of this session's RP processes.

    On a small machine RP's components, a local pilot's agent and its tasks saturate the
    cores; at lower priority the event loop is served first. Only separate processes
    are reniced, never threads of this process: a low-priority thread that holds the
    GIL while the scheduler leaves it waiting would stall the loop instead (priority
    inversion). Raising a nice value needs no privileges.
    """
    if nice <= 0 or not sys.platform.startswith("linux") or not session_uid:
        return
    import psutil

    procs = leftover_processes(session_uid, work_dir)
    for pid in own_pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    for proc in procs:
        try:
            tids = [t.id for t in proc.threads()]  # Linux: nice is per thread
        except (psutil.Error, OSError):
            continue
        for tid in tids:
            try:
                prio = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, prio + nice))
            except OSError as exc:
                log.debug("cannot renice %s/%s: %s", proc.pid, tid, exc)


def kill_leftovers(session_uid: str, work_dir: Path, own_pids: Iterable[int]) -> None:
    """Last resort: processes of THIS session that outlived close (found by session id),
    and the children RP forked from this process (``own_pids``) that are still alive."""
    import psutil

    procs = leftover_processes(session_uid, work_dir)
    for pid in own_pids:
        try:
            proc = psutil.Process(pid)
            if proc.ppid() == os.getpid() and proc.status() != psutil.STATUS_ZOMBIE \
                    and all(p.pid != pid for p in procs):
                procs.append(proc)
        except psutil.Error:
            pass
    if not procs:
        return
    log.warning("RADICAL-Pilot left %d process(es) of session %s; terminating pids %s",
                len(procs), session_uid, [p.pid for p in procs])
    end_processes(procs)


def remove_id_counters(session_uid: str) -> None:
    """RP keeps per-session id counters under ~/.radical/utils/<sid>: remove ours."""
    try:
        from radical.utils import ids

        base = Path(ids._BASE)
    except Exception:
        return
    folder = base / session_uid
    if folder.is_dir() and folder.name.startswith("rp.session."):
        shutil.rmtree(folder, ignore_errors=True)
    # an agent in a batch job gets no TMPDIR from us and makes $TMPDIR/<sid> or /tmp/<sid>
    # on its node; where that node's /tmp is ours too (local and test clusters), remove it
    for tmp in {os.environ.get("TMPDIR") or "/tmp", "/tmp"}:
        folder = Path(tmp) / session_uid
        if folder.is_dir() and folder.name.startswith("rp.session."):
            shutil.rmtree(folder, ignore_errors=True)


def identities(pids: Iterable[int]) -> list[tuple[int, float]]:
    """(pid, start time) of processes RP forked from this one, to find them again safely
    from another process (a pid alone may have been reused by then)."""
    import psutil

    out = []
    for pid in pids:
        try:
            out.append((pid, psutil.Process(pid).create_time()))
        except psutil.Error:
            pass
    return out


def end_session(session_uid: str, work_dir: Path, forked: Iterable[tuple[int, float]]) -> None:
    """The client process died before closing RP: end its session's processes (by session
    id) and the processes RP forked in it (by pid and start time, see :func:`identities`)."""
    import psutil

    procs = leftover_processes(session_uid, work_dir)
    for pid, started in forked:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started and all(p.pid != pid for p in procs):
                procs.append(proc)
        except psutil.Error:
            pass
    end_processes(procs)
