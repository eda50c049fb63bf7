"""A campaign for batch allocations: 26 tasks, executables and functions, with dependencies.

Runs unchanged on a laptop (local backend), inside a SLURM/PBS allocation
(``asyncflow-hpc submit examples/allocation_campaign.py --site local-slurm``) or from a login
node with pilots (``asyncflow-hpc run examples/allocation_campaign.py --site local-slurm``):
the engine is created without a backend, so the command line decides where tasks run.

Shape, per sample i in 0..N-1 (N=6 by default, ``--samples N``):
  generate_i  executable  ``seq 1 (i+3)``          -> text
  total_i     function    sum of generate_i's numbers
  square_i    executable  ``expr total_i * total_i`` (depends on total_i)
  check_i     function    int(square_i) == total_i ** 2
then ``summary`` (function) depends on every total and check; ``report`` (executable) echoes
it. With N=6: 6*4 + 2 = 26 tasks. The last line is ``CAMPAIGN RESULT ...`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

from asyncflow_hpc import WorkflowEngine


async def main(samples: int) -> str:
    async with WorkflowEngine.create() as flow:

        @flow.executable_task
        def generate(i):
            return f"seq 1 {i + 3}"

        @flow.function_task
        def total(text):
            return sum(int(x) for x in text.split())

        @flow.executable_task
        def square(value):
            return f"expr {value} '*' {value}"

        @flow.function_task
        def check(squared, value):
            return int(squared) == value * value

        @flow.function_task
        def summary(totals, checks):
            return f"totals={','.join(map(str, totals))} checks_ok={all(checks)} n={len(checks)}"

        @flow.executable_task
        def report(text):
            return ["echo", f"report {text} host={socket.gethostname()}"]

        async with flow.workflow_scope("allocation-campaign"):
            totals = [total(generate(i)) for i in range(samples)]
            checks = [check(square(t), t) for t in totals]
            line = summary(totals, checks)
            echoed = report(line)
            text = (await echoed).strip()
        tasks = samples * 4 + 2
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID") or "-"
        result = f"CAMPAIGN RESULT tasks={tasks} job={job} {text}"
        print(result, flush=True)
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6, help="independent samples (4 tasks each)")
    asyncio.run(main(parser.parse_args().samples))
