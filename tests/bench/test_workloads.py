"""Every standard workload runs small with sane numbers on the local and dry-run backends."""

from __future__ import annotations

import math

import pytest
from benchutil import need_mpirun, run

from asyncflow_hpc.bench import WORKLOADS, make_workload, run_suite
from asyncflow_hpc.bench.runner import Measurement

pytestmark = pytest.mark.timeout(120)

SMALL = {"noop": 20, "chain": 20, "fanout": 20, "seed": 10, "true": 6, "sleep": 10,
         "sleep-exe": 4, "mpi": 2, "seed-blocking": 2}
EXPECTED_TASKS = {"noop": 20, "chain": 20, "fanout": 22, "seed": 30, "true": 6, "sleep": 10,
                  "sleep-exe": 4, "mpi": 2, "seed-blocking": 6}


def small(name: str):
    return make_workload(name, SMALL[name], duration=0.05 if name != "mpi" else None)


def check_sane(m: Measurement, tasks: int) -> None:
    assert m.error is None, m.error
    assert m.tasks == m.completed == tasks
    assert len(m.times_s) == m.repeat == 2
    assert all(t > 0 for t in m.times_s)
    assert m.makespan_s == min(m.times_s)
    assert m.throughput == pytest.approx(tasks / m.makespan_s)
    assert m.overhead_per_task_s is not None and m.overhead_per_task_s >= 0
    assert m.ideal_s is not None and 0 <= m.ideal_s
    assert m.startup_s is not None and m.startup_s > 0
    if m.utilisation is not None:
        assert 0 < m.utilisation <= 1.0


def test_every_workload_is_covered() -> None:
    assert set(SMALL) == set(WORKLOADS)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_on_local_backend(name: str) -> None:
    if name == "mpi":
        need_mpirun()
    [m] = run(run_suite([small(name)], backend="local", repeat=2, slots=2))
    check_sane(m, EXPECTED_TASKS[name])
    assert m.slots == 2
    if name in ("sleep", "sleep-exe", "seed-blocking"):
        # the sleep itself is a floor no engine can beat
        assert m.makespan_s >= m.ideal_s * 0.99 > 0


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_on_dryrun_backend(name: str) -> None:
    [m] = run(run_suite([small(name)], backend="dryrun", repeat=2))
    check_sane(m, EXPECTED_TASKS[name])
    assert m.ideal_s == 0 and m.utilisation is None  # nothing ran


def test_suite_shares_one_engine_startup() -> None:
    ms = run(run_suite([small("noop"), small("chain")], backend="local", repeat=2))
    assert [m.workload for m in ms] == ["noop", "chain"]
    assert ms[0].startup_s == ms[1].startup_s


def test_ideal_makespan_and_utilisation_from_the_shape() -> None:
    w = make_workload("sleep-exe", 10, duration=0.5)
    assert w.work() == pytest.approx(5.0)
    assert w.ideal(4) == pytest.approx(1.5)        # waves of 4, 4, 2
    assert w.ideal(None) == pytest.approx(0.5)     # unbounded: one wave
    mpi = make_workload("mpi", 6, duration=1.0, ranks=2)
    assert mpi.ideal(4) == pytest.approx(3.0)      # 2 tasks at a time
    assert mpi.work() == pytest.approx(12.0)
    assert make_workload("chain", 7).depth == 7
    assert make_workload("sleep", 100, duration=0.2).ideal(2) == pytest.approx(0.2)
    assert make_workload("noop", 5).ideal(2) == 0


def test_sleep_exe_utilisation_near_one_when_slots_are_full() -> None:
    [m] = run(run_suite([make_workload("sleep-exe", 4, duration=0.2)], backend="local",
                        repeat=1, slots=2))
    assert m.ideal_s == pytest.approx(0.4)
    assert m.utilisation is not None and 0.25 < m.utilisation <= 1.0  # loose: a loaded machine
    assert math.isclose(m.utilisation, 0.8 / (2 * m.makespan_s))


def test_bad_workload_name_and_size() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        make_workload("nope")
    with pytest.raises(ValueError, match="size"):
        make_workload("noop", 0)


def test_failing_workload_is_recorded_not_raised(monkeypatch) -> None:
    w = make_workload("true", 2)

    def broken_build(flow):
        @flow.executable_task
        async def bad() -> str:
            return "sh -c 'exit 3'"

        async def go() -> int:
            await bad()
            return 1
        return go

    object.__setattr__(w, "build", broken_build)
    [m] = run(run_suite([w], backend="local", repeat=1))
    assert m.error and "TaskExecutionError" in m.error
    assert not m.ok and m.throughput is None


def test_workload_kinds_decide_the_warm_up() -> None:
    executables = {"true", "sleep-exe", "mpi"}
    for name in WORKLOADS:
        assert make_workload(name, 1).kind == ("executable" if name in executables else "function")
    # only executables: no function task is run before timing (no raptor on RADICAL-Pilot)
    [m] = run(run_suite([make_workload("true", 2)], backend="dryrun", repeat=1))
    assert m.warmup_s is not None and m.warmup_s > 0
