"""``asyncflow-hpc bench pool``: what a pilot pool's elasticity saves, and walltime chaining.

* ``fanout``: a fan-out of short tasks, then a few long aggregations that need all of them;
  once on a fixed pool (every pilot from start to end) and once elastic (one pilot at first,
  up to the same maximum, idle pilots ended), in the same run. Node-hours held and used of
  each, and the ratios.
* ``chain``: a campaign several times longer than one pilot's walltime on 1-node pilots,
  one at a time; every task must run to its end exactly once.

Both need a scheduler the site reaches (the SLURM test cluster:
``scripts/slurm/up.sh --nodes 3 --cpus-per-node 2``) and RADICAL-Pilot.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from ..backends.pilots import PilotPool
from ..engine import WorkflowEngine

__all__ = ["chain", "fanout", "format_run", "run_stages"]


async def run_stages(pool: PilotPool, folder: Path, stages: list[tuple[int, float]]) -> dict:
    """Stages of ``(count, seconds)`` sleeping tasks, each task of a stage taking every
    result of the previous stage as input; the run's counts, costs and decisions."""
    marks = folder / "marks"
    t0 = time.time()
    decisions: list[str] = []

    def on_note(kind: str, a: dict[str, Any]) -> None:
        if kind == "PilotDecision":
            decisions.append(f"{time.time() - t0:7.1f} {a.get('action')} {a.get('pilot', '')} "
                             f"{a.get('reason', '')}")

    async with WorkflowEngine.create(backend=pool, work_dir=folder / "engine",
                                     progress="off") as flow:
        flow.subscribe_notes(on_note)

        @flow.executable_task
        def work(stage: int, i: int, seconds: float, *after: str) -> list[str]:
            return ["bash", "-c", f"sleep {seconds}; echo {stage}-{i} >> {marks}"]

        previous: list[Any] = []
        for stage, (count, seconds) in enumerate(stages):
            previous = [work(stage, i, seconds, *previous) for i in range(count)]
            await asyncio.gather(*previous)
        elapsed = time.time() - t0
        counts = dict(flow.counts)
    done = marks.read_text().split() if marks.exists() else []
    return {"elapsed_s": round(elapsed, 1), "counts": counts, "costs": pool.costs(),
            "bodies_ended": len(done), "distinct_bodies_ended": len(set(done)),
            "decisions": decisions}


def format_run(label: str, r: dict) -> str:
    """A run's decisions, its pilots (held, used, utilisation) and totals, as text."""
    c = r["costs"]
    out = [f"== {label}: {r['elapsed_s']:.0f} s, tasks {r['counts']}, bodies ended "
           f"{r['bodies_ended']} ({r['distinct_bodies_ended']} distinct)"]
    out += ["   " + line for line in r["decisions"]]
    out.append(f"   {'pilot':8} {'nodes':>5} {'done':>5} {'moved':>5} {'held h':>8} "
               f"{'used h':>8} {'util':>6}  end")
    for p in c["pilots"]:
        util = f"{p['utilisation']:.0%}" if p["utilisation"] is not None else "-"
        out.append(f"   {p['pilot']:8} {p['nodes']:5g} {p['done']:5d} {p['moved']:5d} "
                   f"{p['held_node_hours']:8.4f} {p['used_node_hours']:8.4f} {util:>6}  "
                   f"{p['end_reason']}")
    out.append(f"   node-hours held {c['held_node_hours']:.4f}, used {c['used_node_hours']:.4f}: "
               f"held/used = {held_per_used(c):.3f}")
    return "\n".join(out)


def held_per_used(costs: dict[str, Any]) -> float:
    used = costs["used_node_hours"]
    return costs["held_node_hours"] / used if used else float("nan")


def fanout(site: str, pilots: int, wide: int, wide_s: float, narrow: int, narrow_s: float,
           runtime: int = 60, scale_out_after: float = 10.0, idle_timeout: float = 15.0,
           echo: Any = print) -> dict[str, Any]:
    """The fan-out-then-narrow campaign on a fixed pool, then on an elastic one."""
    results: dict[str, Any] = {}
    stages = [(wide, wide_s), (narrow, narrow_s)]
    with tempfile.TemporaryDirectory(prefix="bench-pool-", dir=".") as tmp:
        for label, elastic in (("fixed", False), ("elastic", True)):
            folder = Path(tmp, label).absolute()
            folder.mkdir()
            template = {"name": "cpu", "site": site, "nodes": 1, "runtime": runtime,
                        "max_pilots": pilots, "min_pilots": 1 if elastic else pilots}
            pool = PilotPool([template], work_dir=folder / "work",
                             scale_out_after=scale_out_after,
                             idle_timeout=idle_timeout if elastic else 1e9)
            results[label] = asyncio.run(run_stages(pool, folder, stages))
            echo(format_run(f"elastic (1..{pilots} pilots)" if elastic
                            else f"fixed ({pilots} pilots)", results[label]))
    f, e = results["fixed"]["costs"], results["elastic"]["costs"]
    results["held_per_used"] = {"fixed": held_per_used(f), "elastic": held_per_used(e)}
    results["elastic_held_vs_fixed"] = e["held_node_hours"] / f["held_node_hours"]
    echo(f"\nheld/used: fixed {held_per_used(f):.3f}, elastic {held_per_used(e):.3f}; the "
         f"elastic pool held {results['elastic_held_vs_fixed']:.3f}x the fixed pool's "
         "node-hours")
    return results


def chain(site: str, runtime: int, tasks: int, task_s: float, drain_margin: float = 20.0,
          echo: Any = print) -> dict[str, Any]:
    """``tasks`` x ``task_s`` on 1-node pilots of ``runtime`` minutes, one at a time."""
    with tempfile.TemporaryDirectory(prefix="bench-pool-", dir=".") as tmp:
        folder = Path(tmp, "chain").absolute()
        folder.mkdir()
        template = {"name": "cpu", "site": site, "nodes": 1, "runtime": runtime,
                    "min_pilots": 1, "max_pilots": 1}
        pool = PilotPool([template], work_dir=folder / "work", drain_margin=drain_margin)
        r = asyncio.run(run_stages(pool, folder, [(tasks, task_s)]))
    echo(format_run(f"chain ({runtime}-min pilots)", r))
    active = sum(" PilotActive " in d for d in r["decisions"])
    r["walltimes"] = r["elapsed_s"] / 60 / runtime
    echo(f"\n{tasks} tasks x {task_s:g} s over {active} pilots of {runtime} min: "
         f"{r['walltimes']:.1f}x one walltime; done {r['counts']['done']}, failed "
         f"{r['counts']['failed']}, bodies ended {r['bodies_ended']} "
         f"({r['distinct_bodies_ended']} distinct)")
    return {"chain": r}
