"""``flow.components``: the tasks and blocks of one engine, by uid."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from .tasks import TaskRecord

__all__ = ["Components"]


class Components(Mapping):
    """``uid -> record`` for the tasks and blocks of one engine.

    ``keep=True`` (the default, as in radical.asyncflow): every task until the engine is
    gone; a finished one is held as a :class:`~asyncflow_hpc.tasks.TaskSummary` (about 100
    bytes, no arguments or result), so a script may iterate ``flow.components.values()`` after
    dropping its futures. ``keep=False``: only records still alive (unfinished, or whose
    future the user holds), held weakly and swept in amortised batches, for campaigns of many
    millions of tasks.
    """

    __slots__ = ("_recs", "_keep", "_sweep_at")

    def __init__(self, keep: bool = True) -> None:
        self._recs: dict[str, Any] = {}
        self._keep = keep
        self._sweep_at = 4096

    def _add(self, uid: str, rec: TaskRecord) -> None:
        recs = self._recs
        if self._keep:
            recs[uid] = rec
            return
        recs[uid] = weakref.ref(rec)
        if len(recs) >= self._sweep_at:
            self._sweep()

    def _finished(self, rec: TaskRecord) -> None:
        if self._keep:
            self._recs[rec.uid] = rec.summary()

    def _sweep(self) -> None:
        self._recs = {k: r for k, r in self._recs.items() if r() is not None}
        self._sweep_at = max(4096, 2 * len(self._recs))

    def __getitem__(self, uid: str) -> Any:
        rec = self._recs[uid]
        if self._keep:
            return rec
        rec = rec()
        if rec is None:
            raise KeyError(f"{uid} (finished, and its future is no longer referenced; "
                           "keep_components=True keeps it)")
        return rec

    def __iter__(self):
        if self._keep:
            return iter(list(self._recs))
        return (k for k, r in list(self._recs.items()) if r() is not None)

    def __len__(self) -> int:
        if self._keep:
            return len(self._recs)
        return sum(1 for r in self._recs.values() if r() is not None)

    def __contains__(self, uid: object) -> bool:
        r = self._recs.get(uid)  # type: ignore[arg-type]
        if self._keep or r is None:
            return r is not None
        return r() is not None
