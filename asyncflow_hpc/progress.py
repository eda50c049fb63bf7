"""Live progress of an engine: tasks done / running / failed / cancelled / pending, blocks
apart, the rate and the time left.

Switched on by ``WorkflowEngine.create(progress=MODE)``, ``ASYNCFLOW_HPC_PROGRESS=MODE`` or
``asyncflow-hpc run --progress MODE`` (``--quiet`` is ``off``). Modes:

* ``auto`` — ``rich`` when stderr is a terminal, else ``plain`` (batch jobs, CI, pipes);
* ``rich`` — a live progress bar with counts on stderr;
* ``plain`` — one log line on stderr every ``ASYNCFLOW_HPC_PROGRESS_INTERVAL`` seconds
  (default 10) when something changed (and at least every minute while tasks are unfinished),
  and a last line at shutdown;
* ``off`` — nothing.

Counts come from ``engine.states()`` on a timer, never per event, so a display costs the
same for ten tasks and for a million. "running" counts bodies that run now (backends report
the start from where the body runs); blocks (``@flow.block``) are counted apart. The bar
fills with tasks that ended by running (done or failed): after Ctrl-C it shows how far the
run got and how many tasks were cancelled, not 100%.

A pilot pool's decisions (its notes, ``WorkflowEngine.subscribe_notes``) are shown as they
come, one line each (``pilots: cpu.2 started (scale out: ...)``), and while it has pilots the
counts end with ``pilots 2 active, 1 queued``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["attach", "PlainProgress", "RichProgress", "resolve_mode"]

log = logging.getLogger("asyncflow_hpc")

MODES = ("auto", "rich", "plain", "off")
DEFAULT_INTERVAL = 10.0
RICH_REFRESH = 0.25
HEARTBEAT = 6  # a plain line at least every this many intervals while work is unfinished
RATE_WINDOW = 30.0  # seconds of history behind the rate and the time left
# a pilot's last decision -> what it is now (the others: stopped, lost, failed: gone)
PILOT_STATES = {"PilotStarted": "queued", "PilotActive": "active"}
_VERBS = {"PilotStarted": "started", "PilotActive": "active", "PilotFailed": "failed",
          "PilotStopped": "stopped", "PilotLost": "lost"}


def resolve_mode(mode: str | None, stream: Any = None) -> str:
    """``auto`` (and unknown values, with a warning) -> ``rich`` or ``plain``."""
    mode = (mode or "auto").strip().lower()
    if mode in ("0", "false", "no", "none", "quiet"):
        return "off"
    if mode in ("1", "true", "yes", "on"):
        mode = "auto"
    if mode not in MODES:
        log.warning("asyncflow-hpc: unknown progress mode %r (use one of %s); using auto",
                    mode, ", ".join(MODES))
        mode = "auto"
    if mode == "auto":
        stream = stream if stream is not None else sys.stderr
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        mode = "rich" if tty and os.environ.get("TERM") != "dumb" else "plain"
    return mode


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _interval() -> float:
    raw = os.environ.get("ASYNCFLOW_HPC_PROGRESS_INTERVAL")
    if raw:
        try:
            value = float(raw)
            if value > 0:
                return value
        except ValueError:
            pass
    return DEFAULT_INTERVAL


def attach(engine: Any, mode: str | None = "auto") -> Any:
    """Show ``engine``'s progress; returns an object whose ``await close()`` ends the display."""
    resolved = resolve_mode(mode)
    if resolved == "off":
        return _Off()
    if resolved == "rich":
        try:
            return RichProgress(engine)
        except Exception as exc:  # rich missing, or another live display holds the terminal
            log.debug("progress: no live display (%s); plain lines instead", exc)
    return PlainProgress(engine, _interval())


def decision_text(a: dict[str, Any]) -> str:
    """A pilot pool's decision (a ``PilotDecision`` note's attributes) as a short line."""
    pool = a.get("pool")
    who = "pilots" if pool in (None, "pilots") else f"pilots {pool}"
    action = a.get("action")
    reason = str(a.get("reason") or "")
    if action == "TemplateFailed":
        return (f"{who}: no pilot of template {a.get('template')} can start; the tasks only it "
                f"runs fail ({reason})")
    verb = _VERBS.get(action, str(action))  # type: ignore[arg-type]
    if reason.startswith(verb + " "):  # "active (active after 40 s)"
        reason = reason[len(verb) + 1:]
    was = a.get("was")
    text = f"{who}: {a.get('pilot')} {verb}" + (f" while {was}" if was not in (None, "active")
                                               else "") + (f" ({reason})" if reason else "")
    if a.get("moved"):
        text += f", {a['moved']} task(s) moved"
    return text


class _Pilots:
    """A pilot pool's decisions from the engine's notes: each handed to ``show`` as a line,
    and each pilot's state by its last decision, for the counts."""

    def __init__(self, engine: Any, show: Callable[[str], None]) -> None:
        self._show = show
        self._states: dict[tuple, str] = {}  # (pool, pilot) -> queued, active
        subscribe = getattr(engine, "subscribe_notes", None)
        self._unsubscribe = subscribe(self._on_note) if subscribe is not None else None

    def _on_note(self, kind: str, a: dict[str, Any]) -> None:
        if kind not in ("PilotDecision", "PilotEnded"):
            return
        action = a.get("action") if kind == "PilotDecision" else kind
        key = (a.get("pool"), a.get("pilot"))
        if key[1] is not None:
            state = PILOT_STATES.get(action)  # type: ignore[arg-type]
            if state is None:
                self._states.pop(key, None)
            else:
                self._states[key] = state
        if kind == "PilotDecision":
            try:
                self._show(decision_text(a))
            except Exception:  # a display must never break the run
                log.debug("progress: pilot decision not shown", exc_info=True)

    def counts(self) -> str:
        """``pilots 2 active, 1 queued``; '' while there is none."""
        n = collections.Counter(self._states.values())
        parts = [f"{n[s]} {s}" for s in ("active", "queued") if n[s]]
        return f"pilots {', '.join(parts)}" if parts else ""

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class _Off:
    async def close(self) -> None:
        return None


class _Ticker:
    """Calls ``self.update()`` every ``interval`` seconds on the engine's loop."""

    def __init__(self, engine: Any, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self.started = time.monotonic()
        # (time, tasks finished) over the last RATE_WINDOW seconds: the rate and time left
        self._history: collections.deque[tuple[float, int]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False
        self.pilots = _Pilots(engine, self.show_decision)
        self._handle = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            self.update()
        except Exception:  # a display must never break the run
            log.debug("progress update failed", exc_info=True)
        self._handle = self._loop.call_later(self.interval, self._tick)

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def show_decision(self, text: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _stop_timer(self) -> bool:
        if self._closed:
            return False
        self._closed = True
        self.pilots.close()
        if self._handle is not None:
            self._handle.cancel()
        return True

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Tasks' and blocks' counts by state."""
        return self.engine.states()

    def pace(self, c: dict[str, int]) -> tuple[float, float | None]:
        """Tasks finished per second over the last RATE_WINDOW s, and the seconds left at
        that rate (None while nothing finished)."""
        now = time.monotonic()
        finished = c["done"] + c["failed"] + c["cancelled"]
        hist = self._history
        hist.append((now, finished))
        while len(hist) > 2 and now - hist[1][0] >= RATE_WINDOW:
            hist.popleft()
        t0, f0 = hist[0]
        if len(hist) == 1:
            t0, f0 = self.started, 0
        rate = (finished - f0) / (now - t0) if now > t0 else 0.0
        left = c["running"] + c["pending"]
        return rate, (left / rate if rate > 0 else None) if left else 0.0


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def _blocks(b: dict[str, int]) -> str:
    """``; blocks 2 running, 3 done`` — only the states that have some; '' without blocks."""
    parts = [f"{b[k]:,} {k}" for k in ("running", "done", "failed", "cancelled", "pending")
             if b[k]]
    return f"; blocks {', '.join(parts)}" if parts else ""


def _with_semicolon(text: str) -> str:
    return f"; {text}" if text else ""


class PlainProgress(_Ticker):
    """Periodic one-line summaries for logs."""

    def __init__(self, engine: Any, interval: float = DEFAULT_INTERVAL,
                 stream: Any = None) -> None:
        self._stream = stream
        self._last: tuple | None = None
        self._quiet_ticks = 0
        super().__init__(engine, interval)

    def line(self, c: dict[str, int], blocks: dict[str, int] | None = None,
             final: bool = False) -> str:
        now = time.monotonic()
        rate, left = self.pace(c)
        stamp = time.strftime("%H:%M:%S")
        unfinished = c["running"] + c["pending"]
        what = ("interrupted" if c["cancelled"] and unfinished == 0 and final else
                "finished" if final else "progress")
        tail = ""
        if not final:
            tail = f" ({rate:,.1f} tasks/s" + (
                f", about {_elapsed(left)} left)" if left else ")")
        return (f"asyncflow-hpc {stamp} {self.engine.uid} {what} [{_elapsed(now - self.started)}]"
                f": tasks {c['done']:,} done, {c['running']:,} running, {c['failed']:,} failed, "
                f"{c['cancelled']:,} cancelled, {c['pending']:,} pending{tail}"
                + _blocks(blocks or dict.fromkeys(c, 0)) + _with_semicolon(self.pilots.counts()))

    def show_decision(self, text: str) -> None:
        self._emit(f"asyncflow-hpc {time.strftime('%H:%M:%S')} {self.engine.uid} {text}")

    def _emit(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError):
            pass

    def update(self) -> None:
        c, b = self.counts()
        if sum(c.values()) + sum(b.values()) == 0:
            return  # nothing submitted yet
        key = (tuple(sorted(c.items())), tuple(sorted(b.items())), self.pilots.counts())
        self._quiet_ticks += 1
        heartbeat = (c["running"] + c["pending"]) > 0 and self._quiet_ticks >= HEARTBEAT
        if key == self._last and not heartbeat:
            return  # nothing changed: keep batch logs short
        self._last = key
        self._quiet_ticks = 0
        self._emit(self.line(c, b))

    async def close(self) -> None:
        if not self._stop_timer():
            return
        c, b = self.counts()
        if sum(c.values()) + sum(b.values()):
            self._emit(self.line(c, b, final=True))


class RichProgress(_Ticker):
    """A live bar on a terminal (rich), as wide as the terminal, refreshed from a timer."""

    def __init__(self, engine: Any, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        # the bar takes whatever width the counts, rate and clock leave on the terminal
        self._progress = Progress(
            BarColumn(bar_width=None), TaskProgressColumn(), TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[pace]}"), TimeElapsedColumn(),
            console=console if console is not None else Console(stderr=True),
            auto_refresh=False, transient=False, expand=True,
            # the script's prints and log lines go above the display when they reach the same
            # terminal; output redirected to a file stays untouched
            redirect_stdout=console is None and _isatty(sys.stdout),
            redirect_stderr=console is None)
        self._task = self._progress.add_task(f"{engine.uid}", total=None, counts="", pace="")
        self._progress.start()
        super().__init__(engine, RICH_REFRESH)

    def update(self, final: bool = False) -> None:
        c, b = self.counts()
        ran = c["done"] + c["failed"]  # the bar: tasks that ended by running
        total = ran + c["cancelled"] + c["running"] + c["pending"]
        parts = [f"[green]done {c['done']:,}", f"[yellow]running {c['running']:,}",
                 f"[red]failed {c['failed']:,}"]
        if c["cancelled"]:
            parts.append(f"[magenta]cancelled {c['cancelled']:,}")
        parts.append(f"[cyan]pending {c['pending']:,}")
        if sum(b.values()):
            parts.append(f"[dim]blocks {b['done']:,}/{sum(b.values()):,}")
        pilots = self.pilots.counts()
        if pilots:
            parts.append(f"[blue]{pilots}")
        rate, left = self.pace(c)
        if final:
            pace = "[magenta]interrupted" if c["cancelled"] else ""
        else:
            pace = f"{rate:,.1f}/s" + (f" ~{_elapsed(left)} left" if left else "")
        self._progress.update(self._task, completed=ran, total=total or None,
                              counts="[/] ".join(parts) + "[/]", pace=pace)
        self._progress.refresh()

    def show_decision(self, text: str) -> None:
        """Above the bar."""
        self._progress.console.print(text, markup=False, highlight=False, style="blue")

    async def close(self) -> None:
        if not self._stop_timer():
            return
        try:
            self.update(final=True)
        finally:
            self._progress.stop()
