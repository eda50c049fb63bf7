"""The pool agents' life, as the dispatcher sees it: launched through RP, connected, watched,
stopped to make room for RP's own path, lost; and giving up when no pilot will come back.

:class:`AgentKeeper` is a part of :class:`~.dispatcher.Dispatcher` (its base class; it holds
no state of its own): everything here runs on the dispatcher's thread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import pickle
import socket

from ....errors import BackendError, PilotFailedError, WorkerLostError
from ....framing import frame
from ....framing import read_stream_frame as read_msg
from ..environment import import_path
from . import launch as _launch
from .links import Entry, Link, default_address
from .protocol import EVENTS, HELLO, STOP

__all__ = ["AgentKeeper"]

log = logging.getLogger("asyncflow_hpc.backends.radical")

#: launches in a row that may fail before the backlog fails
MAX_LAUNCH_FAILURES = 2


class AgentKeeper:
    """Agents of one :class:`~.dispatcher.Dispatcher` (see the module docstring)."""

    # -- sharing the pilot with RP's path ------------------------------------------------
    def stop_for_room(self, need: int) -> None:
        self.room_needed = max(self.room_needed, need)
        self.waiting_for_room = True
        self.update_booked()
        free = (self.total_cores or self.booked) - self.booked
        links = [lk for lk in self.links.values() if not lk.stopping]
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
                host = self.cfg.get("address") or default_address(self.client)
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
