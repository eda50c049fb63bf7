"""Spans: session (root) -> workflow -> block -> task, with trace and span ids.

A :class:`SpanFactory` opens and ends spans. Ids are random like OpenTelemetry's (128-bit
trace, 64-bit span) and written as ``hex()`` strings, as RHAPSODY does. When an OpenTelemetry
tracer is bridged in, every span is also started and ended through it and the JSONL carries the
ids OpenTelemetry chose, so both views show the same spans.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

__all__ = ["Span", "SpanFactory", "span_line", "SPAN_LINE"]

_rand = random.Random(os.urandom(16))  # the user's random.seed() must not repeat our ids

# RHAPSODY span keys, in order; filled with % (see span_line and the translator's task spans)
SPAN_LINE = ('{"name":"%s","span_id":"%s","trace_id":"%s","parent_span_id":%s,"start_ns":%d,'
             '"end_ns":%d,"start_time_s":%.6f,"end_time_s":%.6f,"duration_ms":%.3f,'
             '"status_code":"%s","status_description":%s,"attributes":%s,"section":"span"}\n')


class Span:
    """One span. ``attributes`` is a dict for session, workflow and bridged spans; the
    translator keeps task attributes as JSON text instead. ``otel`` is the bridged span."""

    __slots__ = ("name", "trace_id", "span_id", "parent_span_id", "start", "end", "attributes",
                 "status_code", "status_description", "otel", "span_hex", "trace_hex",
                 "parent_json", "ids_json")

    def __init__(self, name: str, trace_id: int, span_id: int, parent_span_id: int | None,
                 start: float, attributes: dict | None, otel: Any = None,
                 trace_hex: str | None = None) -> None:
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
        self.span_hex = hex(span_id)
        self.trace_hex = trace_hex or hex(trace_id)
        self.parent_json = f'"{parent_span_id:#x}"' if parent_span_id else "null"
        # how the events of this span refer to it
        self.ids_json = f'"trace_id":"{self.trace_hex}","span_id":"{self.span_hex}"'


class SpanFactory:
    """Open and end spans (and their OpenTelemetry twins when bridged)."""

    def __init__(self, bridge: Any = None) -> None:
        self.bridge = bridge  # asyncflow_hpc.telemetry.otel.OtelBridge or None
        self._trace_id = _rand.getrandbits(128) or 1
        self._trace_hex = hex(self._trace_id)
        self._bits = _rand.getrandbits

    def open(self, name: str, parent: Span | None, start: float, attributes: dict | None,
             external_parent: Any = None) -> Span:
        """Start a span under ``parent`` (None: the root of this session's trace)."""
        bridge = self.bridge
        if bridge is not None:
            otel = bridge.start(name, parent.otel if parent is not None else None, start,
                                attributes, external_parent)
            trace_id, span_id, parent_id = bridge.ids(otel)
            if parent is not None:
                parent_id = parent.span_id
            return Span(name, trace_id, span_id, parent_id, start, attributes, otel)
        if parent is None:
            return Span(name, self._trace_id, self._bits(64) or 1, None, start, attributes,
                        None, self._trace_hex)
        return Span(name, parent.trace_id, self._bits(64) or 1, parent.span_id, start,
                    attributes, None, parent.trace_hex)

    def end(self, span: Span, end: float, status_code: str = "OK",
            description: str | None = None, attributes: dict | None = None) -> None:
        span.end = end
        span.status_code = status_code
        span.status_description = description
        if attributes and span.attributes is not None:
            span.attributes.update(attributes)
        if span.otel is not None:
            self.bridge.end(span.otel, end, status_code, description, attributes)

    def close(self, span: Span, end: float, status_code: str = "OK",
              description: str | None = None, attributes: dict | None = None) -> str:
        """End ``span`` and return its JSONL line."""
        self.end(span, end, status_code, description, attributes)
        return span_line(span)


def span_line(span: Span, attributes_json: str | None = None) -> str:
    end = span.end if span.end is not None else span.start
    start_ns, end_ns = int(span.start * 1e9), int(end * 1e9)
    if attributes_json is None:
        attributes_json = json.dumps(span.attributes or {}, default=str, separators=(",", ":"))
    desc = span.status_description
    return SPAN_LINE % (
        span.name, span.span_hex, span.trace_hex, span.parent_json, start_ns, end_ns,
        span.start, end, (end_ns - start_ns) / 1e6, span.status_code,
        "null" if desc is None else json.dumps(desc), attributes_json)
