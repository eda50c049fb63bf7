"""Optional bridge to OpenTelemetry (extra ``otel``: opentelemetry-api + opentelemetry-sdk).

When OpenTelemetry is importable and the application has configured a tracer provider the
usual way (``trace.set_tracer_provider(...)`` with its exporters, or ``opentelemetry-instrument``
/ the ``OTEL_*`` environment), the telemetry's spans are also started and ended through it, with
the same start and end times and attributes. Without OpenTelemetry nothing here is imported.
``ASYNCFLOW_HPC_OTEL=0`` switches the bridge off.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from .._version import __version__

__all__ = ["OtelBridge", "find_bridge"]


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

    def force_flush(self) -> None:
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:
                pass
