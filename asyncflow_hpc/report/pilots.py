"""The pilots of a run, from a pilot pool's notes (``PilotDecision``, ``PilotEnded`` events):
each pilot's work and cost (node-hours held and used), the totals, and the pool's decisions
in time order. The summary's ``pilots`` section; the terminal's tables are made here, the
HTML page's (:mod:`.html`) from the same cells.

A pilot with decisions but no ``PilotEnded`` in the log (the run did not shut down, or the
log closed before the pilot did) is listed with its node-hours unknown, outside the totals.
"""

from __future__ import annotations

import math
from typing import Any

from .reader import Log

__all__ = ["DECISION_COLUMNS", "PILOT_COLUMNS", "decision_cells", "pilot_cells",
           "pilot_section", "pilot_tables", "shown_decisions", "totals_text"]

TEXT_PILOTS = 50  # pilots shown in the terminal
TEXT_DECISIONS = 30  # decisions shown in the terminal: the first and the last ones
ACTIONS = {"PilotStarted": "started", "PilotActive": "active", "PilotFailed": "failed",
           "PilotStopped": "stopped", "PilotLost": "lost", "TemplateFailed": "template failed"}
_ENDING = ("PilotStopped", "PilotLost", "PilotFailed")
PILOT_COLUMNS = ["pilot", "template", "nodes", "cores", "done", "moved", "held node-h",
                 "used node-h", "used %", "started because", "ended because"]
DECISION_COLUMNS = ["time", "action", "pilot", "reason"]


def _num(x: Any) -> float | None:
    """A number of the log, or None (a missing or malformed field)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return x if ok else None


def _text(x: Any) -> str | None:
    return None if x is None else str(x)


def pilot_section(log: Log) -> dict[str, Any] | None:
    """The summary's ``pilots`` section; None when the log has no pilot events."""
    if not log.pilot_decisions and not log.pilots_ended:
        return None
    pilots = _pilots(log)
    known = [p for p in pilots if p["ended"]]
    held = sum(p["held_node_hours"] or 0.0 for p in known)
    used = sum(p["used_node_hours"] or 0.0 for p in known)
    return {"pilots": pilots,
            "held_node_hours": round(held, 6) if known else None,
            "used_node_hours": round(used, 6) if known else None,
            "utilisation": round(used / held, 4) if held > 0 else None,
            "without_end": len(pilots) - len(known),
            "decisions": _decisions(log)}


def _when(d: dict) -> float | None:
    """When a decision was made: its ``at``, else its event's time."""
    at = _num((d.get("attributes") or {}).get("at"))
    return at if at is not None else _num(d.get("event_time"))


def _run_start(log: Log) -> float | None:
    starts = [s["start"] for s in log.sessions.values() if _num(s.get("start")) is not None]
    if starts:
        return min(starts)
    times = [t for t in map(_when, log.pilot_decisions) if t is not None]
    return min(times) if times else None


def _key(d: dict) -> tuple:
    a = d.get("attributes") or {}
    return (d.get("session_id"), _text(a.get("pool", d.get("backend"))), _text(a.get("pilot")))


def _pilots(log: Log) -> list[dict[str, Any]]:
    """One row per pilot: its PilotEnded's attributes, else what its decisions tell."""
    rows: dict[tuple, dict[str, Any]] = {}
    first: dict[tuple, float] = {}
    for d in sorted(log.pilot_decisions, key=lambda d: _when(d) or 0.0):
        a = d.get("attributes") or {}
        key = _key(d)
        if key[2] is None:  # TemplateFailed: about a template, not a pilot
            continue
        first.setdefault(key, _when(d) or math.inf)
        row = rows.setdefault(key, {
            "pool": key[1], "pilot": key[2], "template": _text(a.get("template")),
            "nodes": None, "cores": None, "done": None, "moved": None, "reason": None,
            "end_reason": None, "held_node_hours": None, "used_node_hours": None,
            "utilisation": None, "ended": False})
        if a.get("action") == "PilotStarted":
            row["reason"] = _text(a.get("reason"))
        elif a.get("action") in _ENDING:
            row["end_reason"] = _text(a.get("reason"))
    for d in log.pilots_ended:
        a = d.get("attributes") or {}
        key = _key(d)
        row = rows.setdefault(key, {"pool": key[1], "pilot": key[2]})
        first.setdefault(key, _num(a.get("submitted_at")) or math.inf)
        row.update(a)  # everything the pool told of it: uid, state, times...
        for k in ("nodes", "cores", "done", "moved", "held_node_hours", "used_node_hours",
                  "utilisation"):
            row[k] = _num(a.get(k))
        for k in ("pilot", "template", "reason", "end_reason"):
            row[k] = _text(a.get(k, row.get(k)))
        row["pool"], row["ended"] = key[1], True
    order = sorted(rows, key=lambda k: (first.get(k, math.inf), str(k)))
    return [rows[k] for k in order]


def _decisions(log: Log) -> list[dict[str, Any]]:
    """Every decision in time order, with ``t``: seconds since the run started."""
    start = _run_start(log)
    out = []
    for d in log.pilot_decisions:
        at = _when(d)
        a = d.get("attributes") or {}
        out.append({**a, "pool": _text(a.get("pool", d.get("backend"))), "at": at,
                    "t": None if at is None or start is None else round(at - start, 3)})
    out.sort(key=lambda x: x["at"] if x["at"] is not None else math.inf)
    return out


# ---------------------------------------------------------------------- display
def node_hours(x: float | None) -> str:
    """0.42, 12.35, 0.0042 (two decimals, or two digits when smaller); '?' when unknown."""
    if x is None:
        return "?"
    return f"{x:,.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def totals_text(section: dict[str, Any]) -> str:
    """``node-hours held 0.42, used 0.37 (88%)``, and the pilots left out of it."""
    s = section
    text = (f"node-hours held {node_hours(s['held_node_hours'])}, used "
            f"{node_hours(s['used_node_hours'])} ({_pct(s['utilisation'])})")
    if s["without_end"]:
        text += (f"; {s['without_end']} pilot(s) without an end in the log (up when it "
                 f"closed, or the run did not shut down): node-hours unknown, not counted")
    return text


def _count(x: float | None) -> str:
    return "?" if x is None else f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"


def pilot_cells(p: dict[str, Any], with_pool: bool = False) -> list[str]:
    """One pilot as the texts of :data:`PILOT_COLUMNS`."""
    name = p["pilot"] or "-"
    if with_pool:
        name = f"{p['pool']}/{name}"
    end = p["end_reason"] or ("-" if p["ended"] else "(no end in the log)")
    return [name, p["template"] or "-", _count(p["nodes"]), _count(p["cores"]),
            _count(p["done"]), _count(p["moved"]), node_hours(p["held_node_hours"]),
            node_hours(p["used_node_hours"]), _pct(p["utilisation"]), p["reason"] or "-", end]


def clock(seconds: float | None) -> str:
    """``+1:05`` (minutes:seconds) or ``+2:01:05`` since the run started."""
    if seconds is None:
        return "?"
    sign = "-" if seconds < 0 else "+"
    m, s = divmod(int(abs(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{sign}{h}:{m:02d}:{s:02d}" if h else f"{sign}{m}:{s:02d}"


def decision_cells(d: dict[str, Any]) -> list[str]:
    """One decision as the texts of :data:`DECISION_COLUMNS`."""
    action = ACTIONS.get(d.get("action"), _text(d.get("action")) or "?")  # type: ignore[arg-type]
    who = _text(d.get("pilot")) or f"({_text(d.get('template')) or '?'})"
    reason = _text(d.get("reason")) or ""
    moved = _num(d.get("moved"))
    if moved:
        reason += f"; {moved:.0f} task(s) moved"
    return [clock(d.get("t")), action, who, reason]


def shown_decisions(decisions: list[dict], limit: int) -> tuple[list[dict], list[dict], int]:
    """The first and last decisions to show, and how many lie between them unshown."""
    if len(decisions) <= limit:
        return decisions, [], 0
    head = decisions[: limit - limit // 2]
    tail = decisions[len(decisions) - limit // 2:]
    return head, tail, len(decisions) - len(head) - len(tail)


def pilot_tables(section: dict[str, Any]) -> list[Any]:
    """The ``pilots`` and ``pilot decisions`` tables for the terminal (rich)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    pilots = section["pilots"]
    out: list[Any] = []
    if pilots:
        with_pool = len({p["pool"] for p in pilots}) > 1
        # narrow numbers, the reasons below each other in the last column: 80 columns do
        pt = Table(title=f"pilots ({len(pilots):,}; held and used in node-hours)",
                   title_justify="left", box=box.SIMPLE_HEAD, padding=0,
                   caption=escape(totals_text(section)), caption_justify="left")
        for col in ("pilot", "template", "nodes", "cores", "done", "moved", "held", "used",
                    "used %"):
            pt.add_column(col, justify="left" if col in ("pilot", "template") else "right",
                          no_wrap=True)
        pt.add_column("started / ended because", overflow="fold", min_width=20)
        for p in pilots[:TEXT_PILOTS]:
            cells = pilot_cells(p, with_pool)
            pt.add_row(*map(escape, cells[:9]), escape(f"{cells[9]}\n→ {cells[10]}"))
        if len(pilots) > TEXT_PILOTS:
            pt.add_row(f"... {len(pilots) - TEXT_PILOTS:,} more in summary.json")
        out.append(pt)
    decisions = section["decisions"]
    if decisions:
        head, tail, left_out = shown_decisions(decisions, TEXT_DECISIONS)
        dt = Table(title=f"pilot decisions ({len(decisions):,})", title_justify="left",
                   box=box.SIMPLE_HEAD, padding=0)
        for col in DECISION_COLUMNS:
            dt.add_column(col, justify="right" if col == "time" else "left", overflow="fold",
                          no_wrap=col != "reason")
        for d in head:
            dt.add_row(*map(escape, decision_cells(d)))
        if left_out:
            dt.add_row("...", f"{left_out:,} more", "", "")
            dt.caption = f"{left_out:,} decisions not shown; summary.json (--out DIR) has all"
        for d in tail:
            dt.add_row(*map(escape, decision_cells(d)))
        out.append(dt)
    return out
