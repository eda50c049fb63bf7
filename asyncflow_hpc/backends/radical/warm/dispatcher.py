"""The campaign's side of the warm path: bundles out, batched results in.

The dispatcher runs on a thread with an event loop of its own (its server and the agents'
connections outlive any one engine: a backend may serve several engines in turn). The
engine's loop talks to it only through ``call_soon_threadsafe``; results go back the same way,
one call per batch and engine (:meth:`Dispatcher.deliver`), never one per task.

Tasks wait in one backlog. Whenever the dispatcher's loop comes round (a submit, a batch of
results), each pool agent gets what it may hold: its slots plus a prefetch sized to about
:data:`PREFETCH_WINDOW` seconds of work at the observed task duration (none before the first
results), so a flood of no-op tasks goes out in a few large messages while a lone task leaves
at once and long tasks are not hoarded by one node.

Agents are launched on the first warm task (:mod:`.launch`), connect back with a token, and
are watched: an agent that ends (its worker pool killed, its pilot gone) fails what it held
with :class:`WorkerLostError` -- or, with ``on_pilot_failure="resubmit"`` after a pilot
ended, puts it back in the backlog; nothing is reported twice.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import secrets
import threading
from typing import Any

from ...._threads import in_thread
from ....errors import BackendError
from ....framing import frame
from ....tasks import TaskKind, TaskSpec
from ...base import Reporter
from .agents import AgentKeeper
from .links import Entry, Link, RemoteError, deliver, warm_error
from .protocol import CANCEL, CANCELLED, EXE, EXIT, FN, OK, RETURNED, RUN, STARTED

__all__ = ["Dispatcher", "RemoteError"]


#: seconds of work (at the observed task duration) an agent may hold beyond its slots
PREFETCH_WINDOW = 0.2
#: most tasks in one message
BUNDLE_MAX = 2048
#: seconds a process killed by a signal waits before its failure is reported: long enough
#: for the agent's own end (the pilot's job cancelled) to be seen first
SIGNAL_GRACE = 3.0

class Dispatcher(AgentKeeper):
    """Warm path of one backend. ``client`` is its RP client (``call``, ``describe``).

    The public methods are called on the engine's loop and only hop onto the dispatcher's
    thread; everything else runs there.
    """

    def __init__(self, client: Any, cfg: dict, name: str, resubmit: bool) -> None:
        self.client = client
        self.cfg = cfg
        self.name = name
        self.resubmit = resubmit
        self.reporter: Reporter | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the dispatcher's own
        self.thread: threading.Thread | None = None
        self.backlog: collections.deque[Entry] = collections.deque()
        self.entries: dict[str, Entry] = {}  # spec uid -> entry, until it ends
        self.links: dict[str, Link] = {}
        self.expected: dict[str, tuple[str, str, int]] = {}  # aid -> (rp uid, pilot, cores)
        self.token = secrets.token_hex(16)
        self.server: asyncio.AbstractServer | None = None
        self.address = ""
        self.total_cores = 0
        self.booked = 0  # cores the agents hold (read from the engine's thread)
        self.launching: asyncio.Task | None = None
        self.watching: set[asyncio.Task] = set()
        self.launch_failures = 0
        self.last_failure = ""
        self.n_agents = 0
        self.max_agents = 64  # agents wanted: one per node, known after the first launch
        self.waiting_for_room = False  # RP's path waits for cores the agents hold
        self.room_needed = 0  # the largest such task's cores
        self.duration: float | None = None  # running mean of task durations (s), once known
        self.pump_handle: asyncio.Handle | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.outbox: dict[Reporter, list[tuple]] = {}
        self.functions: dict[Any, tuple[int, bytes]] = {}
        self.closing = False
        self.dead: BaseException | None = None  # no pilot will come back
        self.keeper: asyncio.Task | None = None
        self.counts: collections.Counter = collections.Counter()

    # -- engine side (the engine's loop) ---------------------------------------------------
    def bind(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def submit(self, specs: list[TaskSpec]) -> None:
        reporter = self.reporter
        assert reporter is not None, "bind() comes first"
        if self.thread is None:
            self.start_thread()
        self.loop.call_soon_threadsafe(self.take, [Entry(s, reporter) for s in specs])

    def cancel(self, uid: str) -> None:
        """Take a task back (ignored when it is not, or no longer, on the warm path)."""
        if self.loop is not None and not self.closing:
            self.loop.call_soon_threadsafe(self.take_back, uid)

    def make_room(self, need: int) -> bool:
        """A task of RP's path needs ``need`` cores: stop agents until that many are free
        beside them (each returns its unstarted tasks and ends once its running ones did).
        True if agents hold cores and must make room (none grows back until
        :meth:`room_given`)."""
        if self.loop is None or self.closing:
            return False
        total = self.total_cores
        if total and total - self.booked >= need:
            return False
        if not total and not self.booked and self.launching is None:
            return False
        self.loop.call_soon_threadsafe(self.stop_for_room, need)
        return True

    def room_given(self) -> None:
        """The tasks that needed the agents' cores have them (or ended)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.regrow)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Ask every agent to stop, wait for them (bounded), cancel their RP tasks, end the
        thread."""
        loop, thread = self.loop, self.thread
        if loop is None or thread is None:
            return
        try:
            done = asyncio.run_coroutine_threadsafe(self.close(timeout), loop)
            await asyncio.wait_for(asyncio.wrap_future(done), timeout + 40)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await in_thread(thread.join, 10)

    def describe(self) -> dict[str, Any]:
        try:
            agents = {lk.aid: {"host": lk.host, "slots": lk.slots, "held": len(lk.held)}
                      for lk in list(self.links.values())}
        except RuntimeError:  # changed meanwhile on the dispatcher's thread
            agents = {}
        try:
            starting = sum(v[2] for v in list(self.expected.values()))
        except RuntimeError:
            starting = 0
        return {"agents": agents, "starting_slots": starting, "backlog": len(self.backlog),
                "address": self.address,
                "mean_task_s": round(self.duration or 0.0, 6), **dict(self.counts)}

    # -- the dispatcher's thread ---------------------------------------------------------
    def start_thread(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            try:
                self.loop.run_forever()
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=serve, name=f"asyncflow-warm-{self.name}",
                                       daemon=True)
        self.thread.start()
        ready.wait()
        self.loop.call_soon_threadsafe(self.start_keeper)

    def start_keeper(self) -> None:
        self.keeper = asyncio.ensure_future(self.housekeeping())

    def tell(self, entry: Entry, item: tuple) -> None:
        """Queue a report for ``entry``'s engine; sent once per loop iteration."""
        box = self.outbox.get(entry.reporter)
        if box is None:
            box = self.outbox[entry.reporter] = []
        box.append(item)
        if self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        outbox, self.outbox = self.outbox, {}
        for reporter, items in outbox.items():
            try:
                reporter.loop.call_soon_threadsafe(deliver, reporter, items)
            except RuntimeError:  # that engine's loop is closed: nobody waits
                pass

    def fail(self, entry: Entry, err: BaseException, node: str | None = None,
             stamps: tuple | None = None) -> None:
        if self.entries.pop(entry.spec.uid, None) is not None:
            self.tell(entry, ("f", entry.spec.uid, err, node, stamps))

    async def client_call(self, fn: Any, args: tuple, timeout: float = 60.0) -> Any:
        """``client.call`` on the loop the client lives on (the engine's), bounded: an engine
        whose loop ends meanwhile never answers, and the next engine's loop is asked next."""
        reporter = self.reporter
        assert reporter is not None
        coro = self.client.call(fn, args)
        try:
            done = asyncio.run_coroutine_threadsafe(coro, reporter.loop)
        except RuntimeError:  # that loop is closed
            coro.close()
            raise BackendError("the engine using this backend has ended") from None
        return await asyncio.wait_for(asyncio.wrap_future(done), timeout)

    def take(self, entries: list[Entry]) -> None:
        if self.dead is None and getattr(self.client, "dead", None) is not None:
            self.give_up(self.client.dead)
        if self.dead is not None:
            for entry in entries:
                self.tell(entry, ("f", entry.spec.uid, self.dead, None, None))
            return
        for entry in entries:
            self.entries[entry.spec.uid] = entry
        self.backlog.extend(entries)
        self.counts["submitted"] += len(entries)
        self.schedule()

    def take_back(self, uid: str) -> None:
        entry = self.entries.pop(uid, None)
        if entry is None:
            return
        entry.dropped = True
        link = entry.agent
        if link is not None and not link.writer.is_closing():
            link.writer.write(frame((CANCEL, [entry.tid])))

    def schedule(self) -> None:
        if self.pump_handle is None and not self.closing:
            self.pump_handle = self.loop.call_soon(self.pump)

    # -- shipping ------------------------------------------------------------------------
    def pump(self) -> None:
        self.pump_handle = None
        if self.closing:
            return
        backlog = self.backlog
        while backlog and backlog[0].dropped:
            backlog.popleft()
        if not backlog:
            return
        if self.launching is None and not self.waiting_for_room and (
                self.server is None or len(self.links) + len(self.expected) < self.max_agents):
            self.ensure_agents()
        for link in list(self.links.values()):
            if not backlog:
                break
            if link.stopping:
                continue
            # no prefetch before a duration is known (the first agent up must not take
            # everything), nor for tasks longer than the window (nodes stay balanced)
            room = link.slots + (0 if self.duration is None else
                                 int(link.slots * PREFETCH_WINDOW / self.duration))
            room = min(room, 16 * BUNDLE_MAX) - len(link.held)
            while room > 0 and backlog:
                batch = []
                for _ in range(min(room, BUNDLE_MAX)):
                    if not backlog:
                        break
                    entry = backlog.popleft()
                    if entry.dropped:
                        continue
                    try:
                        batch.append(self.wire(entry, link))
                    except Exception as exc:  # noqa: BLE001 - an unpicklable argument, ...
                        self.fail(entry, exc)
                        continue
                    entry.agent = link
                    link.held[entry.tid] = entry
                if not batch:
                    break
                room -= len(batch)
                link.writer.write(frame((RUN, batch)))
                self.counts["messages"] += 1

    def wire(self, entry: Entry, link: Link) -> tuple:
        spec = entry.spec
        if spec.kind is TaskKind.FUNCTION:
            fid, fblob = self.function_blob(spec.function)
            try:
                argblob = pickle.dumps((spec.args, spec.kwargs), pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - lambdas, local classes: by value
                import cloudpickle

                argblob = cloudpickle.dumps((spec.args, spec.kwargs), pickle.HIGHEST_PROTOCOL)
            if fid in link.fids:
                fblob = None
            else:
                link.fids.add(fid)
            return entry.tid, FN, spec.timeout, (fid, fblob, argblob)
        env = (spec.description or {}).get("environment") or \
            (spec.description or {}).get("env") or None
        env = {str(k): str(v) for k, v in env.items()} if env else None
        # the folder RP's own path would use: the task's uid (and .rN for a retry)
        folder = spec.uid if spec.attempt <= 1 else f"{spec.uid}.r{spec.attempt - 1}"
        return entry.tid, EXE, spec.timeout, (spec.command, spec.shell, env, folder)

    def function_blob(self, func: Any) -> tuple[int, bytes]:
        known = self.functions.get(func)
        if known is None:
            import cloudpickle

            known = (len(self.functions) + 1, cloudpickle.dumps(func, pickle.HIGHEST_PROTOCOL))
            self.functions[func] = known
        return known

    # -- results -------------------------------------------------------------------------
    def _signalled(self, link: Link, tid: str, entry: Entry, payload: Any,
                   stamps: tuple) -> None:
        """The grace of a signalled process is over and its agent still lives: report it."""
        if link.held.get(tid) is not entry:
            return  # the agent was lost meanwhile: settled with its pilot's fate
        del link.held[tid]
        if not entry.dropped and self.entries.pop(entry.spec.uid, None) is not None:
            self.tell(entry, ("f", entry.spec.uid, warm_error(entry.spec, EXIT, payload, link),
                              link.host, stamps))
        self.schedule()

    def on_events(self, link: Link, events: list[tuple]) -> None:
        host = link.host
        held = link.held
        n_end = 0
        total = 0.0
        for ev in events:
            tid, status = ev[0], ev[1]
            if status == STARTED:
                entry = held.get(tid)
                if entry is not None and not entry.dropped:
                    self.tell(entry, ("r", entry.spec.uid, host, ev[2]))
                continue
            entry = held.pop(tid, None)
            if entry is None:
                continue
            if status == RETURNED:
                if not entry.dropped:
                    entry.agent = None
                    self.backlog.appendleft(entry)
                continue
            payload, t0, t1 = ev[2], ev[3], ev[4]
            n_end += 1
            total += t1 - t0
            if entry.dropped:
                continue
            if status == EXIT and isinstance(payload[0], int) and payload[0] < 0:
                # killed by a signal: its pilot may be ending (scancel, the walltime), the
                # agent with it. Held back a moment, so that an agent lost meanwhile settles
                # it with the pilot's fate instead of as the process's own failure.
                held[tid] = entry
                self.loop.call_later(SIGNAL_GRACE, self._signalled, link, tid, entry,  # type: ignore[union-attr]
                                     payload, (t0, t1))
                continue
            spec = entry.spec
            uid = spec.uid
            if self.entries.pop(uid, None) is None:
                continue
            if status == OK:
                if spec.kind is TaskKind.FUNCTION:
                    try:
                        value = pickle.loads(payload)
                    except Exception as exc:  # noqa: BLE001
                        self.tell(entry, ("f", uid, RemoteError(
                            f"task {spec.name!r}: its result cannot be unpickled here: "
                            f"{exc!r}"), host, (t0, t1)))
                        continue
                else:
                    value = payload.decode("utf-8", errors="replace")
                self.tell(entry, ("d", uid, value, host, (t0, t1)))
            elif status == CANCELLED:
                self.tell(entry, ("c", uid))
            else:
                self.tell(entry, ("f", uid, warm_error(spec, status, payload, link), host,
                                  (t0, t1)))
        if n_end:
            self.counts["ended"] += n_end
            mean = max(1e-5, total / n_end)
            self.duration = mean if self.duration is None else 0.8 * self.duration + 0.2 * mean
        self.schedule()
