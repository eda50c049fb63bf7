"""``asyncflow-hpc dashboard EVENTS.jsonl``: the live page of a campaign's telemetry log.

For a campaign that runs elsewhere — a batch job writing ``--telemetry EVENTS.jsonl`` on a
shared file system — watched from the login node (through an SSH tunnel from a laptop:
``ssh -L 8787:127.0.0.1:8787 login``), and for a finished log.
"""

from __future__ import annotations

import signal
import sys

import click


@click.command("dashboard")
@click.argument("events", type=click.Path(dir_okay=False))
@click.option("--address", default="127.0.0.1:8787", show_default=True, metavar="[HOST:]PORT",
              help="Where to listen (port 0: any free port). Another host than 127.0.0.1 "
                   "makes the page reachable from other machines (the token still guards it).")
def dashboard_command(events: str, address: str) -> None:
    """Serve a live dashboard of EVENTS.jsonl, a telemetry log that another process may still
    be writing (it need not exist yet). Prints the URL with its access token; Ctrl-C stops."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        raise click.ClickException("the dashboard needs aiohttp, which is not installed: "
                                   "pip install 'asyncflow-hpc[dashboard]'")
    from ..dashboard import parse_address, serve_log
    from ..errors import ConfigurationError

    try:
        host, _ = parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--address") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"asyncflow-hpc: listening on {host}: other machines can reach the page "
                   "(anyone with the URL's token can read it)", err=True)
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken by sigwait below (threads too)
    try:
        dash = serve_log(events, address)
    except ConfigurationError as exc:
        click.echo(f"asyncflow-hpc {exc}", err=True)
        sys.exit(2)
    click.echo(f"asyncflow-hpc: dashboard of {events} at {dash.url}", err=True)
    try:
        signal.sigwait(stops)  # until Ctrl-C or kill
    finally:
        dash.close()
