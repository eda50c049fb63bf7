"""Pool agents as RADICAL-Pilot tasks: submitted and watched where RP's client runs.

Both functions run through ``RPClient.call`` (in the client process, or on a thread of the
in-process client): RP places the agents, one per node (a distinct ``colocate`` tag with
``exclusive``), each holding the cores its workers use, so RP never gives those cores to
another task while the agent lives.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from typing import Any

from ....errors import BackendError
from .protocol import ENV_ADDRESS, ENV_AGENT, ENV_SLOTS, ENV_TOKEN

__all__ = ["launch_agents", "pilot_fate", "stop_agents", "watch_agents"]

FINAL = ("DONE", "FAILED", "CANCELED")


def _wait_active(client: Any, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while not client.closing:
        if time.monotonic() > deadline:
            return False
        try:
            state = client.pilots.active.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
            continue
        if state == "PMGR_ACTIVE":
            return True
        if client.dead is not None:
            raise client.dead
        time.sleep(0.5)  # a replacement pilot is coming: its own future
    raise BackendError("the backend is shutting down")


def _on_rp_thread(client: Any, fn: Any, *args: Any) -> Any:
    done: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            done.set_exception(exc)

    client.on_rp_thread(run)
    return done.result(timeout=120)


def launch_agents(client: Any, address: str, token: str, ids: list[str], cfg: dict,
                  pythonpath: str, wait: float = 10.0) -> dict[str, Any] | None:
    """Submit pool agents ``ids`` (at most one per node) once the pilot is active.

    Returns the pilot's uid and size and, per agent, its RP uid and slots; None when the
    pilot is not active within ``wait`` seconds (the caller asks again).
    """
    if not _wait_active(client, wait):
        return None
    rp, pilot = client.rp, client.pilot
    try:
        rm = pilot.resource_details or {}
    except Exception:  # noqa: BLE001
        rm = {}
    pd = client.opts.pilot
    nodes = len(rm.get("node_list") or ()) or int(pd.get("nodes") or 1)
    per_node = int(rm.get("cores_per_node") or client.cores_per_node or 1)
    total = client.cores.total_cores() or nodes * per_node
    slots = int(cfg.get("workers_per_node") or min(per_node, int(pd.get("cores") or per_node)))
    # raptor (function tasks that need RP's path) holds its cores for the pilot's life: an
    # agent asking for them too would wait in RP forever, and the warm tasks with it
    held = int(getattr(client.cores, "held_cores", 0) or 0)
    slots = max(1, min(slots, per_node - held))
    ids = ids[:max(1, min(nodes, total // slots))]
    tds = []
    for aid in ids:
        env = {ENV_ADDRESS: address, ENV_TOKEN: token, ENV_AGENT: aid, ENV_SLOTS: str(slots),
               "PYTHONPATH": pythonpath, **{str(k): str(v) for k, v in
                                            (cfg.get("environment") or {}).items()}}
        tds.append(rp.TaskDescription({
            "uid": f"{aid}.{client.pilot.uid}", "mode": rp.TASK_EXECUTABLE,
            "executable": cfg.get("python") or sys.executable,
            "arguments": ["-m", "asyncflow_hpc.backends.radical.warm.agent"],
            "ranks": 1, "cores_per_rank": slots, "environment": env,
            "tags": {"colocate": aid, "exclusive": True},
        }))
    tasks = _on_rp_thread(client, client.tmgr.submit_tasks, tds)
    return {"pilot": pilot.uid, "total": total, "nodes": nodes,
            "agents": {aid: (t.uid, slots) for aid, t in zip(ids, tasks, strict=True)}}


def watch_agents(client: Any, rp_uids: list[str], wait: float = 5.0) -> tuple | None:
    """Wait up to ``wait`` seconds for one of the agents' RP tasks to end: (uid, state, exit
    code, why), or None."""
    tasks = client.tmgr.get_tasks(uids=rp_uids)
    if not isinstance(tasks, list):
        tasks = [tasks]
    deadline = time.monotonic() + wait
    while not client.closing and time.monotonic() < deadline:
        for task in tasks:
            if task.state in FINAL:
                why = (str(task.exception or "") + " " + (task.stderr or "")[-1500:]).strip()
                return task.uid, task.state, task.exit_code, why
        time.sleep(0.5)
    return None


def pilot_fate(client: Any, pilot_uid: str, wait: float = 5.0) -> tuple[str, Any]:
    """What became of pilot ``pilot_uid`` (whose agent was just lost), waiting up to ``wait``
    seconds for RP to say: ("dead", PilotFailedError) when no pilot will come back,
    ("replaced", None) when a replacement pilot took over, ("closing", None) when RP's client
    is shutting down, ("alive", None) otherwise."""
    deadline = time.monotonic() + wait
    while True:
        if client.dead is not None:
            return "dead", client.dead
        ended = client.pilots.ended.get(pilot_uid)
        if ended and client.pilot is not None and client.pilot.uid != pilot_uid:
            return "replaced", None
        if client.closing:
            return "closing", None
        if time.monotonic() > deadline:
            return "alive", None
        time.sleep(0.2)


def stop_agents(client: Any, rp_uids: list[str]) -> None:
    """Cancel agents' RP tasks (at shutdown, after asking them to stop)."""
    if rp_uids:  # never an empty list: cancel_tasks([]) cancels EVERY task
        try:
            client.tmgr.cancel_tasks(rp_uids)
        except Exception:  # noqa: BLE001 - the session may be closing already
            pass



