"""A spec's translation for RADICAL-Pilot: TaskDescription fields, staging, the remote call.

Nothing here imports radical.pilot (the caller passes RP's constants where they are needed).
The input was checked before (``RadicalPilotBackend.check_task_description``).
"""

from __future__ import annotations

import base64
import builtins
import os
import re
import types
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any

from ...descriptions import ENGINE_KEYS
from ...errors import ConfigurationError, MissingOutputError
from ...hpc.rank_output import RP_OMPI_SESSION_DIR, rp_post_launch, rp_pre_exec
from ...tasks import TaskKind, TaskSpec
from .keys import RENAMED

__all__ = [
    "REMOTE_CALL", "RemoteError", "clear_stale_inputs", "executable_fields",
    "missing_output_error", "pack_call", "rp_uid_for", "staging_fields", "stdio_fields",
    "task_description", "unpack_result",
]

# ----------------------------------------------------------------------------- task descriptions

def task_description(spec: TaskSpec) -> dict[str, Any]:
    """The user part of an RP TaskDescription for ``spec`` (no uid, mode, executable).

    The keys were checked by :meth:`RadicalPilotBackend.check_task_description`; here they
    are only renamed and their values put in the shape RP wants.
    """
    out: dict[str, Any] = {}
    for key, value in spec.description.items():
        if key in ENGINE_KEYS or key == "warm" or value is None:
            continue
        name = RENAMED.get(key, key)
        if name == "environment":
            env = dict(out.get("environment") or {})
            env.update({str(k): str(v) for k, v in value.items()})
            value = env
        elif name == "sandbox":
            value = os.path.abspath(os.fspath(value))
        elif name in ("pre_exec", "post_exec", "pre_launch", "post_launch") and isinstance(
                value, str):
            value = [value]
        out[name] = value
    if spec.timeout and "timeout" not in out:
        out["timeout"] = float(spec.timeout)
    if "name" not in out and spec.name:
        out["name"] = str(spec.name)
    ranks = int(out.get("ranks") or 1)
    if ranks > 1 and spec.kind is TaskKind.EXECUTABLE:
        _rank_output(spec, out, ranks)
    return out


def _rank_output(spec: TaskSpec, out: dict[str, Any], ranks: int) -> None:
    """Each rank writes to files of its own (ours first in ``pre_exec``, so the user's
    pre_exec lines are the rank's too); after the launcher, ``post_launch`` appends them,
    tagged ``RANK: ``, to the task's stdout and stderr (ours first: the user's post_launch sees
    the merged files). See :mod:`asyncflow_hpc.hpc.rank_output`."""
    stdout, stderr = spec.stdio or (out.get("stdout"), out.get("stderr"))
    out["pre_exec"] = [rp_pre_exec(), *(out.get("pre_exec") or ())]
    out["pre_launch"] = [RP_OMPI_SESSION_DIR, *(out.get("pre_launch") or ())]
    out["post_launch"] = [rp_post_launch(ranks, stdout, stderr), *(out.get("post_launch") or ())]


def executable_fields(spec: TaskSpec) -> tuple[str, list[str]]:
    """(executable, arguments) of an EXECUTABLE spec; shell commands run under /bin/sh -c."""
    cmd = spec.command
    if spec.shell or isinstance(cmd, str):
        text = cmd if isinstance(cmd, str) else " ".join(cmd or [])
        if not text.strip():
            raise ValueError(f"task {spec.name!r} produced an empty command")
        return "/bin/sh", ["-c", text]
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in (cmd or [])]
    if not argv:
        raise ValueError(f"task {spec.name!r} produced an empty command")
    return argv[0], argv[1:]


# ----------------------------------------------------------------------------- files

#: RP's launch script writes ``1> PATH 2> PATH`` and its stagers run ``cp -r SRC TGT`` without
#: quoting: a path RP puts into a shell line must not need quoting
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./~-]+")


def _shell_safe(path: str, what: str, spec: TaskSpec) -> str:
    if not _SHELL_SAFE.fullmatch(path):
        raise ConfigurationError(
            f"{what} of task {spec.name!r} is {path!r}: RADICAL-Pilot writes such paths into "
            "shell lines unquoted, so they must not contain spaces or shell characters; "
            "choose a work_dir without them")
    return path


def stdio_fields(spec: TaskSpec, fields: Mapping[str, Any]) -> dict[str, str]:
    """``stdout`` / ``stderr`` of an executable with ``capture_stdio=True``: the engine's paths.

    RP's executor takes an absolute ``stdout``/``stderr`` as is (a relative one goes into the
    task sandbox) and still reads the files back for ``task.stdout`` / ``task.stderr``.
    """
    if spec.stdio is None:
        return {}
    for key in ("stdout", "stderr"):
        if fields.get(key):
            raise ConfigurationError(
                f"task {spec.name!r} has capture_stdio=True, which sends its {key} to "
                f"{spec.stdio[key == 'stderr']}; task_description[{key!r}] would send it "
                "elsewhere: give one or the other")
    out, err = spec.stdio
    return {"stdout": _shell_safe(out, "the stdout file", spec),
            "stderr": _shell_safe(err, "the stderr file", spec)}


#: URL schemes RP's agent fetches itself (``rp.DOWNLOAD``, with ``requests``)
_DOWNLOAD_SCHEMES = ("http", "https")


def staging_fields(spec: TaskSpec, fields: Mapping[str, Any],
                   actions: Mapping[str, str]) -> dict[str, Any]:
    """``sandbox`` and ``input_staging`` of a task with a :class:`~asyncflow_hpc.files.FilePlan`.

    The task runs in the plan's ``task_dir`` (a ``sandbox``/``cwd`` of the user's own wins, as
    on the local backend; the inputs still go to ``task_dir``). ``actions`` maps ``link``,
    ``transfer`` and ``download`` to RP's constants: another task's output is *linked* by the
    agent (RP makes a hard link: same file system), a file from outside the campaign is
    *transferred* by RP's client-side stager (it lives on the submitting machine), an
    ``http(s)`` URL is *downloaded* by the agent. The user's own ``input_staging`` follows ours.
    """
    plan = spec.files
    if plan is None:
        return {}
    task_dir = plan.task_dir
    sandbox = fields.get("sandbox") or task_dir
    in_task_dir = os.path.normpath(sandbox) == os.path.normpath(task_dir)
    staging = []
    for item in plan.inputs:
        name = item.name
        target = f"task:///{name}" if in_task_dir else os.path.join(task_dir, name)
        _shell_safe(os.path.join(task_dir, name), f"input {name!r}", spec)
        source = item.source
        if item.action == "link":
            action = actions["link"]
        else:
            scheme = urllib.parse.urlparse(source).scheme if "://" in source else ""
            if scheme in _DOWNLOAD_SCHEMES:
                action = actions["download"]
            elif scheme in ("", "file"):
                if scheme:
                    source = urllib.parse.unquote(urllib.parse.urlparse(source).path)
                action = actions["transfer"]
            else:
                raise ConfigurationError(
                    f"InputFile {source!r} of task {spec.name!r}: RADICAL-Pilot stages "
                    "files, file:// and http(s):// URLs only; fetch it in an earlier task "
                    "and pass it on as an OutputFile")
            _shell_safe(source, f"input {name!r}", spec)
        staging.append({"source": source, "target": target, "action": action})
    user = fields.get("input_staging")
    if user:
        staging.extend(user if isinstance(user, (list, tuple)) else [user])
    out: dict[str, Any] = {"sandbox": sandbox}
    if staging:
        out["input_staging"] = staging
    return out


def clear_stale_inputs(spec: TaskSpec) -> None:
    """Remove inputs an earlier attempt staged into ``task_dir``: RP's agent links with
    ``os.link``, which fails on an existing target (a retry or a resubmission)."""
    plan = spec.files
    if plan is None or not plan.inputs or not os.path.isdir(plan.task_dir):
        return
    for item in plan.inputs:
        target = os.path.join(plan.task_dir, item.name)
        if os.path.lexists(target):
            os.unlink(target)


def missing_output_error(spec: TaskSpec) -> MissingOutputError | None:
    """The error of a finished task whose declared outputs are not in its ``task_dir``."""
    plan = spec.files
    if plan is None or not plan.outputs:
        return None
    missing = [n for n in plan.outputs if not os.path.exists(os.path.join(plan.task_dir, n))]
    return MissingOutputError(spec.name, missing, plan.task_dir) if missing else None


_UID_BAD = re.compile(r"[^A-Za-z0-9._-]")


def rp_uid_for(spec_uid: str, taken: Collection[str]) -> str:
    """An RP task uid for ``spec_uid``: the same when possible (it names the sandbox folder).

    RP refuses a uid twice per task manager, and retries/resubmissions reuse the spec uid,
    so later attempts get a ``.rN`` suffix.
    """
    base = _UID_BAD.sub("_", spec_uid)[:120] or "task"
    if base not in taken:
        return base
    n = 1
    while f"{base}.r{n}" in taken:
        n += 1
    return f"{base}.r{n}"


# ----------------------------------------------------------------------------- function tasks

_OK, _MISSING = "ok", "missing"


def _remote_call(payload: str) -> str:  # pragma: no cover - runs inside the raptor worker
    # Self-contained on purpose (see REMOTE_CALL): only the standard library and dill, which
    # every RADICAL-Pilot installation has. Results and exceptions travel pickled, so tuples,
    # numpy arrays and user exception classes survive RP's msgpack transport unchanged.
    import asyncio
    import base64
    import os
    import sys
    import threading
    import traceback
    import types

    import dill

    def dump(obj: object) -> str:
        return base64.b64encode(dill.dumps(obj)).decode("ascii")

    def worker_loop() -> asyncio.AbstractEventLoop:
        # One loop per process, created on first use and running forever in a daemon thread;
        # kept in sys.modules so that later calls in this process find it. A forked child
        # inherits the object but not the thread: it gets a loop of its own.
        holder = sys.modules.get("__asyncflow_remote_loop__")
        if holder is None:
            fresh = types.ModuleType("__asyncflow_remote_loop__")
            fresh.lock = threading.Lock()
            fresh.loop = fresh.thread = fresh.pid = None
            holder = sys.modules.setdefault("__asyncflow_remote_loop__", fresh)
            if holder is fresh and hasattr(os, "register_at_fork"):
                def forget() -> None:  # the lock may have been held by a thread not copied
                    fresh.lock = threading.Lock()
                    fresh.loop = fresh.thread = fresh.pid = None
                os.register_at_fork(after_in_child=forget)
        with holder.lock:
            loop = holder.loop
            if loop is None or holder.pid != os.getpid() or loop.is_closed() \
                    or not holder.thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name="asyncflow-hpc-remote-loop",
                                          daemon=True)
                thread.start()
                ready.wait()
                holder.loop, holder.thread, holder.pid = loop, thread, os.getpid()
        return loop

    async def guarded(coro):  # a body must never stop the shared loop
        try:
            return await coro
        except (KeyboardInterrupt, SystemExit) as exc:
            raise RuntimeError(f"task body raised {type(exc).__name__}") from exc

    try:
        call = dill.loads(base64.b64decode(payload))
        func, args, kwargs = call[:3]
        check = call[3] if len(call) > 3 else None
        value = func(*args, **kwargs)
        if asyncio.iscoroutine(value):
            # the worker calls us inside its own running loop: the coroutine goes to this
            # process's loop (another thread), and we wait for its result here
            value = asyncio.run_coroutine_threadsafe(guarded(value), worker_loop()).result()
        if check is not None:  # (task name, task dir, declared outputs)
            name, task_dir, outputs = check
            missing = [n for n in outputs if not os.path.exists(os.path.join(task_dir, n))]
            if missing:
                return dump(("missing", name, missing, task_dir))
        return dump(("ok", value))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the client
        tb = traceback.format_exc()
        try:
            blob = dump(exc)
        except Exception:  # unpicklable exception: send its text only
            blob = None
        return dump(("err", blob, f"{type(exc).__name__}: {exc}", tb))


#: ``_remote_call`` rebuilt outside any importable module, so dill ships it by value: the
#: raptor worker needs neither asyncflow-hpc nor this file to run it.
REMOTE_CALL = types.FunctionType(
    _remote_call.__code__, {"__builtins__": builtins, "__name__": "__asyncflow_remote__"},
    "asyncflow_remote_call")
REMOTE_CALL.__module__ = "__asyncflow_remote__"
REMOTE_CALL.__qualname__ = "asyncflow_remote_call"


def pack_call(spec: TaskSpec) -> str:
    """Pickle a FUNCTION spec's call for REMOTE_CALL."""
    import dill

    assert spec.kind is TaskKind.FUNCTION and spec.function is not None
    call: tuple = (spec.function, tuple(spec.args), dict(spec.kwargs))
    plan = spec.files
    if plan is not None and plan.outputs:  # the worker checks them where the body ran
        call += ((spec.name, plan.task_dir, list(plan.outputs)),)
    try:
        # recurse: functions from __main__ carry the globals they use, not the whole script
        data = dill.dumps(call, recurse=True)
    except Exception:
        data = dill.dumps(call)
    return base64.b64encode(data).decode("ascii")


class RemoteError(Exception):
    """A function task's exception that could not be sent back as itself."""


def unpack_result(value: Any) -> tuple[bool, Any]:
    """(True, value) or (False, exception) from REMOTE_CALL's return value."""
    import dill

    if not isinstance(value, str):
        return True, value  # not ours (should not happen); hand it over as is
    try:
        obj = dill.loads(base64.b64decode(value))
    except Exception as exc:
        return False, RemoteError(f"cannot unpickle the function task's result: {exc!r}")
    if obj[0] == _OK:
        return True, obj[1]
    if obj[0] == _MISSING:
        _, name, missing, task_dir = obj
        return False, MissingOutputError(name, missing, task_dir)
    _, blob, text, tb = obj
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = dill.loads(base64.b64decode(blob))
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(text)
    try:
        exc.add_note(f"remote traceback (RADICAL-Pilot raptor worker):\n{tb.rstrip()}")
    except Exception:
        pass
    return False, exc
