"""A pilot pool's notes (PilotDecision, PilotEnded) in the event log, the report and the
progress display; a fake pool stands in for RADICAL-Pilot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from telemetry_testlib import (
    ENV,
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    events,
    make_engine,
    read_lines,
    run,
)

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine
from asyncflow_hpc.backends.base import ExecutionBackend
from asyncflow_hpc.cli.report import report_command
from asyncflow_hpc.progress import RichProgress
from asyncflow_hpc.report import read_log, render_text, summarize, write_report

STARTED_WHY = "scale out: 12 core(s) of tasks waiting 11 s, 2 coming"
REPLACES_WHY = "replaces cpu.1: 90 s of walltime left, pilots start in ~45 s"
GIVEN_UP_WHY = "2 pilots in a row failed to start; the last: sbatch: invalid partition"


class FakePool(ExecutionBackend):
    """Completes every task at once (runs nothing) and tells of its pilots as a PilotPool
    does: ``PilotDecision`` notes, and a ``PilotEnded`` note with the pilot's cost."""

    name = "pilots"

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[tuple[str, dict]] = []  # as sent

    def submit(self, specs) -> None:
        if not self.notes:  # the first tasks: a pilot for them
            self.decide("PilotStarted", "cpu.1", STARTED_WHY)
        self.reporter.loop.call_soon(self._finish, [s.uid for s in specs])

    def _finish(self, uids: list[str]) -> None:
        for uid in uids:
            self.reporter.done(uid, None, node="node-7")

    def cancel(self, uid: str) -> None:
        pass

    def _note(self, kind: str, attributes: dict) -> None:
        self.notes.append((kind, attributes))
        self.reporter.note(kind, attributes)

    def decide(self, action: str, pilot: str | None, reason: str, **extra) -> None:
        d = {"pool": self.name, "at": round(time.time(), 3), "action": action,
             "template": (pilot or "gpu").split(".")[0], "reason": reason, **extra}
        if pilot is not None:
            d["pilot"] = pilot
        self._note("PilotDecision", d)

    def end(self, pilot: str, reason: str, end_reason: str, held: float, used: float) -> None:
        now = time.time()
        self._note("PilotEnded", {
            "pool": self.name, "pilot": pilot, "template": "cpu", "uid": "pilot.0000",
            "state": "ended", "reason": reason, "nodes": 2.0, "cores": 64, "running": 0,
            "done": 20, "moved": 3, "walltime_left_s": None, "submitted_at": now - 120,
            "active_at": now - 75, "ended_at": now, "end_reason": end_reason,
            "held_node_hours": held, "used_node_hours": used,
            "utilisation": round(used / held, 4)})


async def _campaign(path, progress: str | None = "plain") -> FakePool:
    """20 tasks on the pool; cpu.1 starts, runs them, is replaced by cpu.2 and ends (held
    0.5 node-hours, used 0.44); cpu.2 is still up when the log closes; template gpu fails."""
    pool = FakePool()
    local = await LocalExecutionBackend(ThreadPoolExecutor(2))
    flow = await WorkflowEngine.create(backend=[local, pool], telemetry=str(path),
                                       progress=progress, install_signal_handlers=False)

    @flow.function_task(backend="pilots")
    async def step(i):
        return i

    await asyncio.gather(*[step(i) for i in range(20)])
    pool.decide("PilotActive", "cpu.1", "active after 45 s", startup_s=45.0)
    pool.decide("PilotStarted", "cpu.2", REPLACES_WHY)
    await asyncio.sleep(0.4)  # a progress line with the pilots' counts
    pool.decide("PilotStopped", "cpu.1", "walltime: 28 s left", moved=3, was="active")
    pool.end("cpu.1", STARTED_WHY, "walltime: 28 s left", held=0.5, used=0.44)
    pool.decide("PilotActive", "cpu.2", "active after 40 s", startup_s=40.0)
    pool.decide("TemplateFailed", None, GIVEN_UP_WHY)
    await asyncio.sleep(0.2)
    await flow.shutdown()
    return pool


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """One run for the tests of this module: (log path, the pool, what progress printed)."""
    path = tmp_path_factory.mktemp("pilots") / "ev.jsonl"
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        mp.setenv("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "0")
        mp.setenv("ASYNCFLOW_HPC_PROGRESS_INTERVAL", "0.05")
        with contextlib.redirect_stderr(err):
            pool = run(_campaign(path))
    return path, pool, err.getvalue()


def test_notes_are_event_lines_of_their_own_kind(campaign):
    path, pool, _ = campaign
    evs = [d for d in events(read_lines(path)) if d["event_type"] in ("PilotDecision",
                                                                       "PilotEnded")]
    assert [(d["event_type"], d["attributes"]) for d in evs] == \
        [(k, json.loads(json.dumps(a))) for k, a in pool.notes]
    assert len(evs) == 7
    # the pool's name, not the engine's default backend (local); no task
    assert {d["backend"] for d in evs} == {"pilots"}
    assert all(d["task_id"] is None for d in evs)
    session = [d for d in events(read_lines(path)) if d["event_type"] == "SessionStarted"][0]
    assert session["backend"] == "local"


def test_summary_lists_pilots_totals_and_decisions(campaign):
    path, _, _ = campaign
    log = read_log(path)
    assert len(log.pilot_decisions) == 6 and len(log.pilots_ended) == 1
    s = summarize(log)["pilots"]
    assert [p["pilot"] for p in s["pilots"]] == ["cpu.1", "cpu.2"]
    one, two = s["pilots"]
    assert one["ended"] and one["held_node_hours"] == 0.5 and one["used_node_hours"] == 0.44
    assert one["reason"] == STARTED_WHY and one["end_reason"] == "walltime: 28 s left"
    assert (one["nodes"], one["cores"], one["done"], one["moved"]) == (2.0, 64, 20, 3)
    # no PilotEnded for cpu.2: listed, its node-hours unknown and outside the totals
    assert not two["ended"] and two["held_node_hours"] is None and two["reason"] == REPLACES_WHY
    assert (s["held_node_hours"], s["used_node_hours"], s["utilisation"]) == (0.5, 0.44, 0.88)
    assert s["without_end"] == 1
    actions = [(d["action"], d.get("pilot")) for d in s["decisions"]]
    assert actions == [("PilotStarted", "cpu.1"), ("PilotActive", "cpu.1"),
                       ("PilotStarted", "cpu.2"), ("PilotStopped", "cpu.1"),
                       ("PilotActive", "cpu.2"), ("TemplateFailed", None)]
    times = [d["t"] for d in s["decisions"]]
    assert times == sorted(times) and 0 <= times[0] < 30  # seconds since the run started
    # a workflow's report keeps the run's pilots
    assert summarize(log.filter_workflow("none"))["pilots"]["held_node_hours"] == 0.5


def test_report_command_shows_the_pilots_and_decisions(campaign):
    path, _, _ = campaign
    result = CliRunner().invoke(report_command, [str(path)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pilots (2; held and used in node-hours)" in out and "pilot decisions (6)" in out
    assert "node-hours held 0.50, used 0.44 (88%)" in out
    assert "1 pilot(s) without an end in the log" in out
    assert "(no end in the log)" in out
    for why in (STARTED_WHY, REPLACES_WHY, GIVEN_UP_WHY, "walltime: 28 s left; 3 task(s) moved"):
        assert why in out
    assert "template failed" in out and "(gpu)" in out


def test_summary_json_and_html_have_them(campaign, tmp_path):
    pytest.importorskip("matplotlib")
    path, _, _ = campaign
    files = write_report(read_log(path), tmp_path / "out")
    s = json.loads(open(files["summary"]).read())
    assert s["pilots"]["held_node_hours"] == 0.5 and len(s["pilots"]["decisions"]) == 6
    assert s["pilots"]["pilots"][0]["uid"] == "pilot.0000"  # all the pool told of it
    html = open(files["html"]).read()
    assert "<h2>Pilots (2)</h2>" in html and "<h2>Pilot decisions (6)</h2>" in html
    assert "node-hours held 0.50, used 0.44 (88%)" in html and REPLACES_WHY in html


def test_terminal_table_leaves_out_the_middle_of_many_decisions(campaign):
    path, _, _ = campaign
    log = read_log(path)
    first = log.pilot_decisions[0]
    log.pilot_decisions = [{**first, "attributes": {**first["attributes"], "at": 1e9 + i,
                                                    "reason": f"why {i:02d}"}}
                           for i in range(60)]
    text = render_text(summarize(log), width=200)
    assert "pilot decisions (60)" in text
    assert "30 decisions not shown" in text
    shown = [i for i in range(60) if f"why {i:02d}" in text]
    assert shown == list(range(15)) + list(range(45, 60))  # the first and the last ones


def test_plain_progress_prints_each_decision_and_the_pilot_counts(campaign):
    _, _, err = campaign
    lines = [ln for ln in err.splitlines() if ln.startswith("asyncflow-hpc ")]
    said = [ln.split(" ", 3)[3] for ln in lines if " pilots: " in ln]
    assert said == [
        f"pilots: cpu.1 started ({STARTED_WHY})",
        "pilots: cpu.1 active (after 45 s)",
        f"pilots: cpu.2 started ({REPLACES_WHY})",
        "pilots: cpu.1 stopped (walltime: 28 s left), 3 task(s) moved",
        "pilots: cpu.2 active (after 40 s)",
        f"pilots: no pilot of template gpu can start; the tasks only it runs fail ({GIVEN_UP_WHY})",
    ]
    counts = [ln for ln in lines if " progress [" in ln or " finished [" in ln]
    assert any(ln.endswith("; pilots 1 active, 1 queued") for ln in counts), counts
    assert counts[-1].endswith("; pilots 1 active"), counts


def test_rich_progress_prints_decisions_above_the_bar(tmp_path, clean_env):
    from rich.console import Console

    out = io.StringIO()

    async def main():
        pool = FakePool()
        flow = await WorkflowEngine.create(backend=pool, install_signal_handlers=False)
        bar = RichProgress(flow, console=Console(file=out, force_terminal=True, width=160))
        step = flow.function_task(lambda i: i)
        await asyncio.gather(*[step(i) for i in range(5)])
        pool.decide("PilotStarted", "cpu.2", REPLACES_WHY)
        await asyncio.sleep(0.6)
        await bar.close()
        pool.decide("PilotActive", "cpu.2", "active after 40 s")  # after close: not shown
        await flow.shutdown()

    run(main())
    screen = out.getvalue()
    assert f"pilots: cpu.1 started ({STARTED_WHY})" in screen
    assert f"pilots: cpu.2 started ({REPLACES_WHY})" in screen
    assert "pilots 2 queued" in screen
    assert "cpu.2 active" not in screen


def test_no_pilot_section_without_pilot_events(tmp_path, clean_env):
    path = tmp_path / "plain.jsonl"

    async def main():
        flow = await make_engine(path)
        step = flow.function_task(lambda i: i)
        await asyncio.gather(*[step(i) for i in range(5)])
        await flow.shutdown()

    run(main())
    s = summarize(read_log(path))
    assert s["tasks"] == 5 and "pilots" not in s
    text = render_text(s, width=200)
    assert "pilots (" not in text and "pilot decisions" not in text and "node-hours" not in text


def test_dashboard_lists_each_pilot_of_a_pool_until_it_ends() -> None:
    from asyncflow_hpc.dashboard.aggregate import _pilots

    rows = _pilots({"pool": {"type": "PilotPool", "pilots": [
        {"pilot": "cpu.1", "template": "cpu", "state": "active", "nodes": 2,
         "walltime_left_s": 120.5},
        {"pilot": "cpu.2", "template": "cpu", "state": "queued", "nodes": 2,
         "walltime_left_s": None},
        {"pilot": "gpu.1", "template": "gpu", "state": "ended", "nodes": 1}]}}, None, 0.0)
    assert rows == [
        {"name": "pool:cpu.1", "type": "pilot (cpu)", "state": "active", "nodes": 2,
         "walltime_left_s": 120.5},
        {"name": "pool:cpu.2", "type": "pilot (cpu)", "state": "queued", "nodes": 2,
         "walltime_left_s": None}]
