"""Spans: session (root) -> workflow -> block -> task, with trace and span ids.

A :class:`SpanFactory` opens and closes spans and turns a closed span into one JSONL line
(RHAPSODY's span keys). Ids are random like OpenTelemetry's (128-bit trace, 64-bit span);
when an OpenTelemetry tracer is bridged in, every span is also started and ended through it
and the JSONL line carries the ids OpenTelemetry chose, so both views show the same spans.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

__all__ = ["Span", "SpanFactory"]

_rand = random.Random(os.urandom(16))  # the user's random.seed() must not repeat our ids


class Span:
    """One span; ``otel`` is the OpenTelemetry span when the bridge is on."""

    __slots__ = ("name", "trace_id", "span_id", "parent_span_id", "start", "end",
                 "attributes", "status_code", "status_description", "otel")

    def __init__(self, name: str, trace_id: int, span_id: int, parent_span_id: int | None,
                 start: float, attributes: dict, otel: Any = None) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.start = start  # seconds since the epoch
        self.end: float | None = None
        self.attributes = attributes
        self.status_code = "UNSET"
        self.status_description: str | None = None
        self.otel = otel

    @property
    def ids_json(self) -> str:
        """``"trace_id":"0x…","span_id":"0x…"`` for the events that belong to this span."""
        return f'"trace_id":"{self.trace_id:#x}","span_id":"{self.span_id:#x}"'


class SpanFactory:
    """Open and close spans; format closed ones as JSONL ``span`` lines."""

    def __init__(self, bridge: Any = None) -> None:
        self.bridge = bridge  # asyncflow_hpc.telemetry.otel.OtelBridge or None
        self._trace_id = _rand.getrandbits(128) or 1

    def open(self, name: str, parent: Span | None, start: float, attributes: dict,
             external_parent: Any = None) -> Span:
        """Start a span under ``parent`` (None: a root span of this session's trace)."""
        bridge = self.bridge
        if bridge is not None:
            otel = bridge.start(name, parent.otel if parent is not None else None, start,
                                attributes, external_parent)
            trace_id, span_id, parent_id = bridge.ids(otel)
            if parent is not None:
                parent_id = parent.span_id
            return Span(name, trace_id, span_id, parent_id, start, attributes, otel)
        span_id = _rand.getrandbits(64) or 1
        if parent is None:
            return Span(name, self._trace_id, span_id, None, start, attributes)
        return Span(name, parent.trace_id, span_id, parent.span_id, start, attributes)

    def close(self, span: Span, end: float, status_code: str = "OK",
              description: str | None = None, attributes: dict | None = None) -> str:
        """End ``span`` and return its JSONL line."""
        span.end = end
        span.status_code = status_code
        span.status_description = description
        if attributes:
            span.attributes.update(attributes)
        if span.otel is not None:
            self.bridge.end(span.otel, end, status_code, description, attributes)
        return span_line(span)


def span_line(span: Span) -> str:
    start_ns = int(span.start * 1e9)
    end_ns = int(span.end * 1e9) if span.end is not None else None
    return json.dumps({
        "name": span.name,
        "span_id": f"{span.span_id:#x}",
        "trace_id": f"{span.trace_id:#x}",
        "parent_span_id": f"{span.parent_span_id:#x}" if span.parent_span_id else None,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "start_time_s": span.start,
        "end_time_s": span.end,
        "duration_ms": round((end_ns - start_ns) / 1e6, 3) if end_ns is not None else None,
        "status_code": span.status_code,
        "status_description": span.status_description,
        "attributes": span.attributes,
        "section": "span",
    }, default=str, separators=(",", ":")) + "\n"
