"""The dashboard's web server: the page, its files and ``/api/state``, on a thread of its own.

Safe on a shared login node: it binds 127.0.0.1 unless told otherwise; every request needs
the access token (in the URL's ``token=``, or the cookie the page gets with it), else 403;
it answers GET only and serves the page's own files (a fixed list) and the state, nothing
else of the file system; nothing it offers changes the campaign. The state comes from a
function (``state() -> bytes``, JSON) that it calls at most twice a second; the server never
touches the campaign's objects, so it can run on a thread beside the engine's loop.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

__all__ = ["DashboardServer", "ServerThread", "listen", "parse_address", "serve", "url_of"]

COOKIE = "afhpc_dashboard"
STATE_EVERY = 0.5  # seconds: the state is made at most this often, whoever asks
#: the files the page is made of: URL name -> (package file, content type)
STATIC = {
    "app.js": ("app.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
    "uPlot.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: it never leaves in a Referer
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:",
}


def parse_address(text: str | None, default_port: int = 8787) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``HOST`` -> (host, port); host 127.0.0.1 unless given."""
    text = (text or "").strip()
    host, port = "127.0.0.1", default_port
    if not text:
        return host, port
    if text.isdigit():
        port = int(text)
    elif ":" in text:
        host, _, p = text.rpartition(":")
        if not p.isdigit():
            raise ValueError(f"dashboard address {text!r}: the port must be a number")
        port = int(p)
        host = host.strip("[]") or "127.0.0.1"
    else:
        host = text
    if not 0 <= port <= 65535:
        raise ValueError(f"dashboard address {text!r}: port {port} is not 0..65535")
    return host, port


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class DashboardServer:
    """The routes of one dashboard; see the module docstring."""

    def __init__(self, token: str, state: Callable[[], bytes]) -> None:
        self.token = token
        self._make_state = state
        self._state = b""
        self._state_at = 0.0
        self.requests = 0

    def _allowed(self, request: Any) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _denied(self) -> Any:
        from aiohttp import web

        return web.Response(status=403, text="403: this dashboard needs its access token "
                            "(the URL printed when it started)\n", headers=HEADERS)

    async def index(self, request: Any) -> Any:
        from aiohttp import web

        if not self._allowed(request):
            return self._denied()
        resp = web.Response(body=_static("index.html"), content_type="text/html",
                            headers=HEADERS)
        resp.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return resp

    async def static(self, request: Any) -> Any:
        from aiohttp import web

        if not self._allowed(request):
            return self._denied()
        entry = STATIC.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        return web.Response(body=_static(entry[0]), content_type=entry[1], headers=HEADERS)

    async def state(self, request: Any) -> Any:
        from aiohttp import web

        if not self._allowed(request):
            return self._denied()
        self.requests += 1
        now = time.monotonic()
        if now - self._state_at >= STATE_EVERY or not self._state:
            self._state = self._make_state()
            self._state_at = now
        return web.Response(body=self._state, content_type="application/json",
                            headers=HEADERS)

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/static/{name}", self.static)
        return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); OSError if not possible."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, token: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


async def serve(server: DashboardServer, sock: socket.socket, stop: asyncio.Event,
                background: Callable[[], Awaitable[None]] | None = None,
                started: Callable[[], None] | None = None) -> None:
    """Serve on ``sock`` until ``stop`` is set; ``background`` runs beside (the log follower)."""
    from aiohttp import web

    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    extra = asyncio.ensure_future(background()) if background else None
    if started is not None:
        started()
    try:
        await stop.wait()
    finally:
        if extra is not None:
            extra.cancel()
        await runner.cleanup()


class ServerThread:
    """Serves a :class:`DashboardServer` on its own thread and event loop (the log mode).

    The socket is bound here, in the caller's thread, so a taken port is an error at once
    and :attr:`url` is known before the first request."""

    def __init__(self, server: DashboardServer, host: str, port: int,
                 background: Callable[[], Awaitable[None]] | None = None) -> None:
        self.sock = listen(host, port)
        self.url = url_of(self.sock, server.token)
        self.port = self.sock.getsockname()[1]
        self._server = server
        self._background = background
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asyncflow-hpc-dashboard",
                                        daemon=True)
        self._thread.start()
        self._started.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        try:
            self._loop.run_until_complete(serve(self._server, self.sock, self._stop,
                                                self._background, self._started.set))
        finally:
            self._loop.close()

    def close(self) -> None:
        """Stop serving and join the thread."""
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self.sock.close()
