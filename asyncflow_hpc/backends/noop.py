"""Dry-run backend: every task succeeds at once without running anything.

Useful to check a campaign's shape (names, dependencies, workflow ids, task descriptions)
before spending an allocation on it. What would have run is kept in ``submitted``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..descriptions import check_values
from ..tasks import TaskKind, TaskSpec
from .base import ExecutionBackend
from .local import LocalExecutionBackend

__all__ = ["NoopExecutionBackend"]


class NoopExecutionBackend(ExecutionBackend):
    """Completes every task with ``None`` (functions) or ``""`` (executables)."""

    name = "dryrun"
    #: a dry run checks the keys the local backend would (a typo fails here as it would there)
    task_keys = LocalExecutionBackend.task_keys
    key_aliases = LocalExecutionBackend.key_aliases

    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        super().check_task_description(td, task)
        check_values(td, task)

    def __init__(self, name: str = "dryrun", *, keep: bool = True) -> None:
        super().__init__()
        self.name = name
        self.keep = keep
        self.submitted: list[TaskSpec] = []

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        if self.keep:
            self.submitted.extend(specs)
        # report on the next iteration: never re-enter the engine from inside submit()
        self.reporter.loop.call_soon(self._finish, list(specs))

    def _finish(self, specs: list[TaskSpec]) -> None:
        done = self.reporter.done
        for s in specs:
            done(s.uid, "" if s.kind is TaskKind.EXECUTABLE else None)

    def cancel(self, uid: str) -> None:
        pass
