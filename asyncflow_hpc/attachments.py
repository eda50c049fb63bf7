"""Observers the engine attaches from its arguments or the environment.

The engine knows only this hook; what each attachment does (a telemetry file, a progress
display, a journal) lives in its own module, imported only when switched on so that a plain
run imports nothing extra. Each attachment subscribes to the engine's events and has an
``async close()`` that the engine awaits at shutdown.

| argument    | environment variable        | module                     |
|-------------|-----------------------------|----------------------------|
| telemetry=  | ASYNCFLOW_HPC_TELEMETRY     | asyncflow_hpc.telemetry    |
| progress=   | ASYNCFLOW_HPC_PROGRESS      | asyncflow_hpc.progress     |
| journal=    | ASYNCFLOW_HPC_JOURNAL       | asyncflow_hpc.journal      |
"""

from __future__ import annotations

import os
from typing import Any, Protocol

__all__ = ["Attachment", "attach_configured"]


class Attachment(Protocol):
    async def close(self) -> None: ...


def attach_configured(engine: Any, *, telemetry: Any = None, progress: Any = None,
                      journal: Any = None) -> list[Attachment]:
    """Attach what the arguments (or, when absent, the environment) switch on."""
    out: list[Attachment] = []
    telemetry = telemetry if telemetry is not None else os.environ.get("ASYNCFLOW_HPC_TELEMETRY")
    if telemetry:
        from .telemetry import attach as attach_telemetry

        out.append(attach_telemetry(engine, telemetry))
    progress = progress if progress is not None else os.environ.get("ASYNCFLOW_HPC_PROGRESS")
    if progress and progress != "off":
        from .progress import attach as attach_progress

        out.append(attach_progress(engine, progress))
    journal = journal if journal is not None else os.environ.get("ASYNCFLOW_HPC_JOURNAL")
    if journal:
        from .journal import attach as attach_journal

        out.append(attach_journal(engine, journal))
    return out
