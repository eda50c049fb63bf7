"""Five concurrent workflows, each a small DAG of function and executable tasks.

Run it with:  python examples/seed_workflows.py
It uses the backend named by ASYNCFLOW_HPC_BACKEND (local when unset), so the same file
runs on a laptop or on RADICAL-Pilot:
    ASYNCFLOW_HPC_BACKEND=radical python examples/seed_workflows.py
"""

import asyncio
import time

from asyncflow_hpc import WorkflowEngine


async def main() -> None:
    flow = await WorkflowEngine.create()
    t0 = time.monotonic()

    @flow.function_task
    async def prepare(wf: int) -> dict:
        await asyncio.sleep(0.2)  # stands in for staging input data
        return {"workflow": wf, "samples": 4 + wf}

    @flow.executable_task
    async def simulate(config: dict) -> str:
        # an executable task returns its command line; its result is the command's stdout
        return f"sh -c 'seq 1 {config['samples']}'"

    @flow.function_task
    def analyse(config: dict, raw: str) -> dict:
        values = [int(v) for v in raw.split()]
        return {"workflow": config["workflow"], "n": len(values), "sum": sum(values)}

    async def run_workflow(wf: int) -> dict:
        async with flow.workflow_scope(f"seed-{wf}"):
            config = prepare(wf)
            result = await analyse(config, simulate(config))
        print(f"[{time.monotonic() - t0:5.2f}s] workflow seed-{wf} done: {result}", flush=True)
        return result

    try:
        results = await asyncio.gather(*[run_workflow(i) for i in range(5)])
    finally:
        await flow.shutdown()
    if all(r is not None for r in results):  # the dry-run backend returns no values
        assert [r["sum"] for r in results] == [sum(range(1, 5 + i)) for i in range(5)]
    print(f"5 workflows finished in {time.monotonic() - t0:.2f}s (they ran concurrently)")


if __name__ == "__main__":
    asyncio.run(main())
