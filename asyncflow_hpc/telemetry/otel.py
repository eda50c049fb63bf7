"""Optional bridge to OpenTelemetry (extra ``otel``: opentelemetry-api + opentelemetry-sdk).

When OpenTelemetry is importable and the application has configured a tracer provider the
usual way (``trace.set_tracer_provider(...)`` with its exporters, or ``opentelemetry-instrument``
/ the ``OTEL_*`` environment), the telemetry's spans are also OpenTelemetry spans, with the
same ids, start and end times and attributes. The session span is started and ended through
it (so it nests under the application's current span); the rest are made from the one
translator's span lines as they are written (:meth:`OtelBridge.replay`), with the ids those
lines carry. Without OpenTelemetry nothing here is imported.
``ASYNCFLOW_HPC_OTEL=0`` switches the bridge off.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from typing import Any

from .._version import __version__

__all__ = ["OtelBridge", "find_bridge"]

log = logging.getLogger("asyncflow_hpc.telemetry")


def find_bridge(tracer_provider: Any = None) -> OtelBridge | None:
    """A bridge to ``tracer_provider`` or the configured global one; None when there is none."""
    if os.environ.get("ASYNCFLOW_HPC_OTEL", "").lower() in ("0", "off", "false", "no"):
        return None
    if tracer_provider is None:
        if importlib.util.find_spec("opentelemetry") is None:
            return None
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        tracer_provider = trace.get_tracer_provider()
        # nothing configured: the API hands out a proxy (or a no-op) provider
        if isinstance(tracer_provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
    return OtelBridge(tracer_provider)


def _clean(attributes: dict | None) -> dict:
    """OpenTelemetry takes str/bool/int/float values and homogeneous lists of them."""
    out: dict = {}
    if not attributes:
        return out
    for k, v in attributes.items():
        if v is None:
            continue
        if isinstance(v, (str, bool, int, float)):
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [str(x) for x in v]
        else:
            out[k] = str(v)
    return out


class OtelBridge:
    """Start and end real OpenTelemetry spans for the telemetry's spans."""

    def __init__(self, tracer_provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import Status, StatusCode

        self._trace = trace
        self._context = context
        self._status = Status
        self._codes = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR, "UNSET": StatusCode.UNSET}
        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("asyncflow_hpc", __version__)

    def current_context(self) -> Any:
        """The caller's active context: a session span opened now nests under the user's span."""
        return self._context.get_current()

    def start(self, name: str, parent: Any, start: float, attributes: dict,
              external_parent: Any = None) -> Any:
        if parent is not None:
            ctx = self._trace.set_span_in_context(parent)
        elif external_parent is not None:
            ctx = external_parent
        else:
            ctx = self._context.Context()  # a new trace, whatever span happens to be current
        return self.tracer.start_span(name, context=ctx, start_time=int(start * 1e9),
                                      attributes=_clean(attributes))

    def ids(self, span: Any) -> tuple[int, int, int | None]:
        sc = span.get_span_context()
        parent = getattr(span, "parent", None)
        return sc.trace_id, sc.span_id, (parent.span_id if parent is not None else None)

    def end(self, span: Any, end: float, status_code: str, description: str | None,
            attributes: dict | None) -> None:
        if attributes:
            span.set_attributes(_clean(attributes))
        code = self._codes.get(status_code)
        if code is not None and code is not self._codes["UNSET"]:
            # OpenTelemetry keeps a description for ERROR only
            span.set_status(self._status(code, description if status_code == "ERROR" else None))
        span.end(end_time=int(end * 1e9))

    # ------------------------------------------------------------------ replayed spans
    def replay(self, lines: bytes, skip: str | None = None) -> None:
        """Make an OpenTelemetry span of every span line in ``lines`` (JSONL written by the
        translator), except the span ``skip`` (the session's, a live span already)."""
        for line in lines.split(b"\n"):
            if b'"section":"span"' in line:
                d = json.loads(line)
                if d["span_id"] != skip:
                    self._replay(d)

    def _replay(self, d: dict) -> None:
        trace = self._trace
        parent = d.get("parent_span_id")
        if parent:
            parent_ctx = trace.SpanContext(int(d["trace_id"], 16), int(parent, 16), False,
                                           trace.TraceFlags(trace.TraceFlags.SAMPLED))
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent_ctx))
        else:
            ctx = self._context.Context()
        ids = self._chosen_ids()
        ids.span_id = int(d["span_id"], 16)
        try:
            span = self._replayer.start_span(d["name"], context=ctx, start_time=d["start_ns"],
                                             attributes=_clean(d.get("attributes")))
        finally:
            ids.span_id = None
        code, desc = d.get("status_code"), d.get("status_description")
        if code in ("OK", "ERROR"):
            span.set_status(self._status(self._codes[code], desc if code == "ERROR" else None))
        span.end(end_time=d["end_ns"])

    def _chosen_ids(self) -> _ChosenIds:
        """The id generator of the tracer that replays spans: it hands out the ids the
        lines carry (an SDK tracer takes its ids from its ``id_generator``)."""
        ids = getattr(self, "_ids", None)
        if ids is None:
            self._replayer = self.provider.get_tracer("asyncflow_hpc", __version__)
            ids = self._ids = _ChosenIds(getattr(self._replayer, "id_generator", None))
            if ids.fallback is None:
                log.debug("telemetry: this tracer provider chooses its own span ids; the "
                          "OpenTelemetry ids differ from the event log's")
            else:
                self._replayer.id_generator = ids
        return ids

    def force_flush(self) -> None:
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:
                pass


class _ChosenIds:
    """An OpenTelemetry id generator that returns the span id it was given."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.span_id: int | None = None

    def generate_span_id(self) -> int:
        if self.span_id is not None:
            return self.span_id
        return self.fallback.generate_span_id()

    def generate_trace_id(self) -> int:  # replayed spans all have a parent: never asked
        return self.fallback.generate_trace_id()
