"""Telemetry: a RHAPSODY-format JSONL event log, spans and metrics, optionally OpenTelemetry.

Switch it on with ``WorkflowEngine.create(telemetry="events.jsonl")``, the environment
variable ``ASYNCFLOW_HPC_TELEMETRY=events.jsonl`` or ``asyncflow-hpc run --telemetry
events.jsonl``. Read the log with ``asyncflow-hpc report events.jsonl`` (see
:mod:`asyncflow_hpc.report`).

Modules, one job each: :mod:`.session` (the attachment: the engine's tape, hand-over timer,
close), :mod:`.rows` (what is read of a task record), :mod:`.translator` with
:mod:`.rare_lines` and :mod:`.text` (the one translator: rows -> lines), :mod:`.worker` (runs
the translator and writes the log) in a process (:mod:`.writer`) or on a thread
(:mod:`.thread_worker`), :mod:`.spans`, :mod:`.metrics`, :mod:`.resources` (psutil samples),
:mod:`.otel` (optional bridge).
"""

from __future__ import annotations

import os
from typing import Any

from .session import TelemetrySession

__all__ = ["TelemetrySession", "attach"]


def attach(engine: Any, path: str | os.PathLike, *, resource_interval: float | None = None,
           tracer_provider: Any = None) -> TelemetrySession:
    """Record ``engine``'s events to ``path`` (a file, or a directory for one file per engine).

    ``resource_interval``: seconds between resource samples (default
    ``$ASYNCFLOW_HPC_TELEMETRY_INTERVAL`` or 5; 0 switches sampling off).
    ``tracer_provider``: an OpenTelemetry provider to send the spans to; by default the one
    configured globally, if any. Must be called on the engine's running loop; the returned
    session's ``await close()`` writes the rest (the engine awaits it at shutdown).
    """
    return TelemetrySession(engine, path, resource_interval=resource_interval,
                            tracer_provider=tracer_provider)
