"""The pool's once-a-second look at its pilots (a part of :class:`~.pool.PilotPool`):
pilots that ended on their own, walltime replacement and drain, ``min_pilots``, scale out
while tasks wait, scale in of idle pilots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .pilot import Pilot, Waiting
from .template import PilotTemplate

__all__ = ["Elastic"]

log = logging.getLogger("asyncflow_hpc.backends.pilots")

_FINAL_PILOT = ("DONE", "FAILED", "CANCELED")


class Elastic:
    """Mixed into :class:`~.pool.PilotPool`, whose state and pilot life it uses."""

    name: str
    templates: list[PilotTemplate]
    pilots: list[Pilot]
    scale_out_after: float
    idle_timeout: float
    drain_margin: float
    startup_guess: float
    _closing: bool
    _tick_handle: asyncio.TimerHandle | None
    _given_up: dict[str, str]
    _waiting: dict[str, Waiting]
    _startups: list[float]

    if TYPE_CHECKING:  # PilotLife's
        def _start_pilot(self, t: PilotTemplate, reason: str,
                         raise_errors: bool = False) -> Pilot | None: ...
        def _stop_pilot(self, p: Pilot, reason: str, move: bool = True) -> None: ...
        def _pilot_gone(self, p: Pilot, why: str, first: Any = ()) -> None: ...

    def _tick(self) -> None:
        self._tick_handle = None
        if self._closing:
            return
        try:
            self._watch(time.time())
        except Exception:  # a bug here must not stop the ticks
            log.exception("pilot pool %s: tick failed", self.name)
        self._tick_handle = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _watch(self, now: float) -> None:
        for p in list(self.pilots):  # pilots that ended on their own
            if p.state == "active":
                state = (p.backend.describe() or {}).get("pilot_state")
                if state in _FINAL_PILOT:
                    self._pilot_gone(p, f"pilot job ended ({state})")
        demand = self._demand(now)
        startup = max(self._startups) if self._startups else self.startup_guess
        for t in self.templates:
            if t.name in self._given_up:
                continue
            mine = [p for p in self.pilots if p.template is t]
            live = [p for p in mine if p.live]
            waiting_cores, oldest = demand.get(t.name, (0, 0.0))
            # walltime: replace early enough, drain before the end
            for p in live:
                if p.state != "active":
                    continue
                left = p.time_left(now)
                if left <= self.drain_margin:
                    self._stop_pilot(p, f"walltime: {max(left, 0):.0f} s left")
                    continue
                if not p.replaced and left <= startup * 1.5 + self.drain_margin + 2 \
                        and (p.tasks or waiting_cores or len(live) <= t.min_pilots):
                    p.replaced = True
                    new = self._start_pilot(t, f"replaces {p.name}: {left:.0f} s of walltime "
                                               f"left, pilots start in ~{startup:.0f} s")
                    if new is not None:
                        new.replaces = p
            live = [p for p in self.pilots if p.template is t and p.live]  # with replacements
            usable = [p for p in live if not p.replaced]
            if len(usable) < t.min_pilots:
                self._start_pilot(t, "min_pilots")
                continue
            coming = sum(p.capacity for p in live if p.coming)
            if waiting_cores > coming and len(usable) < t.max_pilots and (
                    not usable or oldest >= self.scale_out_after):
                self._start_pilot(t, f"scale out: {waiting_cores} core(s) of tasks waiting "
                                     f"{oldest:.0f} s, {coming} coming")
                continue
            if waiting_cores:
                continue
            for p in live:  # scale in: one idle pilot per tick
                idle = now - p.idle_since
                if p.replaces is not None and p.replaces.live:
                    continue  # waits to take over: not idle
                if not p.tasks and idle >= self.idle_timeout and len(usable) > t.min_pilots:
                    self._stop_pilot(p, f"scale in: idle {idle:.0f} s")
                    break

    def _demand(self, now: float) -> dict[str, tuple[int, float]]:
        """Per template, the cores of waiting tasks (each counted for its first route that
        is not given up) and the longest wait."""
        out: dict[str, list] = {}
        for w in self._waiting.values():
            t = next((r for r in w.routes if r.name not in self._given_up), None)
            if t is None:
                continue
            entry = out.setdefault(t.name, [0, 0.0])
            entry[0] += w.cores
            entry[1] = max(entry[1], now - w.since)
        return {k: (v[0], v[1]) for k, v in out.items()}
