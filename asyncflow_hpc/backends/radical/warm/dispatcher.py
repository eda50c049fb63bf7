"""The campaign's side of the warm path: bundles out, batched results in.

The dispatcher runs on a thread with an event loop of its own (its server and the agents'
connections outlive any one engine: a backend may serve several engines in turn). The
engine's loop talks to it only through ``call_soon_threadsafe``; results go back the same way,
one call per batch and engine (:meth:`Dispatcher.deliver`), never one per task.

Tasks wait in one backlog. Whenever the dispatcher's loop comes round (a submit, a batch of
results), each pool agent gets what it may hold: its slots plus a prefetch sized to about
:data:`PREFETCH_WINDOW` seconds of work at the observed task duration, so a flood of no-op
tasks goes out in a few large messages while a lone task leaves at once and long tasks are
not hoarded by one node.

Agents are launched on the first warm task (:mod:`.launch`), connect back with a token, and
are watched: an agent that ends (its worker pool killed, its pilot gone) fails what it held
with :class:`WorkerLostError` -- or, with ``on_pilot_failure="resubmit"`` after a pilot
ended, puts it back in the backlog; nothing is reported twice.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import pickle
import secrets
import socket
import threading
from typing import Any

from ...._threads import in_thread
from ....errors import (
    BackendError,
    ExecutableNotFoundError,
    PilotFailedError,
    TaskExecutionError,
    TaskTimeoutError,
    WorkerLostError,
)
from ....framing import HEADER, frame
from ....tasks import TaskKind, TaskSpec
from ...base import Reporter
from ..environment import import_path
from . import launch as _launch
from .protocol import (
    CANCEL,
    CANCELLED,
    ERR,
    EVENTS,
    EXE,
    EXIT,
    FN,
    HELLO,
    NOTFOUND,
    OK,
    RETURNED,
    RUN,
    STARTED,
    STOP,
    TIMEOUT,
)

__all__ = ["Dispatcher", "RemoteError"]

log = logging.getLogger("asyncflow_hpc.backends.radical")

#: seconds of work (at the observed task duration) an agent may hold beyond its slots
PREFETCH_WINDOW = 0.2
#: most tasks in one message
BUNDLE_MAX = 2048
#: launches in a row that may fail before the backlog fails
MAX_LAUNCH_FAILURES = 2


class RemoteError(Exception):
    """A warm task's exception that could not travel back as itself."""


class Entry:
    __slots__ = ("spec", "tid", "reporter", "agent", "dropped")

    def __init__(self, spec: TaskSpec, reporter: Reporter) -> None:
        self.spec = spec
        self.tid = f"{spec.uid}.{spec.attempt}"
        self.reporter = reporter  # of the engine that submitted it
        self.agent: Link | None = None
        self.dropped = False  # cancelled: whatever the agent says next is ignored


class Link:
    """One connected pool agent."""

    __slots__ = ("aid", "rp_uid", "pilot", "writer", "host", "slots", "booked", "held",
                 "fids", "stopping")

    def __init__(self, aid: str, rp_uid: str, pilot: str, writer: asyncio.StreamWriter,
                 host: str, slots: int, booked: int) -> None:
        self.aid, self.rp_uid, self.pilot = aid, rp_uid, pilot
        self.writer, self.host = writer, host
        self.slots = slots  # tasks at once (the agent's usable cores)
        self.booked = booked  # cores RP gave it
        self.held: dict[str, Entry] = {}  # tid -> entry: sent, not ended
        self.fids: set[int] = set()
        self.stopping = False


def deliver(reporter: Reporter, items: list[tuple]) -> None:
    """On the engine's loop: one batch of reports (the only way results get there)."""
    for item in items:
        kind, uid = item[0], item[1]
        if kind == "r":
            reporter.running(uid, item[2], at=item[3])
        elif kind == "d":
            reporter.done(uid, item[2], item[3], stamps=item[4])
        elif kind == "f":
            reporter.failed(uid, item[2], item[3], stamps=item[4])
        else:
            reporter.cancelled(uid)


class Dispatcher:
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
        self.duration = 0.01  # running mean of task durations (s)
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
        return {"agents": agents, "backlog": len(self.backlog), "address": self.address,
                "mean_task_s": round(self.duration, 6), **dict(self.counts)}

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
            room = link.slots + max(link.slots,
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
                self.tell(entry, ("f", uid, self.error(spec, status, payload, link), host,
                                  (t0, t1)))
        if n_end:
            self.counts["ended"] += n_end
            self.duration = max(1e-5, 0.8 * self.duration + 0.2 * total / n_end)
        self.schedule()

    def error(self, spec: TaskSpec, status: str, payload: Any, link: Link) -> BaseException:
        if status == ERR:
            blob, text, tb = payload
            exc: Any = None
            if blob is not None:
                try:
                    exc = pickle.loads(blob)
                except Exception:  # noqa: BLE001
                    exc = None
            if not isinstance(exc, BaseException):
                exc = RemoteError(text)
            try:
                exc.add_note(f"remote traceback (warm worker on {link.host}):\n{tb.rstrip()}")
            except Exception:  # noqa: BLE001
                pass
            return exc
        if status == EXIT:
            code, out, err, folder = payload
            return TaskExecutionError(spec.command_line, code,
                                      err.decode("utf-8", errors="replace"), task=spec.name,
                                      details=f"ran on {link.host}; sandbox: {folder}")
        if status == NOTFOUND:
            cmd = spec.command
            argv0 = cmd if isinstance(cmd, str) else (cmd or [""])[0]
            return ExecutableNotFoundError(str(argv0), spec.command_line, payload)
        if status == TIMEOUT:
            return TaskTimeoutError(f"task {spec.name!r} exceeded its timeout of "
                                    f"{spec.timeout} s (its process was killed)")
        return WorkerLostError(f"task {spec.name!r}: {payload} (warm worker pool on "
                               f"{link.host}, agent {link.aid})")

    # -- sharing the pilot with RP's path ------------------------------------------------
    def stop_for_room(self, need: int) -> None:
        self.room_needed = max(self.room_needed, need)
        self.waiting_for_room = True
        links = [lk for lk in self.links.values() if not lk.stopping]
        booked = sum(lk.booked for lk in links) + sum(v[2] for v in self.expected.values())
        free = (self.total_cores or booked) - booked
        for link in sorted(links, key=lambda lk: len(lk.held)):
            if free >= need:
                break
            link.stopping = True
            link.writer.write(frame((STOP,)))
            free += link.booked
            log.info("warm worker pool agent %s stops: a task of RP's own path needs %d "
                     "core(s)", link.aid, need)
        self.update_booked()

    def regrow(self) -> None:
        self.waiting_for_room = False
        self.room_needed = 0
        self.schedule()

    def update_booked(self) -> None:
        self.booked = sum(lk.booked for lk in self.links.values() if not lk.stopping) + \
            sum(v[2] for v in self.expected.values())

    # -- agents --------------------------------------------------------------------------
    def ensure_agents(self) -> None:
        if self.closing or self.launching is not None:
            return
        if self.launch_failures >= MAX_LAUNCH_FAILURES and not self.links:
            self.fail_backlog(BackendError(
                f"backend {self.name!r}: the warm worker pool could not start "
                f"({self.last_failure}); run small tasks through RP itself with warm=False"))
            return
        self.launching = asyncio.ensure_future(self.launch())

    async def launch(self) -> None:
        try:
            if self.server is None:
                host = self.cfg.get("address") or _default_address(self.client)
                self.server = await asyncio.start_server(self.on_connect, host, 0)
                port = self.server.sockets[0].getsockname()[1]
                self.address = f"{host}:{port}"
            count = self.max_agents - len(self.links) - len(self.expected)
            ids = [f"warm.{self.n_agents + i:03d}" for i in range(max(1, count))]
            info = None
            while info is None and not self.closing:  # until the pilot is active
                try:
                    info = await self.client_call(_launch.launch_agents, (
                        self.address, self.token, ids, dict(self.cfg),
                        os.pathsep.join(import_path())))
                except asyncio.TimeoutError:
                    continue
        except BaseException as exc:
            self.launching = None
            if isinstance(exc, asyncio.CancelledError) or self.closing:
                raise
            dead = getattr(self.client, "dead", None)
            if isinstance(exc, PilotFailedError) or dead is not None:
                self.give_up(dead or exc)
                return
            self.launch_failures += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
            log.warning("warm worker pool did not launch: %s", self.last_failure)
            self.schedule()
            return
        if info is None:  # closing
            self.launching = None
            return
        self.total_cores = int(info["total"])
        for aid, (rp_uid, slots) in info["agents"].items():
            self.expected[aid] = (rp_uid, info["pilot"], slots)
        if self.n_agents == 0:
            self.max_agents = len(info["agents"])
        self.update_booked()
        self.n_agents += len(info["agents"])
        log.info("warm worker pool: %d agent(s) of %d slot(s) on pilot %s", len(info["agents"]),
                 next(iter(info["agents"].values()))[1], info["pilot"])
        watch = asyncio.ensure_future(self.watch([u for u, _ in info["agents"].values()]))
        self.watching.add(watch)
        watch.add_done_callback(self.watching.discard)

    async def watch(self, rp_uids: list[str]) -> None:
        """Follow the agents' RP tasks; one that ends without having connected failed."""
        while rp_uids and not self.closing:
            try:
                ended = await self.client_call(_launch.watch_agents, (rp_uids,), 30)
            except asyncio.TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - the client is going away
                await asyncio.sleep(1)
                continue
            if ended is None:
                continue
            uid, state, code, why = ended
            rp_uids = [u for u in rp_uids if u != uid]
            aid = next((a for a, v in self.expected.items() if v[0] == uid), None)
            if aid is not None:  # never connected
                del self.expected[aid]
                self.last_failure = f"agent task {uid} ended {state} (exit code {code}): {why}"
                self.launch_failures += 1
                log.warning("warm worker pool: %s", self.last_failure)
                if not self.expected and not self.links:
                    self.launching = None
                self.update_booked()
            link = next((lk for lk in self.links.values() if lk.rp_uid == uid), None)
            if link is not None:
                link.writer.close()
            self.schedule()

    async def on_connect(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        link = None
        try:
            hello = await asyncio.wait_for(read_msg(reader), 30)
            if not (isinstance(hello, tuple) and len(hello) == 6 and hello[0] == HELLO
                    and isinstance(hello[1], str)
                    and hmac.compare_digest(hello[1], self.token)
                    and hello[2] in self.expected):
                writer.close()
                return
            _, _, aid, host, slots, _pid = hello
            rp_uid, pilot, booked = self.expected.pop(aid)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(aid, rp_uid, pilot, writer, str(host), int(slots), booked)
            self.links[aid] = link
            self.launch_failures = 0
            if not self.expected:
                self.launching = None
            if self.closing:
                writer.write(frame((STOP,)))
            elif self.waiting_for_room:  # it came up while RP's path waited for cores
                self.stop_for_room(self.room_needed)
            self.update_booked()
            self.schedule()
            while True:
                msg = await read_msg(reader)
                if msg[0] == EVENTS:
                    self.on_events(link, msg[1])
        except (asyncio.IncompleteReadError, ConnectionError, EOFError, asyncio.TimeoutError,
                pickle.UnpicklingError):
            pass
        finally:
            writer.close()
            if link is not None:
                self.lost(link)

    def lost(self, link: Link) -> None:
        """An agent's connection ended: settle what it held once its pilot's fate is known."""
        self.links.pop(link.aid, None)
        self.update_booked()
        held = [e for e in link.held.values() if not e.dropped]
        link.held.clear()
        if self.closing:
            return
        if link.stopping and not held:
            self.schedule()
            return
        task = asyncio.ensure_future(self.settle_lost(link, held))
        self.watching.add(task)
        task.add_done_callback(self.watching.discard)

    async def settle_lost(self, link: Link, held: list[Entry]) -> None:
        try:
            fate, err = await self.client_call(_launch.pilot_fate, (link.pilot, 25.0))
        except Exception:  # noqa: BLE001 - the client is going away
            fate, err = "closing", None
        if fate == "closing":  # RP's client is ending: it says why soon (bounded wait)
            for _ in range(150):
                if self.closing or getattr(self.client, "dead", None) is not None:
                    break
                await asyncio.sleep(0.2)
        if self.closing:
            return
        dead = getattr(self.client, "dead", None)
        if dead is not None and self.dead is None:
            self.give_up(dead)
        if fate == "dead" and self.dead is None:
            self.dead = err
        err = self.dead or err
        held = [e for e in held if not e.dropped]
        if self.dead is None and (fate == "replaced" or (link.stopping and fate == "alive")):
            for entry in reversed(held):  # they run again elsewhere, reported once
                entry.agent = None
                self.backlog.appendleft(entry)
        else:
            for entry in held:
                self.fail(entry, err or WorkerLostError(
                    f"task {entry.spec.name!r}: the warm worker pool agent {link.aid} on "
                    f"{link.host} ended while it ran"))
        if held:
            log.warning("warm worker pool agent %s on %s ended with %d task(s) in flight "
                        "(pilot %s: %s)", link.aid, link.host, len(held), link.pilot, fate)
        if self.dead is not None:
            self.fail_backlog(self.dead)
        self.schedule()

    async def housekeeping(self) -> None:
        """Every half second: give up when RP's client is gone for good (its process died,
        or its pilot ended with no replacement); close agents whose pilot ended (RP may
        leave their processes running)."""
        while not self.closing:
            await asyncio.sleep(0.5)
            dead = getattr(self.client, "dead", None)
            if dead is not None and self.dead is None:
                self.give_up(dead)
            if not self.links:
                continue
            info = self.client.describe() or {}
            current, state = info.get("pilot_uid"), info.get("pilot_state")
            for link in list(self.links.values()):
                if link.pilot != current or state in ("DONE", "FAILED", "CANCELED"):
                    link.writer.close()

    def give_up(self, err: BaseException) -> None:
        """No pilot will run anything any more: fail everything, now and later."""
        self.dead = err
        for link in list(self.links.values()):
            held = list(link.held.values())
            link.held.clear()
            for entry in held:
                if not entry.dropped:
                    self.fail(entry, err)
            link.writer.close()
        self.fail_backlog(err)

    def fail_backlog(self, err: BaseException) -> None:
        while self.backlog:
            entry = self.backlog.popleft()
            if not entry.dropped:
                self.fail(entry, err)

    # -- end -----------------------------------------------------------------------------
    async def close(self, timeout: float) -> None:
        """Ask every agent to stop, wait for them (bounded), then cancel their RP tasks."""
        self.closing = True
        if self.pump_handle is not None:
            self.pump_handle.cancel()
            self.pump_handle = None
        if self.launching is not None:
            self.launching.cancel()
        rp_uids = [lk.rp_uid for lk in self.links.values()] + \
            [v[0] for v in self.expected.values()]
        for link in list(self.links.values()):
            link.stopping = True
            if not link.writer.is_closing():
                link.writer.write(frame((STOP,)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.links and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for link in list(self.links.values()):
            link.writer.close()
        for task in [*self.watching, *([self.keeper] if self.keeper else [])]:
            task.cancel()
        if self.server is not None:
            self.server.close()
        if rp_uids:
            try:
                await asyncio.wait_for(self.client_call(_launch.stop_agents, (rp_uids,)), 30)
            except Exception:  # noqa: BLE001 - the session closes them anyway
                pass


async def read_msg(reader: asyncio.StreamReader) -> Any:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))


def _default_address(client: Any) -> str:
    """Where agents can reach us: loopback for a pilot on this machine, else this host."""
    resource = str((client.describe() or {}).get("resource") or "")
    if resource.startswith("local.") or os.environ.get("RADICAL_DEFAULT_IFACE") == "lo":
        return "127.0.0.1"
    return socket.gethostbyname(socket.getfqdn())



