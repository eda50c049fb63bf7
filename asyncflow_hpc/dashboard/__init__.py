"""A live dashboard for a running campaign, in the browser.

``WorkflowEngine.create(dashboard="127.0.0.1:8787")`` (or ``asyncflow-hpc run --dashboard
PORT``, or ``ASYNCFLOW_HPC_DASHBOARD``) serves the page of that engine from its own process,
fed by the engine (:mod:`.live`); ``asyncflow-hpc dashboard EVENTS.jsonl`` serves the same
page from a telemetry log that another process is still writing, or from a finished one
(:mod:`.logfile`). Either way the URL printed at start carries a random access token, as
Jupyter's does, and the server listens on 127.0.0.1 unless told otherwise (:mod:`.server`).

Needs the ``dashboard`` extra (``pip install 'asyncflow-hpc[dashboard]'``: aiohttp); the
page's chart library (uPlot, MIT) ships with the package, nothing is fetched from elsewhere.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

from ..errors import ConfigurationError
from .server import parse_address

__all__ = ["attach", "new_token", "parse_address", "serve_log"]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _need_aiohttp() -> None:
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        raise ConfigurationError("the dashboard needs aiohttp, which is not installed: "
                                 "pip install 'asyncflow-hpc[dashboard]'")


def _address(address: str | None) -> tuple[str, int]:
    try:
        return parse_address(address)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _listen_error(host: str, port: int, exc: OSError) -> ConfigurationError:
    return ConfigurationError(f"dashboard: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}")


def attach(engine: Any, address: str | None) -> Any:
    """Serve ``engine``'s live page (must run on its loop); says where on stderr and in
    ``engine.dashboard_url``. The returned add-on's ``await close()`` stops it."""
    _need_aiohttp()
    host, port = _address(address)
    from .live import LiveFeed

    try:
        feed = LiveFeed(engine, host, port, new_token())
    except OSError as exc:
        raise _listen_error(host, port, exc) from None
    engine.dashboard_url = feed.url
    print(f"asyncflow-hpc: dashboard at {feed.url}", file=sys.stderr, flush=True)
    return feed


def serve_log(log_path: str | os.PathLike[str], address: str | None = None,
              token: str | None = None) -> Any:
    """Serve the page of a telemetry log (it may not exist yet); returns the running
    :class:`~.logfile.LogDashboard` (``.url``, ``.close()``)."""
    _need_aiohttp()
    host, port = _address(address)
    from .logfile import LogDashboard

    try:
        return LogDashboard(log_path, host, port, token or new_token())
    except OSError as exc:
        raise _listen_error(host, port, exc) from None
