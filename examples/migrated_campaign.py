"""A radical.asyncflow script moved over by changing its import line.

It uses what such scripts rely on: ``async def`` bodies that block (stand-ins for numpy or a
solver), introspection of ``flow.components`` after the futures were dropped,
``capture_stdio=True``, and files passed between tasks (implicit data and ``InputFile`` by
name). It prints one JSON line of what a user observes, so the same script can be compared
across backends::

    python examples/migrated_campaign.py                                  # local backend
    ASYNCFLOW_HPC_BACKEND=radical python examples/migrated_campaign.py    # a real pilot
"""

import asyncio
import json
import os
import sys
import tempfile
import time

# from radical.asyncflow import WorkflowEngine, InputFile, OutputFile
from asyncflow_hpc import InputFile, OutputFile, WorkflowEngine


async def main(work_dir: str) -> dict:
    flow = await WorkflowEngine.create(work_dir=work_dir, uid="migrated")

    @flow.function_task
    async def simulate(i):
        start = time.time()
        time.sleep(0.5)  # blocking work inside an async body, as migrated scripts have it
        return i * i, start, time.time()

    @flow.function_task
    async def combine(*parts):
        await asyncio.sleep(0.01)
        overlapped = max(p[1] for p in parts) < min(p[2] for p in parts)
        return sum(p[0] for p in parts), overlapped

    @flow.executable_task(capture_stdio=True)
    async def report(total):
        return f"/bin/sh -c 'echo total={total}; echo done >&2'"

    @flow.executable_task
    async def produce(out):
        return f"/bin/sh -c 'seq 1 5 > {out.filename}'"

    @flow.executable_task
    async def consume(_produced):
        return "cat numbers.txt"  # the producer's output, linked into this task's directory

    @flow.function_task
    async def count_lines(inp):
        with open(inp) as fh:
            return len(fh.read().split())

    results = {}
    overlaps = []
    for w in range(3):
        async with flow.workflow_scope(f"sweep-{w}"):
            total, overlapped = await combine(*[simulate(i + 3 * w) for i in range(3)])
            overlaps.append(overlapped)
            stdout_path = await report(total)
            with open(stdout_path) as fh:
                results[f"sweep-{w}"] = {"total": total, "report": fh.read().strip()}
    # the blocking bodies of a sweep ran at the same time (on the backend's workers)
    results["blocking_bodies_overlapped"] = all(overlaps)
    results["sum_of_file"] = sum(map(int, (await consume(produce(OutputFile("numbers.txt")))).split()))
    results["lines_by_name"] = await count_lines(InputFile("numbers.txt"))
    # introspection after the futures were dropped, as radical.asyncflow scripts do it
    results["components"] = sorted(
        (c["description"]["name"], c["description"]["workflow_id"] or "-", str(c["state"]))
        for c in flow.components.values())
    await flow.shutdown()
    return results


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="migrated-")
    os.makedirs(where, exist_ok=True)
    print(json.dumps(asyncio.run(main(where)), sort_keys=True))
