"""PilotPool's decisions, fast: the pool's real code with a fake pilot backend.

The real-pilot tests are tests/multinode/test_pilot_pool.py and
tests/slurm/test_pilot_pool_slurm.py (RADICAL-Pilot pilots on the SLURM test clusters);
these check the policy where its timing can be controlled: a "minute" of walltime is one
second here (``seconds_per_minute``), a pilot starts in ``startup`` seconds, and a task
"runs" for the seconds its first argument says.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from asyncflow_hpc import ConfigurationError, PilotFailedError, PilotPool, WorkflowEngine
from asyncflow_hpc.backends.base import ExecutionBackend

RUNS: collections.Counter[str] = collections.Counter()  # task name+args -> bodies started


class FakePilot(ExecutionBackend):
    """A pilot that becomes active after ``startup`` s and runs each task for its
    ``seconds``; ``die()`` ends it like a scancel (its tasks fail with PilotFailedError)."""

    def __init__(self, name: str, startup: float, fail: bool) -> None:
        super().__init__()
        self.name = name
        self.startup = startup
        self.fail = fail
        self.state = "PMGR_LAUNCHING"
        self.pilot_uid = f"pilot.{name}"
        self.running: dict[str, asyncio.Task] = {}
        self.ran: list[str] = []

    async def wait_active(self, timeout: float | None = None) -> str:
        await asyncio.sleep(self.startup)
        if self.fail:
            self.state = "FAILED"
            raise PilotFailedError(self.pilot_uid, "FAILED", None, "the job was refused")
        self.state = "PMGR_ACTIVE"
        return self.state

    def submit(self, specs: Any) -> None:
        for spec in specs:
            self.running[spec.uid] = asyncio.ensure_future(self._run(spec))

    async def _run(self, spec: Any) -> None:
        seconds = spec.args[0]
        RUNS[f"{spec.name}{spec.args}"] += 1
        self.reporter.running(spec.uid, self.name)
        await asyncio.sleep(seconds)
        self.running.pop(spec.uid, None)
        self.ran.append(spec.uid)
        self.reporter.done(spec.uid, (self.name, *spec.args), self.name)

    def cancel(self, uid: str) -> None:
        job = self.running.pop(uid, None)
        if job is not None:
            job.cancel()

    def die(self) -> None:
        self.state = "CANCELED"
        err = PilotFailedError(self.pilot_uid, "CANCELED", None, "scancel")
        for uid, job in list(self.running.items()):
            job.cancel()
            self.reporter.failed(uid, err)
        self.running.clear()

    async def _shutdown(self) -> None:
        for job in self.running.values():
            job.cancel()
        self.state = "CANCELED" if self.state != "FAILED" else self.state

    def describe(self) -> dict[str, Any]:
        return {"pilot_state": self.state}


class FakePool(PilotPool):
    seconds_per_minute = 1.0

    def __init__(self, templates: list, *, startup: float = 0.2,
                 failing: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(templates, work_dir="/nonexistent-not-used", **kw)
        self.startup = startup
        self.failing = failing
        self.made: dict[str, FakePilot] = {}

    def _make_backend(self, t: Any, name: str) -> FakePilot:
        b = FakePilot(name, self.startup, t.name in self.failing)
        self.made[name] = b
        return b


def local(name: str, cores: int = 1, **kw: Any) -> dict[str, Any]:
    return {"name": name, "resource": "local.localhost", "cores": cores,
            "cores_per_node": 2, **kw}


async def run(pool: FakePool, body: Any) -> tuple[Any, list[tuple[str, dict]]]:
    notes: list[tuple[str, dict]] = []
    async with WorkflowEngine.create(backend=pool, progress="off") as flow:
        flow.subscribe_notes(lambda k, a: notes.append((k, a)))

        @flow.function_task
        async def work(seconds: float, i: int = 0) -> None:
            raise AssertionError("the fake pilot never calls the body")

        result = await body(flow, work)
    return result, notes


def acts(notes: list, action: str) -> list[dict]:
    return [a for k, a in notes if k == "PilotDecision" and a["action"] == action]


def test_tasks_go_where_what_they_need_is_offered() -> None:
    pool = FakePool([local("cpu", 2, max_pilots=1), local("gpu", 2, gpus_per_node=1)],
                    scale_out_after=0)

    async def body(flow: Any, work: Any) -> list:
        cpu = [work(0.05, i) for i in range(4)]
        gpu = [work(0.05, i, task_description={"gpus_per_rank": 1}) for i in range(3)]
        named = work(0.05, 99, task_description={"pilot": "gpu"})
        with pytest.raises(ConfigurationError, match=r"no pilot template offers what task "
                                                     r"'work' needs \(3 core\(s\)\): cpu: it "
                                                     r"has 2 core\(s\); gpu: it has 2 core"):
            await work(0.05, task_description={"ranks": 3})
        with pytest.raises(ConfigurationError, match="the pool's pilots are cpu, gpu"):
            await work(0.05, task_description={"pilot": "tpu"})
        return await asyncio.gather(*cpu, *gpu, named)

    out, notes = asyncio.run(run(pool, body))
    assert [o[0] for o in out] == ["cpu.1"] * 4 + ["gpu.1"] * 4, out


def test_backlog_scales_out_to_max_then_idle_pilots_scale_in_to_min() -> None:
    pool = FakePool([local("cpu", 1, min_pilots=1, max_pilots=3)], scale_out_after=0.5,
                    idle_timeout=1.0, drain_margin=0.1)

    async def body(flow: Any, work: Any) -> dict:
        await asyncio.gather(*(work(0.4, i) for i in range(24)))
        live_peak = pool.peak
        await asyncio.sleep(4.0)  # idle: back to min_pilots
        return {"peak": live_peak, "live": [p.name for p in pool.pilots if p.live]}

    pool.peak = 0
    watch = pool._watch

    def counting(now: float) -> None:
        watch(now)
        pool.peak = max(pool.peak, sum(p.live for p in pool.pilots))

    pool._watch = counting  # type: ignore[method-assign]
    out, notes = asyncio.run(run(pool, body))
    started = acts(notes, "PilotStarted")
    assert started[0]["reason"] == "min_pilots"
    assert [a["reason"].split(":")[0] for a in started[1:]] == ["scale out", "scale out"]
    assert out["peak"] == 3  # never more than max_pilots
    assert len(out["live"]) == 1  # min_pilots stays
    assert len([a for a in acts(notes, "PilotStopped") if a["reason"].startswith("scale in")]) == 2
    ended = [a for k, a in notes if k == "PilotEnded"]
    assert len(ended) == 3 and all(e["held_node_hours"] > e["used_node_hours"] > 0 for e in ended)


def test_walltime_replacement_and_duration_estimates_keep_tasks_off_ending_pilots() -> None:
    """4-"minute" pilots, tasks of 1 s with a duration hint: each pilot is replaced early,
    no task is placed where it could not end, none is moved, each body runs once."""
    RUNS.clear()
    pool = FakePool([local("cpu", 1, runtime=4, min_pilots=1, max_pilots=1)],
                    drain_margin=0.3, startup=0.3)

    async def body(flow: Any, work: Any) -> list:
        return await asyncio.gather(*(work(1.0, i, task_description={"duration": 1.0})
                                      for i in range(8)))

    out, notes = asyncio.run(run(pool, body))
    assert len(out) == 8 and set(RUNS.values()) == {1} and len(RUNS) == 8
    pilots = {o[0] for o in out}
    assert len(pilots) >= 3, out  # 8 s of work on pilots that live 4 s
    assert all(a["reason"].startswith("replaces cpu.") for a in acts(notes, "PilotStarted")[1:])
    drained = [a for a in acts(notes, "PilotStopped") if a["reason"].startswith("walltime")]
    assert drained and all(a["moved"] == 0 for a in drained), drained


def test_task_still_running_at_the_walltime_is_moved_and_counted_once() -> None:
    """Without an estimate a 2.5 s task lands on a pilot with less time left: it is taken
    back before the end and run again on the replacement; the engine sees one result."""
    RUNS.clear()
    pool = FakePool([local("cpu", 1, runtime=3, min_pilots=1, max_pilots=1)],
                    drain_margin=0.3, startup=0.2)

    async def body(flow: Any, work: Any) -> Any:
        await work(1.2, 0)  # the pilot is now ~1.4 s old
        return await work(2.5, 1)

    out, notes = asyncio.run(run(pool, body))
    drained = [a for a in acts(notes, "PilotStopped") if a["reason"].startswith("walltime")]
    assert drained and drained[0]["moved"] == 1, notes
    assert out[0] != drained[0]["pilot"]  # finished on the replacement
    assert RUNS["work(2.5, 1)"] == 2  # the body started twice, the task ended once


def test_a_lost_pilot_gives_its_tasks_back_and_a_new_one_runs_them() -> None:
    RUNS.clear()
    pool = FakePool([local("cpu", 2, max_pilots=1)], scale_out_after=0)

    async def body(flow: Any, work: Any) -> list:
        futs = [work(0.6, i) for i in range(4)]
        while not pool.made.get("cpu.1") or not pool.made["cpu.1"].running:
            await asyncio.sleep(0.02)
        pool.made["cpu.1"].die()
        return await asyncio.gather(*futs)

    out, notes = asyncio.run(run(pool, body))
    lost = acts(notes, "PilotLost")
    assert len(lost) == 1 and lost[0]["pilot"] == "cpu.1" and lost[0]["moved"] == 2, notes
    assert {o[0] for o in out} == {"cpu.2"} and len(out) == 4


def test_template_whose_pilots_cannot_start_fails_only_its_tasks() -> None:
    pool = FakePool([local("cpu", 1), local("big", 2, gpus_per_node=1)], failing=("big",),
                    scale_out_after=0)

    async def body(flow: Any, work: Any) -> list:
        gpu = work(0.1, 1, task_description={"gpus_per_rank": 1})
        cpu = work(0.1, 2)
        return await asyncio.gather(gpu, cpu, return_exceptions=True)

    (gpu, cpu), notes = asyncio.run(run(pool, body))
    assert isinstance(gpu, PilotFailedError), gpu
    assert "no pilot of template 'big' could start: 2 pilots in a row failed to start" in str(gpu)
    assert "the job was refused" in str(gpu)
    assert cpu[0] == "cpu.1"
    assert len(acts(notes, "PilotFailed")) == 2 and len(acts(notes, "TemplateFailed")) == 1


@pytest.mark.parametrize(("kw", "match"), [
    ({"templates": []}, "at least one pilot template"),
    ({"templates": [local("a"), local("a")]}, "names must differ"),
    ({"templates": [{"name": "a", "resource": "local.localhost", "walltime": 3}]},
     "unknown key 'walltime' \\(did you mean 'runtime'\\?\\)"),
    ({"templates": [local("a", min_pilots=3, max_pilots=2)]}, "min_pilots \\(3\\) exceeds"),
    ({"templates": [local("a", runtime=0)]}, "runtime must be an integer >= 1"),
    ({"templates": [{"name": "a"}]}, "give site= .* or resource="),
    ({"templates": [local("a", options={"nodez": 1})]}, "options\\['nodez'\\] is not"),
    ({"templates": [local("a")], "idle_timeout": -1}, "idle_timeout must be seconds >= 0"),
])
def test_bad_pool_configuration_is_one_clear_error(kw: dict, match: str) -> None:
    templates = kw.pop("templates")
    with pytest.raises(ConfigurationError, match=match):
        PilotPool(templates, **kw)
