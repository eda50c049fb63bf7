"""Files between tasks inside a SLURM allocation (``asyncflow-hpc submit``, local backend).

The campaign's task directories live under its work dir, on the allocation's file system:
a producer's ``OutputFile`` reaches its consumer through the future (implicit data) and by
name (``InputFile``). The local backend is the cheapest way into an allocation here (a pilot
inside the job costs ~45-60 s more); the RADICAL-Pilot backend maps the same plan onto
staging directives (tests/radical/test_radical_parity.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SlurmJobs

pytestmark = pytest.mark.slurm

CAMPAIGN = '''
import asyncio, os
from asyncflow_hpc import InputFile, OutputFile, WorkflowEngine

async def main():
    async with WorkflowEngine.create(work_dir=os.path.abspath("runs")) as flow:
        @flow.executable_task(task_description={"shell": True})
        def produce(out):
            return f"echo job=$SLURM_JOB_ID > {out.filename}"

        @flow.executable_task
        def consume(_):
            return "cat a.txt"          # in its own directory: staged from the producer's

        @flow.function_task
        def words(inp):
            with open(inp) as fh:
                return len(fh.read().split())

        made = produce(OutputFile("a.txt"))
        text = (await consume(made)).strip()
        n = await words(InputFile("a.txt"))
        print(f"FILES RESULT {text} words={n} task_dir={os.path.join(flow.files_root, made.uid)}",
              flush=True)

asyncio.run(main())
'''


def _submit(slurm_jobs: SlurmJobs, *args: str) -> str:
    cwd = slurm_jobs.workdir
    env = {**os.environ, "XDG_CONFIG_HOME": str(cwd / ".xdg")}  # no user site files
    proc = subprocess.run(
        [sys.executable, "-m", "asyncflow_hpc", "submit", "--campaign-dir", str(cwd), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"submit failed:\n{proc.stdout}\n{proc.stderr}"
    job_id = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+", job_id), proc.stdout
    slurm_jobs.job_ids.append(job_id)
    return job_id


@pytest.mark.timeout(180)
def test_output_file_reaches_its_consumer_inside_an_allocation(slurm_jobs: SlurmJobs) -> None:
    t0 = time.monotonic()
    camp = slurm_jobs.workdir / "files_campaign.py"
    camp.write_text(CAMPAIGN)
    job = _submit(slurm_jobs, str(camp), "--site", "local-slurm", "--backend", "local",
                  "--runtime", "5", "--job-name", "afhpc-files")
    state = slurm_jobs.wait(job, timeout=150)
    log = slurm_jobs.workdir / "afhpc-files.out"
    out = log.read_text() if log.exists() else f"(no {log})"
    assert state == "COMPLETED", out
    match = re.search(r"FILES RESULT job=(\d+) words=1 task_dir=(\S+)", out)
    assert match and match.group(1) == job, out
    task_dir = Path(match.group(2))
    assert task_dir.is_relative_to(slurm_jobs.workdir), task_dir  # the campaign's own folder
    assert (task_dir / "a.txt").read_text() == f"job={job}\n"
    assert "campaign exited with status 0" in out
    print(f"file-passing campaign in an allocation: {time.monotonic() - t0:.1f} s")
