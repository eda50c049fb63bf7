"""What a task's final RP state means for the engine: its value or its error."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ...errors import (
    ExecutableNotFoundError,
    PilotFailedError,
    TaskExecutionError,
    TaskTimeoutError,
)
from ...hpc.launchers import node_failure
from ...tasks import TaskKind, TaskSpec, TaskState
from .translate import missing_output_error

__all__ = ["final_outcome", "pilot_detail", "url_path"]

_SHORTENED = "[... CONTENT SHORTENED ...]"
#: (state, value, error, node) as the reporter takes them
Outcome = tuple[TaskState, Any, "BaseException | None", "str | None"]


def final_outcome(spec: TaskSpec, task: Any, state: str, cancel_requested: bool,
                  unpack_result: Callable[[Any], tuple[bool, Any]],
                  ended_pilot: tuple[str, str, str | None] | None) -> Outcome:
    """The report of ``task`` (an RP Task) that reached final ``state``.

    ``ended_pilot`` is (uid, state, sandbox) of a pilot that ended, for tasks that failed
    with it.
    """
    # RP sends a task's slots only with its final state, so the node is known now
    node = _node_of(task) if spec.kind is TaskKind.EXECUTABLE else None
    if state == "DONE":
        if spec.kind is TaskKind.FUNCTION:
            ok, value = unpack_result(task.return_value)
            if ok:
                return TaskState.DONE, value, None, None
            return TaskState.FAILED, None, value, None
        if lost := node_failure(task.stderr):
            sandbox = url_path(task.sandbox) if task.sandbox else None
            return TaskState.FAILED, None, TaskExecutionError(
                spec.command_line, task.exit_code, task.stderr or "", task=spec.name,
                details=f"srun lost node {lost} and exited 0, so RADICAL-Pilot reported "
                        f"DONE; the output is incomplete; sandbox: {sandbox}",
                **_stdio_paths(spec)), node
        if (missing := missing_output_error(spec)) is not None:
            return TaskState.FAILED, None, missing, node
        if spec.stdio is not None:  # capture_stdio: the result is the file's path
            return TaskState.DONE, spec.stdio[0], None, node
        return TaskState.DONE, _full_stdout(task), None, node
    if state == "FAILED":
        return TaskState.FAILED, None, _failure(spec, task, ended_pilot), node
    if spec.timeout and not cancel_requested:  # RP's timeout cancels tasks
        return TaskState.FAILED, None, TaskTimeoutError(
            f"task {spec.name!r} exceeded its timeout of {spec.timeout} s "
            "(RADICAL-Pilot cancelled it)"), None
    return TaskState.CANCELLED, None, None, None


def _failure(spec: TaskSpec, task: Any,
             ended_pilot: tuple[str, str, str | None] | None) -> BaseException:
    exc_text = str(task.exception or "")
    sandbox = url_path(task.sandbox) if task.sandbox else None
    stderr = task.stderr or ""
    if spec.kind is TaskKind.FUNCTION:
        if "TimeoutError" in exc_text and spec.timeout:
            return TaskTimeoutError(f"task {spec.name!r} exceeded its timeout of "
                                    f"{spec.timeout} s")
        detail = (task.exception_detail or "").strip().splitlines()[-8:]
        return TaskExecutionError(
            spec.name, task.exit_code, stderr, task=spec.name,
            details=f"RP exception: {exc_text or 'none'}; sandbox: {sandbox}"
                    + ("; " + " | ".join(detail) if detail else ""))
    code = task.exit_code
    if code == 127 and ("not found" in stderr or "No such file" in stderr):
        argv0 = spec.command if isinstance(spec.command, str) else (spec.command or [""])[0]
        return ExecutableNotFoundError(str(argv0), spec.command_line)
    if code is None and "pilot" in exc_text.lower() and ended_pilot is not None:
        return PilotFailedError(*ended_pilot, exc_text)
    return TaskExecutionError(
        spec.command_line, code, stderr, task=spec.name,
        details=f"RP exception: {exc_text or 'none'}; sandbox: {sandbox}",
        **_stdio_paths(spec))


def pilot_detail(state: str, restarts: int, limit: int, mode: str) -> str:
    """Why a pilot's end fails the tasks it still had."""
    # RP reports DONE both when the runtime expired and when the pilot was cancelled through
    # RP (the agent then exits cleanly); CANCELED when its job was cancelled before running
    what = {"DONE": "its agent exited (runtime expired or pilot cancelled)",
            "CANCELED": "it was cancelled", "FAILED": "it failed (agent or job died)"
            }.get(state, state)
    text = f"{what} while tasks were unfinished"
    if mode == "resubmit":
        text += f"; {restarts} of {limit} replacement pilot(s) used"
    return text


def url_path(url: Any) -> str:
    """The local path of an RP sandbox URL (``file://localhost/a/b/`` -> ``/a/b/``)."""
    path = getattr(url, "path", None)
    if path:
        return str(path)
    text = str(url)
    if "://" in text:
        text = "/" + text.split("://", 1)[1].split("/", 1)[-1]
    return text


def _node_of(task: Any) -> str | None:
    try:
        slots = task.slots
        if slots:
            return slots[0].get("node_name") or None
    except Exception:
        pass
    return None


def _stdio_paths(spec: TaskSpec) -> dict[str, str]:
    """``stdout_path`` / ``stderr_path`` of a TaskExecutionError (capture_stdio=True)."""
    if spec.stdio is None:
        return {}
    return {"stdout_path": spec.stdio[0], "stderr_path": spec.stdio[1]}


def _full_stdout(task: Any) -> str:
    """task.stdout, or the whole stdout file when RP kept only its last KiB."""
    out = task.stdout or ""
    if out.startswith(_SHORTENED):
        try:
            name = task.description.get("stdout") or f"{task.uid}.out"
            path = os.path.join(url_path(task.sandbox), name)
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            pass
    return out
