"""Side by side: asyncflow-hpc, plain asyncio and (when installed) radical.asyncflow."""

from __future__ import annotations

import pytest
from benchutil import run

from asyncflow_hpc.bench import baselines, make_workload
from asyncflow_hpc.bench.baselines import compare, format_comparison

pytestmark = pytest.mark.timeout(180)


def small_set():
    return [make_workload("noop", 20), make_workload("chain", 10), make_workload("true", 3),
            make_workload("sleep", 5, duration=0.02)]


def test_ratios_computed_without_reference(monkeypatch) -> None:
    monkeypatch.setattr(baselines, "reference_available", lambda: False)
    rows = run(compare(small_set(), repeat=2))
    assert [r.workload for r in rows] == ["noop", "chain", "true", "sleep"]
    for r in rows:
        assert r.asyncflow_hpc.ok and r.asyncio.ok, (r.asyncflow_hpc.error, r.asyncio.error)
        assert r.asyncflow_hpc.completed == r.asyncio.completed == r.tasks
        assert r.ratio_vs_asyncio is not None and r.ratio_vs_asyncio > 0
        assert r.ratio_vs_asyncio == pytest.approx(
            r.asyncflow_hpc.makespan_s / r.asyncio.makespan_s)
        assert r.reference is None and r.reference_speedup is None
        assert r.reference_note == "radical.asyncflow not installed"
    text = format_comparison(rows)
    assert "radical.asyncflow not installed" in text and "noop x20" in text
    md = format_comparison(rows, markdown=True).splitlines()
    assert md[0].startswith("| workload |") and len(md) == 2 + len(rows)


def test_reference_not_requested() -> None:
    rows = run(compare([make_workload("noop", 5)], repeat=1, reference=False))
    assert rows[0].reference is None and rows[0].reference_note == "not requested"


def test_reference_side_by_side_when_installed() -> None:
    if not baselines.reference_available():
        pytest.skip("radical.asyncflow is not installed (optional)")
    ws = small_set() + [make_workload("noop", 50)]
    rows = run(compare(ws, repeat=1, reference_max_tasks=30))
    for r in rows[:-1]:
        assert r.reference is not None and r.reference.ok, r.reference and r.reference.error
        assert r.reference.engine == "radical.asyncflow"
        assert r.reference.completed == r.tasks
        assert r.reference_speedup is not None and r.reference_speedup > 0
    assert rows[-1].reference is None and "skipped" in (rows[-1].reference_note or "")


def test_mpi_is_not_compared_with_the_reference(monkeypatch) -> None:
    monkeypatch.setattr(baselines, "reference_available", lambda: True)
    w = make_workload("mpi", 1)
    object.__setattr__(w, "build", make_workload("true", 1).build)   # no mpirun needed
    object.__setattr__(w, "plain", make_workload("true", 1).plain)
    rows = run(compare([w], repeat=1))
    assert rows[0].reference is None and "ranks" in (rows[0].reference_note or "")


def test_same_process_bound_for_engine_and_plain(monkeypatch) -> None:
    monkeypatch.setattr(baselines, "reference_available", lambda: False)
    w = make_workload("sleep-exe", 4, duration=0.3)
    [bounded] = run(compare([w], repeat=1, slots=2))
    assert bounded.asyncflow_hpc.makespan_s >= 0.6 and bounded.asyncio.makespan_s >= 0.6
    assert bounded.asyncflow_hpc.ideal_s == pytest.approx(0.6)
    [free] = run(compare([w], repeat=1))          # no bound: all four at once
    # shorter than two waves, with room for a loaded machine's process start-up
    assert free.asyncflow_hpc.makespan_s < 0.6 and free.asyncio.makespan_s < 0.6
    assert free.asyncflow_hpc.ideal_s == pytest.approx(0.3)
