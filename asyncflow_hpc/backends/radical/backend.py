"""RADICAL-Pilot backend: tasks run in a pilot job (local fork, SLURM, PBS, ...).

This is the thin front the engine sees: it checks options and task descriptions, then hands
everything to ONE client object. Where RP's client runs (``client=``, or
``$ASYNCFLOW_HPC_RP_CLIENT``) decides which:

* ``"process"`` (default): :class:`~.process_parent.ProcessClient`, RP's client in a child
  process. RP's client threads decode every state update (msgpack, string conversions)
  while holding the GIL; in the engine's process a burst of updates stalls the event loop
  for 40-100 ms. In a child process they stall nobody.
* ``"thread"``: :class:`~.inprocess.InProcessClient`, in this process (the child process
  runs exactly that class too, on a loop of its own).

RP is never imported at module import time: ``import asyncflow_hpc`` stays cheap.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ...descriptions import ENGINE_KEYS, check_number, check_path, unknown_key
from ...errors import ConfigurationError
from ...tasks import TaskKind, TaskSpec, TaskState
from ..base import ExecutionBackend, Reporter
from .cores import cores_of
from .keys import RENAMED, RESERVED_KEYS, TASK_FIELDS, TD_ALIASES
from .options import ENV_RESOURCE, Options
from .warm import warm_reason
from .warm.dispatcher import Dispatcher

__all__ = ["RPClient", "RadicalPilotBackend"]


class RPClient(Protocol):
    """What the front asks of a client (:class:`~.inprocess.InProcessClient`,
    :class:`~.process_parent.ProcessClient`); none of it blocks the event loop."""

    pid: int | None  # of the client process, if RP's client runs in one
    pilot_uid: str | None
    session_uid: str | None
    timings: dict[str, float]

    async def start(self) -> None: ...
    def bind(self, reporter: Reporter) -> None: ...
    def submit(self, specs: Sequence[TaskSpec]) -> None: ...
    def cancel(self, uid: str) -> None: ...
    async def shutdown(self) -> None: ...
    async def wait_active(self) -> str: ...
    async def call(self, fn: Any, args: tuple) -> Any: ...
    def describe(self) -> dict[str, Any]: ...


class RadicalPilotBackend(ExecutionBackend):
    """Run tasks on a RADICAL-Pilot pilot.

    ``backend = await RadicalPilotBackend({"resource": "local.localhost", "cores": 4})`` or
    with keywords: ``RadicalPilotBackend(resource="anl.polaris", nodes=2, runtime=60,
    queue="debug", project="MYPROJ")``. Pilot keys are PilotDescription fields (``runtime`` in
    minutes; ``account`` is accepted for ``project``); an unknown key raises
    :class:`ConfigurationError` naming the right one.

    ``raptor={...}`` sizes the function-task executor (see ``options.RAPTOR_KEYS``); by
    default one master and one worker with about half the pilot's cores start on the first
    function task. ``on_pilot_failure="fail"`` fails unfinished tasks with
    :class:`PilotFailedError` when the pilot ends; ``"resubmit"`` starts a new pilot (at most
    ``max_pilot_restarts`` times) and requeues them. ``site_config`` adds or overrides RP
    resource configs: ``{"mysite.cluster": {...resource entry...}}``.

    ``client="process"`` (default; or ``$ASYNCFLOW_HPC_RP_CLIENT``) runs RP's client
    (session, managers, their threads) in a child process, so that RP's GIL-heavy threads
    never hold up the event loop; ``client="thread"`` runs it in this process. Both behave
    the same to the engine. Everything that can be checked without RP is checked here, at
    construction, before any process or thread starts. ``nice`` (default 10) lowers the CPU
    priority of RP's processes (not of the client process), so that the event loop gets a
    core first on a small machine.
    """

    name = "radical"
    #: ``warm``: False sends a task through RP's own path even when it is small
    task_keys = (TASK_FIELDS - RESERVED_KEYS) | frozenset(RENAMED) | {"stdin", "warm"}
    key_aliases = TD_ALIASES

    @classmethod
    def from_env(cls, work_dir: str | os.PathLike | None = None) -> RadicalPilotBackend:
        """A pilot as the environment describes it.

        A site (``$ASYNCFLOW_HPC_SITE``, set by ``asyncflow-hpc run --site`` or
        ``--in-allocation``) supplies the resource name, the generated RP resource config and
        the pilot's nodes, runtime, queue and project (see
        :func:`asyncflow_hpc.hpc.resources.radical_backend_options`); without a site,
        ``$ASYNCFLOW_HPC_RESOURCE`` names an RP resource.
        """
        options: dict[str, Any] = {}
        if work_dir is not None:
            options["work_dir"] = work_dir
        resource = os.environ.get(ENV_RESOURCE, "").strip()
        if os.environ.get("ASYNCFLOW_HPC_SITE", "").strip():
            from ...hpc.resources import radical_backend_options

            options.update(radical_backend_options())
            if resource and resource != options.get("resource"):
                raise ConfigurationError(
                    f"ASYNCFLOW_HPC_SITE={os.environ['ASYNCFLOW_HPC_SITE']!r} and "
                    f"{ENV_RESOURCE}={resource!r} both name where to run: give one "
                    "(--site or --resource)")
        elif resource:
            options["resource"] = resource
        return cls(**options)

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        *,
        raptor: Mapping[str, Any] | None = None,
        work_dir: str | os.PathLike | None = None,
        on_pilot_failure: str = "fail",
        max_pilot_restarts: int = 1,
        site_config: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
        nice: int = 10,
        client: str | None = None,
        warm: bool | Mapping[str, Any] | None = None,
        site: Any = None,
        in_allocation: bool = False,
        batch_options: tuple[str, Sequence[str]] | None = None,
        **pilot_keywords: Any,
    ) -> None:
        super().__init__()
        if name is not None:
            self.name = name
        if site is not None:  # a Site (or a site's name): resource, config, queue, options
            pilot_keywords, site_config, batch_options = _from_site(
                site, in_allocation, resources, pilot_keywords, site_config, batch_options)
        self.opts = Options.parse(
            resources, pilot_keywords, raptor=raptor, work_dir=work_dir,
            on_pilot_failure=on_pilot_failure, max_pilot_restarts=max_pilot_restarts,
            site_config=site_config, nice=nice, client=client, warm=warm,
            batch_options=batch_options)
        if self.opts.client == "process":
            from .process_parent import ProcessClient

            self._client: RPClient = ProcessClient(self.opts, self.name)
        else:
            from .inprocess import InProcessClient

            self._client = InProcessClient(self.opts, self.name)
        self._warm: Dispatcher | None = None
        if self.opts.warm["on"]:
            self._warm = Dispatcher(self._client, self.opts.warm, self.name,
                                    resubmit=self.opts.on_pilot_failure == "resubmit")
        self._needy: set[str] = set()  # RP-path tasks waiting for cores the warm pools hold

    @property
    def client(self) -> str:
        """Where RP's client runs: ``"process"`` or ``"thread"``."""
        return self.opts.client

    @property
    def work_dir(self) -> Path:
        return self.opts.work_dir

    # ================================================================ task descriptions
    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        """Keys RP understands (or their portable names ``cwd``/``env``), not those the
        backend sets itself, no ``stdin``; the values translation relies on (mappings,
        paths, counts) have the right type."""
        where = f" of task {task!r}" if task else ""
        for key, value in td.items():
            if key in ENGINE_KEYS:
                continue
            name = RENAMED.get(key, key)
            if key == "stdin":
                raise ConfigurationError(
                    f"task_description['stdin']{where} is not supported on RADICAL-Pilot; "
                    "use shell=True with a redirection, or input_staging")
            if name in RESERVED_KEYS:
                raise ConfigurationError(
                    f"task_description[{key!r}]{where} is set by asyncflow-hpc from the task "
                    "itself and cannot be given")
            if key not in self.task_keys:
                raise unknown_key(key, self.task_keys - {"stdin"}, task, self.name,
                                  self.key_aliases)
            if value is None:
                continue
            if key == "warm" and not isinstance(value, bool):
                raise ConfigurationError(
                    f"task_description['warm']{where} must be True or False, got {value!r}")
            if name == "environment" and not isinstance(value, Mapping):
                raise ConfigurationError(f"task_description[{key!r}]{where} must be a mapping")
            if name == "sandbox":
                check_path(key, value, task)
            elif name in ("ranks", "cores_per_rank"):
                check_number(key, value, task, integer=True, minimum=1)
            elif name == "gpus_per_rank":
                check_number(key, value, task)

    # ================================================================ life cycle
    async def _start(self) -> None:
        await self._client.start()

    def bind(self, reporter: Reporter) -> None:
        super().bind(reporter)
        if self._warm is None:
            self._client.bind(reporter)
            return
        self._warm.bind(reporter)
        self._client.bind(Reporter(self._rp_report, reporter.loop))

    def _rp_report(self, uid: str, state: TaskState, value: Any, error: BaseException | None,
                   node: str | None, stamps: Any = None) -> None:
        """RP's path reports (on the loop): forwarded; a task the warm pools made room for
        that started or ended lets them grow back."""
        if self._needy and uid in self._needy:
            self._needy.discard(uid)
            if not self._needy:
                self._warm.room_given()  # type: ignore[union-attr]
        r = self.reporter
        if state is TaskState.RUNNING:
            r.running(uid, node)
        elif state is TaskState.DONE:
            r.done(uid, value, node, stamps)
        elif state is TaskState.FAILED:
            r.failed(uid, error, node, stamps)  # type: ignore[arg-type]
        else:
            r.cancelled(uid)

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        warm = self._warm
        if warm is None:
            self._client.submit(specs)
            return
        small, other = [], []
        for spec in specs:
            (small if warm_reason(spec) is None else other).append(spec)
        if small:
            warm.submit(small)
        if other:
            for spec in other:  # the warm pools hold their cores: make room when needed
                need = cores_of(spec.description or {}) + (spec.kind is TaskKind.FUNCTION)
                if warm.make_room(need):
                    self._needy.add(spec.uid)
            self._client.submit(other)

    def cancel(self, uid: str) -> None:
        self._needy.discard(uid)
        if self._warm is not None and self._warm.cancel(uid):
            return
        self._client.cancel(uid)

    async def _shutdown(self) -> None:
        try:
            if self._warm is not None:
                await self._warm.shutdown()
        finally:
            await self._client.shutdown()

    async def wait_active(self, timeout: float | None = None) -> str:
        """Wait until the pilot runs (returns its state); raises PilotFailedError if it ended."""
        return await asyncio.wait_for(self._client.wait_active(), timeout)

    async def run_in_client(self, fn: Any, *args: Any) -> Any:
        """``fn(client, *args)`` where RP's client lives, on a thread of its own; its result.

        For tests, benchmarks and diagnosis that need RP's own objects (``client.tmgr``,
        ``pmgr``, ``pilot``: see :class:`~.inprocess.InProcessClient`): in process mode
        ``fn`` runs in the child process, so ``fn``, the arguments and the result must pickle
        (cloudpickle: lambdas and functions of ``__main__`` travel by value). Blocking is fine.
        """
        return await self._client.call(fn, args)

    # ================================================================ introspection
    @property
    def client_pid(self) -> int | None:
        """Pid of the RP client process (process mode, once started), else None."""
        return self._client.pid

    @property
    def pilot_uid(self) -> str | None:
        """The current pilot's uid (a replacement pilot's after a restart)."""
        return self._client.pilot_uid

    @property
    def session_uid(self) -> str | None:
        return self._client.session_uid

    @property
    def timings(self) -> dict[str, float]:
        """Seconds from the start of ``start()`` to each step (import, session, ...), close."""
        return self._client.timings

    def describe(self) -> dict[str, Any]:
        return {"resource": self.opts.resource, "work_dir": str(self.work_dir),
                **self._client.describe(), "name": self.name, "type": type(self).__name__,
                "client": self.client,
                "warm": self._warm.describe() if self._warm is not None else "off"}


def _from_site(site: Any, in_allocation: bool, resources: Any, pilot: dict[str, Any],
               site_config: Any, batch_options: Any) -> tuple[dict[str, Any], Any, Any]:
    """``site=``: the pilot keywords, resource config and batch options it implies; an
    explicit ``resource``, ``site_config`` or ``batch_options`` alongside is an error."""
    from ...hpc.resources import site_backend_options
    from ...hpc.sites import Site, find_site

    if isinstance(site, str):
        site = find_site(site)
    if not isinstance(site, Site):
        raise ConfigurationError(f"site= must be a Site or a site's name, got {site!r}")
    clash = [k for k, v in (("resource", pilot.get("resource") or (resources or {}).get(
        "resource")), ("site_config", site_config), ("batch_options", batch_options)) if v]
    if clash:
        raise ConfigurationError(f"site={site.name!r} sets {', '.join(clash)} itself: give one "
                                 "or the other")
    pilot = dict(pilot)
    opts = site_backend_options(site, nodes=pilot.pop("nodes", None),
                                runtime=pilot.pop("runtime", None), in_allocation=in_allocation)
    site_config = opts.pop("site_config", None)
    batch_options = opts.pop("batch_options", None)
    pilot.update(opts)
    return pilot, site_config, batch_options
