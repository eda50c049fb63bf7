"""Which tasks take the warm path: small ones that need nothing of RP but a core.

A task goes to the warm workers when it is a function task or an executable on one core,
unless its description says ``warm: False``; with no GPU, no staging or declared files, no
``pre_exec``/``post_exec``/``pre_launch``, no named environment, sandbox or output files, and
(function tasks) no ``environment``. Every
other task keeps RADICAL-Pilot's own path (raptor for functions, RP's executor for
executables), chosen here from the task description alone.
"""

from __future__ import annotations

from ....descriptions import ENGINE_KEYS
from ....tasks import TaskKind, TaskSpec

__all__ = ["warm_reason"]

#: keys whose default values keep a task small
_ONE = {"ranks": 1, "cores_per_rank": 1}
_NO_GPU = ("gpus_per_rank",)


def warm_reason(spec: TaskSpec) -> str | None:
    """None when ``spec`` may run on a warm worker, else why it takes RP's path."""
    if spec.kind is not TaskKind.FUNCTION and spec.kind is not TaskKind.EXECUTABLE:
        return f"a {spec.kind.value} task"
    if spec.files is not None:
        return "declared input/output files (RP stages them)"
    if spec.stdio is not None:
        return "capture_stdio (RP writes the files)"
    for key, value in (spec.description or {}).items():
        if value is None:
            continue
        if key in _ONE:
            try:
                if int(value) <= 1:
                    continue
            except (TypeError, ValueError):
                pass
            return f"{key}={value!r}"
        if key in _NO_GPU:
            if not value:
                continue
            return f"{key}={value!r}"
        if key in ("environment", "env") and spec.kind is TaskKind.EXECUTABLE:
            continue
        if key in ENGINE_KEYS or (key == "warm" and value):
            continue
        if key == "warm":
            return "warm=False"
        if value in ((), [], {}, ""):
            continue
        return f"task_description[{key!r}]"
    return None
