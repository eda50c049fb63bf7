"""Plain-text tables and JSON documents for benchmark results.

Plain text (not a rich table) on purpose: the output is pasted into issues, READMEs and
batch job logs, where box-drawing characters and terminal widths get in the way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runner import SCHEMA, Measurement, machine_info

__all__ = ["format_measurements", "format_table", "write_json"]


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, others right."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(r) for r in rows)])


def seconds(t: float | None) -> str:
    """A duration in the unit that keeps three significant figures readable."""
    if t is None:
        return "-"
    if t == 0:
        return "0"
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.1f} ms"
    return f"{t:.2f} s"


def one_line(text: str | None, width: int = 100) -> str:
    """An error message for a table cell: whitespace collapsed, cut at ``width`` characters
    (the JSON keeps the whole message)."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def format_measurements(ms: Sequence[Measurement]) -> str:
    """One line per measurement: the figures ``asyncflow-hpc bench`` reports."""
    head = ["workload", "tasks", "makespan", "ideal", "tasks/s", "overhead/task", "util",
            "startup", "warm-up"]
    rows = []
    for m in ms:
        if not m.ok:
            rows.append([m.label, str(m.tasks), "FAILED", "", "", "", "", "", one_line(m.error)])
            continue
        rows.append([
            m.label, f"{m.completed}", seconds(m.makespan_s), seconds(m.ideal_s),
            f"{m.throughput:,.0f}" if m.throughput else "-",
            seconds(m.overhead_per_task_s),
            f"{m.utilisation:.0%}" if m.utilisation is not None else "-",
            seconds(m.startup_s), seconds(m.warmup_s),
        ])
    return format_table(head, rows)


def document(kind: str, machine: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
    """A JSON document with the schema tag and the machine it was measured on (``machine``:
    taken before the runs, so its load average is the one they started with)."""
    return {"schema": SCHEMA, "kind": kind, "machine": machine or machine_info(), **body}


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` atomically (a half-written result file would mislead a later plot)."""
    from ..safe_files import write_file

    out = Path(path)
    write_file(out, (json.dumps(data, indent=2, default=str) + "\n").encode(), 0o600,
               make_dirs=True)
    return out
