"""What the translator's lines are made of: RHAPSODY event names and JSON text helpers.

Standard library only: the telemetry worker loads this file by path.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CANCELED", "COMPLETED", "CREATED", "FAILED", "QUEUED", "RESOLVED", "RETRIED",
           "STARTED", "STATUS", "SUBMITTED", "clean", "dumps", "dumps_str", "enc", "fmt"]

CREATED, RESOLVED, QUEUED, SUBMITTED, STARTED = (
    "TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted", "TaskStarted")
COMPLETED, FAILED, CANCELED, RETRIED = "TaskCompleted", "TaskFailed", "TaskCanceled", "TaskRetried"
#: a task's end -> its span's ``status`` attribute
STATUS = {COMPLETED: "completed", FAILED: "failed", CANCELED: "canceled"}

dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
dumps_str = json.encoder.encode_basestring  # a str as JSON (in C), as dumps writes it


def fmt(text: str) -> str:
    """``text`` inside a % template."""
    return text.replace("%", "%%") if "%" in text else text


def enc(text: str) -> bytes:
    """UTF-8; a lone surrogate (from a file name, say) becomes a \\udcxx escape: valid JSON."""
    return text.encode("utf-8", "backslashreplace")


def clean(etype: Any) -> str:
    """An event type safe between JSON quotes."""
    etype = str(etype)
    return etype.replace("\\", "").replace('"', "") if '"' in etype or "\\" in etype else etype
