"""MPI in a campaign: an mpi4py executable task with ``ranks: 2``, then a function that checks it.

``task_description={"ranks": N}`` makes the task an N-rank MPI job. Where it runs decides the
launcher: on RADICAL-Pilot inside a SLURM allocation or pilot job the agent uses ``srun``
(SLURM's pmix plugin wires the ranks), on PBS ``mpiexec``; on the local backend ``mpirun``.

    asyncflow-hpc run examples/mpi4py_campaign.py --site local-slurm     # pilot via sbatch
    asyncflow-hpc submit examples/mpi4py_campaign.py --site local-slurm  # inside an allocation

Prints one ``MPI RESULT`` line: the ranks that answered and the size each saw.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from asyncflow_hpc import WorkflowEngine

HELLO = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
         "print(f'rank={c.Get_rank()} size={c.Get_size()} sum={c.allreduce(c.Get_rank() + 1)}', "
         "flush=True)")


async def main(ranks: int) -> str:
    async with WorkflowEngine.create() as flow:

        @flow.executable_task
        def hello(task_description={"ranks": 2}):  # noqa: B006 (AsyncFlow idiom)
            return [sys.executable, "-c", HELLO]

        @flow.function_task
        def summarize(output):
            # ranks write concurrently: find each report wherever it landed in the output
            found = sorted(re.findall(r"rank=\d+ size=\d+ sum=\d+", output))
            return "; ".join(found)

        text = await summarize(hello(task_description={"ranks": ranks}))
        result = f"MPI RESULT ranks={ranks} {text}"
        print(result, flush=True)
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    asyncio.run(main(parser.parse_args().ranks))
