"""The telemetry log and the report say when bodies really ran (issue 15's check).

20,000 short tasks on 6 threads: the report's "running" curve never exceeds the six workers,
and each TaskStarted time is the body's own start (within 5 ms of its first clock reading for
all but a few, whose thread lost the GIL between the stamp and the body).
"""

from __future__ import annotations

import asyncio
import time

from telemetry_testlib import clean_env_fixture, events, make_engine, read_lines, run  # noqa: F401

from asyncflow_hpc.report import read_log

THREADS = 6
TASKS = 20_000


def body(i):
    return time.time()


def test_report_running_curve_and_started_times(tmp_path, clean_env):
    log_path = tmp_path / "events.jsonl"

    async def main():
        flow = await make_engine(log_path, workers=THREADS, work_dir=tmp_path)
        task = flow.function_task(body)
        futs = [task(i) for i in range(TASKS)]
        readings = await asyncio.gather(*futs)
        uids = [f.task.uid for f in futs]
        await flow.shutdown()
        return dict(zip(uids, readings, strict=True))

    clock = run(main(), 300)
    started = {d["task_id"]: d["event_time"] for d in events(read_lines(log_path))
               if d["event_type"] == "TaskStarted"}
    assert set(started) == set(clock)
    gaps = sorted(clock[uid] - started[uid] for uid in clock)
    assert gaps[0] > -1e-5, gaps[:5]  # never stamped after the body began (µs in the log)
    assert gaps[int(TASKS * 0.99)] < 0.005, gaps[-50:]
    assert gaps[-1] < 0.5, gaps[-50:]
    print(f"start gap: p50 {gaps[TASKS // 2] * 1e3:.3f} ms, p99 {gaps[int(TASKS * 0.99)] * 1e3:.3f} ms, "
          f"max {gaps[-1] * 1e3:.3f} ms")

    # the report's intervals: at no instant more running than there are threads
    log = read_log(str(log_path))
    edges = []
    assert len(log.tasks) == TASKS
    for row in log.tasks:
        edges += [(row.run_start, 1), (row.end, -1)]
    edges.sort()
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= THREADS, peak
