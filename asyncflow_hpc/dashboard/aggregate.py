"""What the dashboard shows, kept up to date from telemetry lines in bounded memory.

:class:`Aggregator` takes the lines of an event log (RHAPSODY JSONL, see
docs/observability.md) as they are written and keeps only what the page needs: counts per
state from the engine's own ``EngineProgress`` events (what the progress display shows),
counts and durations per task function and per workflow, the tasks running longer than a
second (their steps reach the log while they run) with their start, a stream of the most
recent task intervals per node, the last failures, node samples and the backends'
descriptions. Nothing grows with the number of tasks except per-function and per-workflow
counters (capped), so a million tasks cost what a thousand do.

Most lines are read without a JSON parser: an event line starts with its id and type at
fixed places, and only the types the page uses are parsed.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

__all__ = ["Aggregator"]

_TYPE_AT = len('{"event_id":"') + 32 + len('","event_type":"')
_WANTED = frozenset({"TaskStarted", "TaskCompleted", "TaskFailed", "TaskCanceled",
                     "EngineProgress", "ResourceUpdate", "SessionStarted", "SessionEnded"})
_ENDS = {"TaskCompleted": "done", "TaskFailed": "failed", "TaskCanceled": "cancelled"}
STREAM_KEEP = 4000  # task intervals kept for the stream (the most recent)
STREAM_SECONDS = 300.0  # ... of the last minutes
FAILURES_KEEP = 100
RUNNING_SHOWN = 50
GROUPS_KEEP = 500  # functions / workflows counted (more are lumped as "(other)")
SAMPLES_KEEP = 600  # per node


class _Group:
    __slots__ = ("done", "failed", "cancelled", "running", "seconds")

    def __init__(self) -> None:
        self.done = self.failed = self.cancelled = self.running = 0
        self.seconds = 0.0

    def as_list(self, name: str) -> list:
        return [name, self.done, self.failed, self.cancelled, self.running,
                round(self.seconds / self.done, 6) if self.done else None]


class Aggregator:
    """Feed it log lines (:meth:`feed`); ask it for the page's data (:meth:`snapshot`)."""

    def __init__(self) -> None:
        self.lines = 0
        self.bad_lines = 0
        self.session: dict[str, Any] = {}
        self.ended: float | None = None
        self.tasks = dict.fromkeys(("pending", "running", "done", "failed", "cancelled"), 0)
        self.blocks = dict(self.tasks)
        self.progress_at: float | None = None
        self.backends: dict[str, Any] = {}
        self.functions: dict[str, _Group] = {}
        self.workflows: dict[str, _Group] = {}
        self.running: dict[str, tuple[str, float, str | None]] = {}  # id -> name, start, node
        self.stream: collections.deque[tuple] = collections.deque(maxlen=STREAM_KEEP)
        self.failures: collections.deque[dict] = collections.deque(maxlen=FAILURES_KEEP)
        self.failed_total = 0
        self.ends = 0  # tasks seen ending (from task events)
        self.by_end = dict.fromkeys(("done", "failed", "cancelled"), 0)  # ... by how
        self.samples: dict[str, collections.deque] = {}
        self.rate_points: collections.deque[tuple[float, int]] = collections.deque(maxlen=3600)
        self.latest = 0.0  # the newest event time seen

    # ------------------------------------------------------------------ input
    def feed(self, line: str) -> None:
        """One line of an event log (the ``dashboard EVENTS.jsonl`` mode)."""
        self.lines += 1
        if not line.startswith('{"event_id"'):
            return  # spans and metric lines: nothing the page shows
        end = line.find('"', _TYPE_AT)
        etype = line[_TYPE_AT:end] if end > 0 else ""
        if etype not in _WANTED:
            return
        try:
            d = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            return
        t = d.get("event_time") or 0.0
        attrs = d.get("attributes") or {}
        if etype in _ENDS:
            seconds = d.get("duration_seconds") or 0.0
            self.task_ended(d.get("task_id") or "", attrs.get("task_name") or "?",
                            attrs.get("workflow_id"), d.get("node_id"), _ENDS[etype],
                            t - seconds if seconds else None, t,
                            attrs.get("task_type") == "block",
                            attrs.get("error_type"), attrs.get("error_message"))
        elif etype == "TaskStarted":
            if attrs.get("task_type") != "block":
                self.running[d.get("task_id") or ""] = (
                    attrs.get("task_name") or "?", t, d.get("node_id"))
        elif etype == "EngineProgress":
            self.progress(t, attrs.get("tasks") or {}, attrs.get("blocks") or {},
                          attrs.get("backends"))
        elif etype == "ResourceUpdate":
            self.sample(d.get("node_id") or "?", t, d.get("cpu_percent"),
                        d.get("memory_percent"))
        elif etype == "SessionStarted":
            self.session_started(d.get("session_id"), t, d.get("backend"),
                                 attrs.get("hostname"), attrs.get("backends") or {})
        elif etype == "SessionEnded":
            self.ended = t

    def session_started(self, sid: Any, t: float, backend: Any, host: Any,
                        backends: dict[str, Any]) -> None:
        self.session = {"id": sid, "start": t, "backend": backend, "host": host}
        self.backends = backends
        self.ended = None

    def progress(self, t: float, tasks: dict[str, int], blocks: dict[str, int],
                 backends: dict[str, Any] | None = None) -> None:
        """The engine's counts by state (and the backends' descriptions when they changed)."""
        if t > self.latest:
            self.latest = t
        self.tasks.update(tasks)
        self.blocks.update(blocks)
        if backends:
            self.backends = backends
        self.progress_at = t
        finished = sum(self.tasks.get(k, 0) for k in ("done", "failed", "cancelled"))
        self.rate_points.append((t, finished))

    def sample(self, node: str, t: float, cpu: float | None, memory: float | None) -> None:
        q = self.samples.get(node)
        if q is None:
            q = self.samples[node] = collections.deque(maxlen=SAMPLES_KEEP)
        q.append((t, cpu, memory))

    def _group(self, table: dict[str, _Group], key: str) -> _Group:
        g = table.get(key)
        if g is None:
            if len(table) >= GROUPS_KEEP:
                key = "(other)"
                g = table.get(key)
            if g is None:
                g = table[key] = _Group()
        return g

    def task_ended(self, tid: str, name: str, workflow: str | None, node: str | None,
                   state: str, start: float | None, end: float, block: bool = False,
                   error_type: str | None = None, error: str | None = None) -> None:
        """A task ended (``state``: done, failed or cancelled); ``start`` when its body
        started (None: it never ran)."""
        if end > self.latest:
            self.latest = end
        if block:
            return
        self.running.pop(tid, None)
        seconds = (end - start) if start else 0.0
        for table, key in ((self.functions, name), (self.workflows, workflow or "(none)")):
            g = self._group(table, key)
            setattr(g, state, getattr(g, state) + 1)
            if state == "done":
                g.seconds += seconds
        self.ends += 1
        self.by_end[state] += 1
        if self.progress_at is None and (not self.rate_points
                                         or end - self.rate_points[-1][0] >= 1):
            self.rate_points.append((end, self.ends))  # no EngineProgress (an older log)
        if state != "cancelled" and start:
            self.stream.append((node or "?", start, end, name, state == "failed"))
        if state == "failed":
            self.failed_total += 1
            self.failures.append({
                "task": tid, "name": name, "workflow": workflow, "node": node, "time": end,
                "error_type": error_type, "error": (error or "")[-2000:]})

    def tasks_done(self, records: list) -> None:
        """Many tasks that succeeded (the live feed's tape): objects with ``uid``, ``name``,
        ``workflow_id``, ``node``, ``started``, ``finished``, ``kind``. Tallied per function
        and workflow first, so a batch of thousands costs a dict update each."""
        tally: dict[tuple, list] = {}
        for rec in records:
            if rec.kind == "block":
                continue
            key = (rec.name, rec.workflow_id)
            t = tally.get(key)
            if t is None:
                t = tally[key] = [0, 0.0]
            t[0] += 1
            if rec.started:
                t[1] += rec.finished - rec.started
        for (name, workflow), (n, seconds) in tally.items():
            for table, key in ((self.functions, name), (self.workflows, workflow or "(none)")):
                g = self._group(table, key)
                g.done += n
                g.seconds += seconds
            self.ends += n
            self.by_end["done"] += n
        for rec in records[-STREAM_KEEP:]:
            if rec.kind != "block" and rec.started:
                self.stream.append((rec.node or "?", rec.started, rec.finished, rec.name,
                                    False))
        if records and records[-1].finished > self.latest:
            self.latest = records[-1].finished

    # ------------------------------------------------------------------ output
    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The page's data: small (tens of kB at any size of campaign)."""
        now = time.time() if now is None else now
        live = self.ended is None
        clock = now if live else self.ended
        # the engine's counts (once a second), overtaken by the task events written since
        tasks = dict(self.tasks)
        total = sum(tasks.values())
        for key, n in self.by_end.items():
            tasks[key] = max(tasks[key], n)
        if self.progress_at is None:  # a log of an older version: counted from task events
            tasks["running"] = len(self.running)
        finished = tasks["done"] + tasks["failed"] + tasks["cancelled"]
        tasks["pending"] = max(0, total - finished - tasks["running"])
        left = tasks["pending"] + tasks["running"]
        rate = self._rate()
        fns = self._groups(self.functions)
        return {
            "now": clock, "live": live, "session": self.session,
            "elapsed": (clock - self.session["start"]) if self.session.get("start") else None,
            "tasks": tasks, "blocks": dict(self.blocks), "finished": finished,
            "rate": rate, "eta": (left / rate if rate else None) if left else 0,
            "functions": fns, "workflows": self._groups(self.workflows),
            "running": self._running(clock), "stream": self._stream(clock, [f[0] for f in fns]),
            "failures": list(self.failures)[-20:][::-1], "failed_total": self.failed_total,
            "nodes": {n: [list(x) for x in list(q)[-120:]] for n, q in self.samples.items()},
            "backends": _pilots(self.backends, self.session.get("start"), clock),
            "throughput": self._throughput(),
            "lines": self.lines,
        }

    def _rate(self) -> float:
        """Tasks finished per second over the last 10 s of EngineProgress counts."""
        pts = self.rate_points
        if len(pts) < 2:
            return 0.0
        t1, f1 = pts[-1]
        t0, f0 = pts[0]
        for point in reversed(pts):
            t0, f0 = point
            if t1 - t0 >= 10:
                break
        return (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0

    def _throughput(self, points: int = 300) -> list[list[float]]:
        """Tasks finished per second over time (at most ``points`` points)."""
        pts = list(self.rate_points)
        step = max(1, len(pts) // points)
        pts = pts[::step] + ([pts[-1]] if pts and (len(pts) - 1) % step else [])
        return [[round(t1, 3), round((f1 - f0) / (t1 - t0), 2)]
                for (t0, f0), (t1, f1) in zip(pts, pts[1:], strict=False) if t1 > t0]

    @staticmethod
    def _groups(table: dict[str, _Group]) -> list[list]:
        rows = [g.as_list(k) for k, g in table.items()]
        rows.sort(key=lambda r: -(r[1] + r[2] + r[3]))
        return rows[:50]

    def _running(self, clock: float) -> dict[str, Any]:
        oldest = sorted(self.running.items(), key=lambda kv: kv[1][1])[:RUNNING_SHOWN]
        return {"count": len(self.running),
                "oldest": [[tid, name, node, round(clock - start, 3)]
                           for tid, (name, start, node) in oldest]}

    def _stream(self, clock: float, names: list[str]) -> dict[str, Any]:
        """Recent task intervals, one lane per slot of each node (a greedy packing: a task
        takes the first lane of its node that is free when it starts)."""
        since = clock - STREAM_SECONDS
        if self.session.get("start"):  # a young run fills the width
            since = max(since, self.session["start"])
        items = sorted((x for x in self.stream if x[2] >= since), key=lambda x: x[1])
        index = {n: i for i, n in enumerate(names)}
        lanes: dict[str, list[float]] = {}
        out = []
        for node, start, end, name, failed in items:
            free = lanes.setdefault(node, [])
            lane = next((i for i, busy in enumerate(free) if busy <= start), None)
            if lane is None:
                lane = len(free)
                free.append(end)
            else:
                free[lane] = end
            out.append([node, lane, round(start - since, 4), round(end - since, 4),
                        index.get(name, -1), 1 if failed else 0])
        return {"since": since, "seconds": max(clock - since, 1e-3), "tasks": out,
                "lanes": {n: len(v) for n, v in lanes.items()}}


def _pilots(backends: dict[str, Any], start: float | None, clock: float) -> list[dict]:
    """What the page shows of each backend: its type, and for a pilot its state and the
    walltime left (from the pilot's runtime and the session's start); a pilot pool's pilots
    one by one (state and walltime left as the pool last described them)."""
    out = []
    for name, desc in (backends or {}).items():
        if not isinstance(desc, dict):
            continue
        if isinstance(desc.get("pilots"), list):  # a pilot pool: a row per pilot not ended
            out += [{"name": f"{name}:{p.get('pilot')}", "type": f"pilot ({p.get('template')})",
                     "state": p.get("state"), "nodes": p.get("nodes"),
                     "walltime_left_s": p.get("walltime_left_s")}
                    for p in desc["pilots"] if isinstance(p, dict) and p.get("state") != "ended"]
            continue
        row = {"name": name, "type": desc.get("type")}
        pilot = desc.get("pilot") if isinstance(desc.get("pilot"), dict) else None
        if pilot is not None:
            runtime = pilot.get("runtime")
            row.update(resource=desc.get("resource"), state=desc.get("pilot_state"),
                       pilot=desc.get("pilot_uid"), nodes=pilot.get("nodes"),
                       cores=pilot.get("cores"), runtime_min=runtime)
            if runtime and start:
                row["walltime_left_s"] = max(0.0, runtime * 60 - (clock - start))
        out.append(row)
    return out
