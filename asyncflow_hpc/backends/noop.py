"""Dry-run backend: every task succeeds at once without running anything.

Useful to check a campaign's shape (names, dependencies, workflow ids, task descriptions)
before spending an allocation on it. What would have run is kept in ``submitted``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tasks import TaskKind, TaskSpec
from .base import ExecutionBackend

__all__ = ["NoopExecutionBackend"]


class NoopExecutionBackend(ExecutionBackend):
    """Completes every task with ``None`` (functions) or ``""`` (executables)."""

    name = "dryrun"

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
