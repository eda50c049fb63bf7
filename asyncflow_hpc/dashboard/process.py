"""The live dashboard's server process: it serves the page of a running engine.

The campaign binds the listening socket (so the URL is known and a taken port is an error
at once) and hands it over; it writes the page's state to a file of a private folder twice
a second (:mod:`.live`); this process serves it. HTTP, and the import of the web framework,
happen here, on another core than the campaign's, never holding the campaign's GIL.

    python -m asyncflow_hpc.dashboard.process --fd N --state FILE   (token in the env)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

from .server import DashboardServer, serve

__all__ = ["TOKEN_ENV", "main"]

TOKEN_ENV = "ASYNCFLOW_HPC_DASHBOARD_TOKEN"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asyncflow_hpc.dashboard.process")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    token = os.environ.pop(TOKEN_ENV, "")
    if len(token) < 16:
        sys.exit(f"{TOKEN_ENV} must hold the access token")
    try:
        os.nice(10)  # beside the campaign, the page waits, not the tasks
    except OSError:
        pass
    sock = socket.socket(fileno=args.fd)

    def state() -> bytes:
        try:
            with open(args.state, "rb") as fh:
                return fh.read()
        except OSError:
            return b"{}"

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)

        async def watch_parent() -> None:  # the campaign ended without closing us
            while os.getppid() == args.parent or not args.parent:
                await asyncio.sleep(1.0)
            stop.set()

        await serve(DashboardServer(token, state), sock, stop, watch_parent)

    asyncio.run(run())
    folder = os.path.dirname(os.path.abspath(args.state))
    if args.parent and os.getppid() != args.parent \
            and os.path.basename(folder).startswith("asyncflow-hpc-dashboard-"):
        import shutil  # the campaign was killed: its state folder is ours to remove

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
