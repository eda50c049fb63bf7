"""Add-ons the engine sets up from its arguments or the environment.

The engine knows only :func:`configure`; what each add-on does lives in its own module,
imported only when switched on so that a plain run imports nothing extra. Each sees the
engine through one public door: the journal is the engine's result store (a
:class:`~asyncflow_hpc.journal.ResultStore` it asks before a task runs and tells after);
telemetry reads the engine's tape (``WorkflowEngine.attach_tape``); the progress display
polls ``WorkflowEngine.task_states()`` on a timer. Each has an ``async close()`` that the
engine awaits at shutdown (the journal last).

| argument    | environment variable        | module                     |
|-------------|-----------------------------|----------------------------|
| telemetry=  | ASYNCFLOW_HPC_TELEMETRY     | asyncflow_hpc.telemetry    |
| progress=   | ASYNCFLOW_HPC_PROGRESS      | asyncflow_hpc.progress     |
| journal=    | ASYNCFLOW_HPC_JOURNAL       | asyncflow_hpc.journal      |

The journal and telemetry variables name files that belong to one campaign, but the
environment is inherited by every task and every program a task starts — a campaign
started from a task (``asyncflow-hpc run child.py``) would read the parent's journal and
truncate its log. So the process whose engine uses such a variable claims it: it records
``{variable: [pid, value]}`` in ``ASYNCFLOW_HPC_CLAIMED``, and another process ignores a
variable whose value is the one claimed by another pid (a child given a different value
uses that). ``asyncflow-hpc run`` claims what it sets, and drops what it inherited claimed.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .journal import ResultStore

__all__ = ["Addons", "Attachment", "claim", "claimed_elsewhere", "configure"]

CLAIM_VAR = "ASYNCFLOW_HPC_CLAIMED"
FILE_VARS = ("ASYNCFLOW_HPC_JOURNAL", "ASYNCFLOW_HPC_TELEMETRY", "ASYNCFLOW_HPC_DASHBOARD")


def _claims(env: MutableMapping[str, str]) -> dict[str, list]:
    try:
        claims = json.loads(env.get(CLAIM_VAR) or "{}")
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def claimed_elsewhere(env: MutableMapping[str, str] | None = None) -> list[str]:
    """The file variables of ``env`` that another process claimed with their present value
    (inherited from a parent campaign, not meant for this one)."""
    env = os.environ if env is None else env
    pid = os.getpid()
    out = []
    for var, claim_ in _claims(env).items():
        if (var in FILE_VARS and isinstance(claim_, list) and len(claim_) == 2
                and claim_[0] != pid and env.get(var) == claim_[1]):
            out.append(var)
    return out


def claim(values: dict[str, str], env: MutableMapping[str, str] | None = None) -> None:
    """Record that this process uses ``{variable: value}`` (see the module docstring)."""
    env = os.environ if env is None else env
    if not values:
        return
    claims = _claims(env)
    pid = os.getpid()
    claims.update({var: [pid, value] for var, value in values.items()})
    env[CLAIM_VAR] = json.dumps(claims, separators=(",", ":"))


def _from_env(var: str, used: dict[str, str]) -> str | None:
    value = os.environ.get(var)
    if not value or var in claimed_elsewhere():
        return None
    used[var] = value
    return value


class Attachment(Protocol):
    async def close(self) -> None: ...


class Addons(NamedTuple):
    journal: ResultStore | None  # asked before each task runs, told after it succeeds
    attachments: list[Attachment]  # closed at shutdown, last attached first


def _result_store(journal: Any, new: bool = False) -> tuple[ResultStore, bool]:
    """``journal=`` as a store, and whether it was opened here (a path) or given.

    ``ASYNCFLOW_HPC_JOURNAL_CODE=0`` (``run --ignore-code-changes``) matches recorded results
    by name and arguments only; ``new`` starts a new journal (see :class:`Journal`)."""
    from .journal import Journal, ResultStore
    from .switches import env_flag

    if isinstance(journal, (str, os.PathLike)):
        match_code = env_flag("ASYNCFLOW_HPC_JOURNAL_CODE", None, default=True)
        return Journal(journal, new=new, match_code=match_code), True
    if isinstance(journal, ResultStore):
        return journal, False
    raise ConfigurationError(
        f"journal= must be a path or a ResultStore (key_for, lookup, record, close), got "
        f"{type(journal).__name__}")


def configure(engine: Any, *, telemetry: Any = None, progress: Any = None,
              journal: Any = None, dashboard: Any = None) -> Addons:
    """Set up what the arguments (or, when absent, the environment) switch on."""
    out: list[Attachment] = []
    used: dict[str, str] = {}
    # the journal first: it is the one that refuses to start (held by another run, unsafe path)
    new = False
    if journal is None:
        journal = _from_env("ASYNCFLOW_HPC_JOURNAL", used)
        # set by ``asyncflow-hpc run`` without --resume: the run's first engine starts a new
        # journal; later engines of the same run add to it
        new = bool(journal) and os.environ.pop("ASYNCFLOW_HPC_JOURNAL_NEW", "") == "1"
    # not "if journal": a store may be empty (a Journal has a length)
    store, opened = ((None, False) if journal is None or journal == ""
                     else _result_store(journal, new))
    try:
        telemetry = (telemetry if telemetry is not None
                     else _from_env("ASYNCFLOW_HPC_TELEMETRY", used))
        dashboard = (dashboard if dashboard is not None
                     else _from_env("ASYNCFLOW_HPC_DASHBOARD", used))
        if dashboard is not None and not isinstance(dashboard, str):
            raise ConfigurationError(f"dashboard= must be '[HOST:]PORT', got {dashboard!r}")
        if dashboard:
            from .dashboard import attach as attach_dashboard

            # first in the list: closed last, so an open page sees the final counts
            out.append(attach_dashboard(engine, dashboard))
        if telemetry:
            from .telemetry import attach as attach_telemetry

            out.append(attach_telemetry(engine, telemetry))
        progress = progress if progress is not None else os.environ.get("ASYNCFLOW_HPC_PROGRESS")
        if progress and progress != "off":
            from .progress import attach as attach_progress

            out.append(attach_progress(engine, progress))
    except BaseException:
        if opened:  # the journal's lock must not outlive a start that failed
            store.release()  # type: ignore[union-attr]
        for attachment in out:  # a dashboard started before telemetry or progress failed
            stop = getattr(attachment, "stop", None)
            if stop is not None:
                stop()
        raise
    claim(used)
    return Addons(store, out)
