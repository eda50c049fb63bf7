"""A PilotPool campaign for the SLURM tests (run as a script: ``python pilot_pool_campaign.py
CONFIG.json``); prints one ``RESULT {json}`` line.

CONFIG: ``templates`` (PilotTemplate dicts; a ``site`` dict is a Site's fields), ``pool``
(PilotPool keywords), ``phases`` (run one after the other; each a list of groups
``{"name", "count", "seconds", "td"}`` whose tasks run at once), ``linger`` (seconds to
stay open after the last phase, to see scale-in), ``kill`` (``{"when": "cpu.2", "pilot":
"cpu.1"}``: once pilot ``when`` was started and ``pilot`` runs, scancel the SLURM job of
``pilot`` 3 s later), ``unroutable`` (a task description no template offers),
``telemetry`` (a telemetry log to write), ``journal`` (a journal to write).

Every task appends ``<group>-<i>`` to ``marks`` when its body ends, and prints where it ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from asyncflow_hpc import PilotPool, WorkflowEngine
from asyncflow_hpc.hpc.sites import Site

HERE = Path.cwd()
MARKS = HERE / "marks"


def scancel_pilot(pilot: str) -> str | None:
    """Cancel the SLURM job whose working folder is pilot ``pilot``'s (work/<pilot>/...)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        job, _, folder = line.partition(" ")
        if f"/work/{pilot}/" in folder + "/":
            subprocess.run(["scancel", job], check=False)
            return job
    return None


async def main(cfg: dict) -> dict:
    templates = [{**t, "site": Site(**t["site"])} if isinstance(t.get("site"), dict) else t
                 for t in cfg["templates"]]
    pool = PilotPool(templates, work_dir=HERE / "work", **cfg.get("pool", {}))
    notes: list[tuple[float, str, dict]] = []
    killed: dict[str, str | None] = {}
    t0 = time.time()
    async with WorkflowEngine.create(backend=pool, work_dir=HERE / "engine",
                                     telemetry=cfg.get("telemetry"),
                                     journal=cfg.get("journal")) as flow:
        kill = cfg.get("kill")
        seen: set[tuple] = set()

        def on_note(kind: str, attrs: dict) -> None:
            notes.append((round(time.time() - t0, 1), kind, attrs))
            print(f"{time.time() - t0:7.1f} {kind} {attrs.get('action', '')} "
                  f"{attrs.get('pilot', '')} {attrs.get('reason', '')}", flush=True)
            if kill and kind == "PilotDecision":
                seen.add((attrs.get("action"), attrs.get("pilot")))
                if ("PilotStarted", kill["when"]) in seen and \
                        ("PilotActive", kill["pilot"]) in seen and not killed:
                    killed[kill["pilot"]] = None  # once; a few seconds into its tasks
                    asyncio.get_running_loop().call_later(3, do_kill, kill["pilot"])

        def do_kill(pilot: str) -> None:
            killed[pilot] = scancel_pilot(pilot)
            print(f"{time.time() - t0:7.1f} scancel {pilot}: job {killed[pilot]}", flush=True)

        flow.subscribe_notes(on_note)

        @flow.executable_task
        def work(group: str, i: int, seconds: float, task_description: dict | None = None):
            return ["bash", "-c", f"sleep {seconds}; echo {group}-{i} >> {MARKS}; "
                    "echo job=$SLURM_JOB_ID part=$SLURM_JOB_PARTITION node=$SLURMD_NODENAME"]

        tasks = []
        for phase in cfg["phases"]:
            futs = []
            for g in phase:
                for i in range(g["count"]):
                    futs.append((g["name"], i, work(g["name"], i, g["seconds"],
                                                    task_description=dict(g.get("td") or {}))))
            outs = await asyncio.gather(*(f for _, _, f in futs), return_exceptions=True)
            for (name, i, f), out in zip(futs, outs, strict=True):
                tasks.append({"group": name, "i": i, "node": flow.components[f.uid].node,
                              "out": out.strip() if isinstance(out, str) else None,
                              "error": None if isinstance(out, str) else repr(out)})
        unroutable = None
        if cfg.get("unroutable"):
            t = time.time()
            try:
                await work("none", 0, 0, task_description=cfg["unroutable"])
            except Exception as exc:  # noqa: BLE001 - the error is the result
                unroutable = {"error": f"{type(exc).__name__}: {exc}",
                              "seconds": round(time.time() - t, 2)}
        await asyncio.sleep(cfg.get("linger", 0))
        counts = dict(flow.counts)
        costs = pool.costs()
    marks = MARKS.read_text().split() if MARKS.exists() else []
    return {"tasks": tasks, "notes": notes, "costs": costs, "counts": counts, "marks": marks,
            "killed": killed, "unroutable": unroutable, "elapsed": round(time.time() - t0, 1)}


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")
    result = asyncio.run(main(config))
    print("RESULT " + json.dumps(result), flush=True)
