"""``asyncflow-hpc run SCRIPT``: run a campaign script with settings from the command line.

Scripts that create their engine without a backend (``await WorkflowEngine.create()``) read
``ASYNCFLOW_HPC_*`` environment variables; this verb sets them from its flags and runs the
script as ``__main__`` with its own arguments after ``--``. Nothing in the script changes
between a laptop run, a dry run and a run on a cluster.
"""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import sys
import traceback
from pathlib import Path

import click

from ..attachments import claim, claimed_elsewhere
from ..backends import BACKENDS
from ..errors import BackendError, ConfigurationError, JournalError, UnsafePathError
from .submit import with_hpc_options

_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def default_journal(script: str, campaign_id: str | None = None) -> Path:
    """Where ``--resume`` finds the journal of an earlier run of SCRIPT: in
    ``.asyncflow-hpc/`` of the current folder, named after the campaign id or else after the
    script's absolute path (``exp1/campaign.py`` and ``exp2/campaign.py`` do not share one).
    The script's content is not part of the name: a script fixed after a crash resumes."""
    if campaign_id:
        if not _CAMPAIGN_ID.fullmatch(campaign_id):
            raise click.BadParameter(
                f"{campaign_id!r}: use letters, digits and _ . + - (at most 100)",
                param_hint="--campaign-id")
        name = campaign_id
    else:
        real = os.path.realpath(script)
        digest = hashlib.sha256(real.encode(errors="surrogateescape")).hexdigest()[:12]
        name = f"{Path(script).stem}-{digest}"
    return Path(".asyncflow-hpc") / f"{name}.journal.jsonl"


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="Backend for engines created without one (default: $ASYNCFLOW_HPC_BACKEND, "
                   "else local).")
@click.option("--resource", default=None,
              help="RADICAL-Pilot resource for --backend radical (e.g. local.localhost).")
@click.option("--journal", "journal", type=click.Path(dir_okay=False), default=None,
              help="Record every finished task here (a new journal unless --resume).")
@click.option("--resume", is_flag=True,
              help="Reuse results recorded by an earlier run (default journal: "
                   ".asyncflow-hpc/<script>-<hash of its path>.journal.jsonl); only "
                   "unfinished tasks, and tasks whose function changed, run. Refused when "
                   "there is no journal to resume.")
@click.option("--resume-if-any", is_flag=True,
              help="Like --resume, but start a new journal when there is none to resume "
                   "(for batch jobs that may be requeued).")
@click.option("--ignore-code-changes", is_flag=True,
              help="With --resume: reuse a result even if the task's function changed since "
                   "(match by name and arguments only).")
@click.option("--campaign-id", default=None, metavar="ID",
              help="Name the default journal after ID instead of the script's path "
                   "(.asyncflow-hpc/ID.journal.jsonl).")
@click.option("--telemetry", type=click.Path(dir_okay=False), default=None,
              help="Write the RHAPSODY JSONL event log here (read it with 'asyncflow-hpc report').")
@click.option("--dashboard", default=None, metavar="[HOST:]PORT",
              help="Serve a live page of the run (127.0.0.1 unless HOST is given; port 0: any "
                   "free one); its URL, with an access token, is printed. Switches telemetry "
                   "on (needs: pip install 'asyncflow-hpc[dashboard]').")
@click.option("--progress", type=click.Choice(["auto", "rich", "plain", "off"]), default="auto",
              show_default=True,
              help="Live progress: a display on a terminal, periodic log lines otherwise.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (same as --progress off).")
@click.option("--debug", is_flag=True,
              help="On an error in the script, show the whole traceback, not one line.")
def run_command(script: str, script_args: tuple[str, ...], backend: str | None,
                resource: str | None, journal: str | None, resume: bool,
                resume_if_any: bool, ignore_code_changes: bool, campaign_id: str | None,
                telemetry: str | None, dashboard: str | None, progress: str, quiet: bool,
                debug: bool) -> None:
    """Run SCRIPT, a Python campaign, with the chosen backend and options.

    Engines the script creates without a backend get one from these flags. --site S runs
    the tasks on RADICAL-Pilot with a pilot submitted as a batch job on site S (login-node
    mode); --in-allocation, inside a batch job, starts the pilot on the job's own nodes.
    Arguments after SCRIPT (use -- before ones that start with a dash) are passed to it.

    \b
    Examples:
      asyncflow-hpc run campaign.py                          # local backend
      asyncflow-hpc run campaign.py --site mycluster --nodes 2 --runtime 60
      asyncflow-hpc run campaign.py --in-allocation          # inside sbatch/qsub
      asyncflow-hpc run campaign.py --resume -- --samples 10
    """
    env = os.environ
    if backend:
        env["ASYNCFLOW_HPC_BACKEND"] = backend
    if resource:
        env["ASYNCFLOW_HPC_RESOURCE"] = resource
    # a campaign started from a task of another one inherits that one's journal and log
    # variables: they are not for this run (see asyncflow_hpc.attachments)
    for var in claimed_elsewhere():
        env.pop(var, None)
    # every run keeps a journal, so that a crashed run can always be resumed
    # absolute: a script that changes its folder still finds them
    journal = os.path.abspath(journal or env.get("ASYNCFLOW_HPC_JOURNAL")
                              or default_journal(script, campaign_id))
    telemetry = telemetry or env.get("ASYNCFLOW_HPC_TELEMETRY")
    if telemetry:
        telemetry = os.path.abspath(telemetry)
    try:
        recorded = _prepare_journal(Path(journal))
    except (JournalError, UnsafePathError) as exc:
        _fail(exc)
    except OSError as exc:
        _fail(f"JournalError: cannot use journal {journal}: {exc.strerror or exc}")
    if resume and not recorded:
        _fail(f"--resume: no journal to resume at {journal} (no earlier run of this "
              "script recorded a finished task there); run without --resume to start a new "
              "one, use --resume-if-any, or name the journal with --journal PATH")
    resume = (resume or resume_if_any) and bool(recorded)
    if resume:
        click.echo(f"asyncflow-hpc: resuming from {journal} ({recorded:,} recorded results)",
                   err=True)
    env["ASYNCFLOW_HPC_JOURNAL"] = journal
    mine = {"ASYNCFLOW_HPC_JOURNAL": journal}
    # without --resume the first engine starts a new journal (the earlier one is moved
    # aside when its first result is recorded, and the run says where to)
    mine["ASYNCFLOW_HPC_JOURNAL_NEW"] = "0" if resume else "1"
    mine["ASYNCFLOW_HPC_JOURNAL_CODE"] = "0" if ignore_code_changes else "1"
    env.update(mine)
    if telemetry:
        env["ASYNCFLOW_HPC_TELEMETRY"] = telemetry
        mine["ASYNCFLOW_HPC_TELEMETRY"] = telemetry
    if dashboard:
        from ..dashboard import parse_address

        try:
            parse_address(dashboard)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--dashboard") from None
        env["ASYNCFLOW_HPC_DASHBOARD"] = mine["ASYNCFLOW_HPC_DASHBOARD"] = dashboard
    claim(mine)  # this process's engines use them; its tasks' own campaigns do not
    env["ASYNCFLOW_HPC_PROGRESS"] = "off" if quiet else progress
    sys.argv = [script, *script_args]
    script_dir = os.path.dirname(os.path.abspath(script))
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    try:
        runpy.run_path(script, run_name="__main__")
    except (ConfigurationError, BackendError, JournalError, UnsafePathError) as exc:
        # bad input, an unusable backend or journal: the message says what; a traceback
        # adds nothing
        if debug:
            raise
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("asyncflow-hpc: interrupted; finished tasks are in the journal, "
                   "continue with --resume", err=True)
        sys.exit(130)
    except Exception as exc:  # the script's own error: where, and what, in one line
        if debug:
            raise
        click.echo(f"asyncflow-hpc: {script_error(exc, script)}\n"
                   "  (the whole traceback: asyncflow-hpc run --debug ...)", err=True)
        sys.exit(1)


def script_error(exc: BaseException, script: str) -> str:
    """``file:line: Type: message`` for an error of the campaign script: a syntax error's
    own place, else the deepest frame of the script itself (or of code beside it)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        text = (exc.text or "").strip()
        return (f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
                + (f"\n    {text}" if text else ""))
    folder = os.path.dirname(os.path.abspath(script))
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = os.path.abspath(frame.filename)
        if path == os.path.abspath(script) or (
                path.startswith(folder + os.sep) and not path.startswith(package)
                and "site-packages" not in path):
            where = f"{frame.filename}:{frame.lineno}: "
    message = str(exc).strip()
    return f"{where}{type(exc).__name__}" + (f": {message}" if message else "")


def _fail(exc: BaseException | str) -> None:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    click.echo(f"asyncflow-hpc: {text}", err=True)
    sys.exit(2)


# --site/--site-file/--nodes/--runtime/--in-allocation: they set ASYNCFLOW_HPC_* variables
run_command = with_hpc_options(run_command)


def _prepare_journal(path: Path) -> int:
    """Refuse at once a journal another run holds or a link; the number of results it
    holds (lines). Nothing is moved here: the engine moves an earlier journal aside when a
    new run records its first result, so a run that fails before that leaves it alone."""
    from ..journal import lock_journal

    fd = lock_journal(path)  # creates the folder 0700; checks it and the lock file
    try:
        if path.is_symlink():
            raise UnsafePathError(f"refusing to open {path}: it is a symbolic link", str(path))
        if not path.exists():
            return 0
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.startswith(b'{"k":'))
    finally:
        os.close(fd)
