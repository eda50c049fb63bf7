"""`asyncflow-hpc report` as something to act on: every failure with its stderr tail and root
cause (CSV, JSON, terminal, HTML), retries and timeouts, a breakdown by task function,
enough resource samples in a short run, a clear refusal of files that are not telemetry logs,
and group-readable output. Every log here comes from a real campaign on the local backend."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import stat
import statistics
import threading
import time
from itertools import pairwise

import pytest
from click.testing import CliRunner
from telemetry_testlib import ENV, make_engine, run

from asyncflow_hpc.cli.report import report_command
from asyncflow_hpc.report import failure_rows, read_log, summarize
from asyncflow_hpc.report.reader import GIVE_UP_AFTER
from asyncflow_hpc.report.summary import TEXT_FUNCTIONS
from asyncflow_hpc.telemetry.resources import FAST_STEP, ResourceSampler, early_offsets

BOOMS = 25  # more failures than the terminal shows (20)
STDERR = "line one\nline two"
BAD_EXE = "sh -c 'echo line one >&2; echo line two >&2; exit 3'"
# the failed tasks of the campaign below, by name
EXPECTED_FAILED = {"boom": BOOMS + 2, "child": 5, "always_bad": 1, "slow": 1, "bad_exe": 1}


async def _campaign(path) -> None:
    flow = await make_engine(path)

    @flow.function_task
    async def ok(i):
        return i

    @flow.function_task
    async def nap(i):
        await asyncio.sleep(0.005 * (1 + i % 4))
        return i

    @flow.function_task
    async def boom(i):
        await asyncio.sleep(0.001)
        raise ValueError(f"bad value {i}")

    @flow.function_task
    async def child(x):
        return x

    tries = {"flaky": 0}

    @flow.function_task(retries=2)
    async def flaky():
        tries["flaky"] += 1
        if tries["flaky"] < 3:
            raise RuntimeError("flaky attempt")
        return "ok"

    @flow.function_task(retries=1)
    async def always_bad():
        raise RuntimeError("bad every time")

    @flow.function_task(timeout=0.2)
    async def slow():
        await asyncio.sleep(30)

    @flow.executable_task
    def bad_exe():
        return BAD_EXE

    futs = []
    async with flow.workflow_scope("alpha"):
        futs += [ok(i) for i in range(1200)]
        futs += [nap(i) for i in range(40)]
        booms = [boom(i) for i in range(BOOMS)]
        futs += booms
        futs.append(child(booms[2]))  # a dependency failure
        futs.append(child(child(boom(100))))  # a chain of two: the root is boom(100)
        futs += [flaky(), always_bad(), slow()]
        exe = bad_exe()
        futs += [exe, child(exe)]  # the root's stderr tail
        other = boom(200)
        futs.append(other)
    async with flow.workflow_scope("beta"):
        futs.append(child(other))  # its root is in another workflow
    await asyncio.gather(*futs, return_exceptions=True)
    await flow.shutdown()


@pytest.fixture(scope="module")
def campaign_log(tmp_path_factory):
    """One real campaign's log for the tests that only read it."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        mp.setenv("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "0")
        path = tmp_path_factory.mktemp("campaign") / "events.jsonl"
        run(_campaign(path))
    return path


def _invoke(args, width: int = 200):
    return CliRunner().invoke(report_command, [str(a) for a in args], env={"COLUMNS": str(width)})


def _by_id(rows):
    return {r["task_id"]: r for r in rows}


def _task_ids(path) -> dict[str, dict]:
    """task id -> its TaskFailed event (read straight from the log)."""
    out = {}
    with open(path) as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("event_type") == "TaskFailed":
                out[d["task_id"]] = d
    return out


# ------------------------------------------------------------------ failures files

@pytest.mark.timeout(180)
def test_every_failure_in_csv_and_json_with_root_causes_retries_and_timeouts(campaign_log,
                                                                             tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    result = _invoke([campaign_log, "--out", out])
    assert result.exit_code == 0, result.output
    failed_events = _task_ids(campaign_log)
    assert len(failed_events) == sum(EXPECTED_FAILED.values())

    with open(out / "failures.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    json_rows = json.loads((out / "failures.json").read_text())
    assert len(csv_rows) == len(json_rows) == len(failed_events)
    assert {r["task_id"] for r in csv_rows} == set(failed_events)
    assert [r["task_id"] for r in csv_rows] == [r["task_id"] for r in json_rows]
    for c, j in zip(csv_rows, json_rows, strict=True):  # the same rows, CSV as text
        assert c["error_message"] == j["error_message"] and c["stderr_tail"] == j["stderr_tail"]
        assert c["attempts"] == str(j["attempts"]) and c["workflow_id"] == j["workflow_id"]
    rows = _by_id(json_rows)
    by_name: dict[str, list[dict]] = {}
    for r in json_rows:
        by_name.setdefault(r["name"], []).append(r)
    assert {k: len(v) for k, v in by_name.items()} == EXPECTED_FAILED

    # a raising body
    booms = {r["error_message"]: r for r in by_name["boom"]}
    assert set(booms) == {f"bad value {i}" for i in [*range(BOOMS), 100, 200]}
    assert all(r["error_type"] == "ValueError" and r["attempts"] == 1 and not r["timed_out"]
               and r["workflow_id"] == "alpha" and r["stderr_tail"] == "" for r in booms.values())

    # an executable: the stderr tail on its own, the message without it, the command line
    (exe,) = by_name["bad_exe"]
    assert exe["error_type"] == "TaskExecutionError" and exe["stderr_tail"] == STDERR
    assert exe["error_message"].endswith("exited with code 3")  # the tail is a column of its own
    assert exe["arguments"].startswith("sh -c") and "exit 3" in exe["arguments"]
    assert exe["task_type"] == "executable"

    # dependency failures: the failed input and the root of the chain, with its error
    roots = {}
    for r in by_name["child"]:
        assert r["error_type"] == "DependencyFailureError" and r["attempts"] == 0
        assert r["failed_inputs"] and r["failed_inputs"] in rows  # a failed task of the log
        assert r["arguments"] == f"inputs: {r['failed_inputs']} ({rows[r['failed_inputs']]['name']})"
        root = rows[r["root_task_id"]]
        assert r["root_task_name"] == root["name"] and r["root_error_type"] == root["error_type"]
        assert r["root_error_message"] == root["error_message"]
        roots.setdefault(root["error_message"] if root["name"] == "boom" else "exe", []).append(r)
    assert sorted(len(v) for v in roots.values()) == [1, 1, 1, 2]
    assert len(roots["bad value 100"]) == 2  # both hops of the chain point at boom(100)
    hop2 = [r for r in roots["bad value 100"] if rows[r["failed_inputs"]]["name"] == "child"]
    assert len(hop2) == 1  # the second hop's input is the first hop, its root is still boom
    assert roots["bad value 2"][0]["failed_inputs"] == booms["bad value 2"]["task_id"]
    (exe_child,) = roots["exe"]
    assert exe_child["root_task_id"] == exe["task_id"] and exe_child["root_stderr_tail"] == STDERR
    (cross,) = roots["bad value 200"]
    assert cross["workflow_id"] == "beta" and rows[cross["root_task_id"]]["workflow_id"] == "alpha"

    # retries and timeouts
    (bad,) = by_name["always_bad"]
    assert bad["attempts"] == 2 and bad["retry_errors"] == "attempt 1: RuntimeError"
    assert bad["error_message"] == "bad every time"
    (slow,) = by_name["slow"]
    assert slow["timed_out"] is True and slow["error_type"] == "TaskTimeoutError"
    assert [r["task_id"] for r in csv_rows if r["timed_out"] == "true"] == [slow["task_id"]]
    assert sum(r["timed_out"] for r in json_rows) == 1

    # the HTML lists every failure, with the stderr tail and the root cause
    html = (out / "report.html").read_text()
    assert f"Failed tasks ({len(failed_events)})" in html
    for tid in failed_events:
        assert f"<td class='l'>{tid}</td>" in html
    assert "<pre>line one\nline two</pre>" in html
    assert f"boom ({roots['bad value 100'][0]['root_task_id']}): <b>ValueError</b> bad value 100" in html
    assert "timed out</span>" in html
    # the summary keeps 20, one of each kind at least, in order, as the CSV rows have them
    s = json.loads((out / "summary.json").read_text())
    assert s["failed_total"] == len(failed_events) and len(s["failed"]) == 20
    order = [r["task_id"] for r in json_rows]
    picked = [f["task_id"] for f in s["failed"]]
    assert picked == sorted(picked, key=order.index)
    kinds = {(r["name"], r["error_type"], r["root_error_type"]) for r in json_rows}
    assert len(kinds) == 6 and {(f["name"], f["error_type"], f["root_error_type"])
                                for f in s["failed"]} == kinds
    assert all(f == {**rows[f["task_id"]], "state": "failed"} for f in s["failed"])
    assert s["retries"] == {"tasks": 2, "retries": 3, "timeouts": 1}  # flaky 2, always_bad 1


def test_a_root_missing_from_the_log_is_read_from_the_message(campaign_log, tmp_path):
    """A log cut short (or filtered) without the root's events: the dependency failures
    still name the root task and its error, from their messages."""
    failed = _task_ids(campaign_log)
    (root_id,) = [t for t, d in failed.items()
                  if d["attributes"].get("error_message") == "bad value 100"]
    cut = tmp_path / "cut.jsonl"
    with open(campaign_log) as src, open(cut, "w") as dst:
        dst.writelines(ln for ln in src if json.loads(ln).get("task_id") != root_id)
    rows = [r for r in failure_rows(read_log(cut)) if r["root_error_message"] == "bad value 100"]
    assert len(rows) == 2  # both hops; the second hop's message says "upstream of input"
    assert any("upstream of input" in r["error_message"] for r in rows)
    for r in rows:
        assert r["root_task_id"] is None and r["root_task_name"] == "boom"
        assert r["root_error_type"] == "ValueError"


# ------------------------------------------------------------------ terminal

@pytest.mark.timeout(120)
def test_terminal_shows_stderr_tail_root_cause_attempts_and_timeouts(campaign_log):
    failed = _task_ids(campaign_log)
    exe_id = next(t for t, d in failed.items() if d["attributes"]["task_name"] == "bad_exe")
    # only the tasks of workflow alpha after the executable failed: it is among those shown
    result = _invoke([campaign_log])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"failed tasks ({len(failed)})" in text
    # the error column of the failures table, line by line
    cells = [ln.split("│")[2].strip() for ln in text.splitlines() if ln.count("│") == 3]
    for label in ("stderr tail:", "root stderr tail:"):  # the executable, its dependent
        at = [i for i, c in enumerate(cells) if c == label]
        assert len(at) == 1, text
        # the text itself follows the label, not just the label
        assert cells[at[0] + 1: at[0] + 3] == ["line one", "line two"], text
    assert f"root cause: bad_exe ({exe_id}) failed with TaskExecutionError" in text
    assert re.search(r"root cause: boom \(task\.\d+\) failed with ValueError: bad value \d+",
                     text), text
    assert "timed out" in text and "2 attempts" in text
    assert "earlier attempts: attempt 1: RuntimeError" in text
    assert f"{len(failed) - 20} more; by type:" in text
    assert "--out DIR writes them all to failures.csv" in text
    assert "retried / timed out" in text and "2 tasks retried (3 retries); 1 attempts timed out" in text

    # one workflow: a root cause in another workflow is still named
    beta = _invoke([campaign_log, "--workflow", "beta"])
    assert beta.exit_code == 0, beta.output
    assert "root cause: boom (" in beta.output and "bad value 200" in beta.output

    # at 80 columns the stderr lines are still there
    narrow = _invoke([campaign_log], width=80)
    assert narrow.exit_code == 0 and "line one" in narrow.output and "line two" in narrow.output


# ------------------------------------------------------------------ per function

def _durations_from_events(path) -> dict[str, list[float]]:
    """Per task name: durations of the tasks that reported a start and completed or failed,
    straight from the events (the report's rule)."""
    started, final, names = set(), {}, {}
    with open(path) as fh:
        for line in fh:
            d = json.loads(line)
            if d["section"] != "event" or not d.get("task_id"):
                continue
            key = d["task_id"]
            names[key] = d["attributes"]["task_name"]
            if d["event_type"] == "TaskStarted":
                started.add(key)
            elif d["event_type"] == "TaskRetried":
                started.discard(key)
            elif d["event_type"] in ("TaskCompleted", "TaskFailed"):
                final[key] = d["duration_seconds"]
    out: dict[str, list[float]] = {}
    for key, dur in final.items():
        if key in started:
            out.setdefault(names[key], []).append(dur)
    return out


@pytest.mark.timeout(180)
def test_breakdown_by_task_function(campaign_log, tmp_path):
    s = summarize(read_log(campaign_log))
    fns = {f["function"]: f for f in s["functions"]}
    assert s["functions_total"] == len(fns) == 8
    assert [f["function"] for f in s["functions"][:2]] == ["ok", "nap"]  # most tasks first
    assert fns["ok"]["tasks"] == fns["ok"]["completed"] == 1200 and fns["ok"]["failed"] == 0
    assert fns["nap"]["tasks"] == 40 and fns["nap"]["completed"] == 40
    assert fns["boom"]["tasks"] == fns["boom"]["failed"] == BOOMS + 2
    assert fns["child"]["tasks"] == 5 and fns["child"]["failed"] == 5
    assert fns["flaky"]["retries"] == 2 and fns["flaky"]["completed"] == 1
    assert fns["always_bad"]["retries"] == 1 and fns["always_bad"]["failed"] == 1
    assert fns["slow"]["timeouts"] == 1 and fns["slow"]["failed"] == 1
    assert sum(f["timeouts"] for f in fns.values()) == 1
    for name, f in fns.items():
        assert f["tasks"] == f["completed"] + f["failed"] + f["canceled"], name
    # the percentiles, against the events read independently
    durations = _durations_from_events(campaign_log)
    for name in ("nap", "boom", "slow"):
        vals = sorted(durations[name])
        f = fns[name]
        assert f["max"] == pytest.approx(vals[-1]) and len(vals) >= 1
        if len(vals) > 1:
            q = statistics.quantiles(vals, n=100, method="inclusive")
            assert f["p50"] == pytest.approx(q[49])
            assert f["p90"] == pytest.approx(q[89])
            assert f["p99"] == pytest.approx(q[98])
    assert fns["nap"]["p50"] >= 0.005 and fns["slow"]["max"] >= 0.1
    assert fns["child"]["p50"] is None  # never ran
    # the terminal table
    result = _invoke([campaign_log])
    assert result.exit_code == 0, result.output
    assert "by task function" in result.output
    row = next(ln for ln in result.output.splitlines() if ln.split()[:1] == ["boom"])
    assert row.split()[1:5] == [str(BOOMS + 2), str(BOOMS + 2), "0", "0"]
    row = next(ln for ln in result.output.splitlines() if ln.split()[:1] == ["ok"])
    assert row.split()[1:3] == ["1,200", "0"]
    assert len(s["functions"]) <= TEXT_FUNCTIONS
    # summary.json and the HTML, with thousands separators
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    assert _invoke([campaign_log, "--out", out]).exit_code == 0
    sj = json.loads((out / "summary.json").read_text())
    assert {f["function"]: f["tasks"] for f in sj["functions"]} == {
        n: f["tasks"] for n, f in fns.items()}
    assert sj["functions"][1]["p90"] == pytest.approx(fns["nap"]["p90"])
    html = (out / "report.html").read_text()
    assert "<h2>By task function</h2>" in html
    assert '<td class="l">ok</td><td class="l">function</td><td class="">1,200</td>' in html
    total = s["tasks"]
    assert total > 1000 and f'<td class="">{total:,}</td>' in html
    assert f'<td class="">{total}</td>' not in html


# ------------------------------------------------------------------ utilisation

@pytest.mark.timeout(120)
@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_one_second_run_has_ten_resource_samples(tmp_path, monkeypatch, writer):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)  # the default interval (5 s)
    monkeypatch.setenv("ASYNCFLOW_HPC_TELEMETRY_WRITER", writer)
    path = tmp_path / "ev.jsonl"
    before = set(threading.enumerate())

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def nap(i):
            await asyncio.sleep(0.25)
            return i

        t0 = time.monotonic()
        for _ in range(4):  # about one second
            await asyncio.gather(*[nap(i) for i in range(4)])
        await flow.shutdown()
        return time.monotonic() - t0

    took = run(main())
    assert 0.95 < took < 5
    log = read_log(path)
    assert len(log.resources) >= 10, [r["event_time"] for r in log.resources]
    times = [r["event_time"] for r in log.resources]
    assert times == sorted(times)  # the early samples come first, in order
    assert len({r["event_id"] for r in log.resources}) == len(times)
    assert all(r["cpu_percent"] is not None and 0 <= r["cpu_percent"] <= 100
               and r["memory_percent"] > 0 for r in log.resources)
    s = summarize(log)
    assert s["utilisation"]["samples"] == len(times) >= 10
    (node,) = s["utilisation"]["nodes"].values()
    assert node["samples"] == len(times) and node["memory_max"] > 0
    # no sampling thread outlives the engine
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert left == []


def test_early_samples_back_off_to_the_interval():
    five = early_offsets(5.0)
    assert len([t for t in five if t <= 1.0]) == 10  # every 0.1 s at first
    assert five[:3] == pytest.approx([0.1, 0.2, 0.3]) and max(five) < 5.0
    gaps = [b - a for a, b in pairwise(five)]
    assert all(b > a - 1e-6 for a, b in pairwise(gaps)) and gaps[-1] < 5.0  # then wider
    assert len(five) <= 30
    hour = early_offsets(3600.0)
    assert len(hour) <= 40 and max(hour) < 3600  # a long interval costs a few more, no more
    assert early_offsets(FAST_STEP) == [] and early_offsets(0.05) == []
    assert len(early_offsets(1.0)) == 9  # the writer's own sample is the tenth


def test_the_writers_first_sample_ends_the_early_ones():
    sampler = ResourceSampler("s", "local", lambda: '"trace_id":null,"span_id":null',
                              interval=10.0)
    sampler.prime()  # on this thread, which stays alive
    time.sleep(0.45)
    first = sampler.line().splitlines()
    assert len(first) >= 4  # three or four early samples, then the writer's
    rows = [json.loads(x) for x in first]
    assert all(r["event_type"] == "ResourceUpdate" and r["section"] == "event" for r in rows)
    assert [r["event_time"] for r in rows] == sorted(r["event_time"] for r in rows)
    time.sleep(0.35)
    assert len(sampler.line().splitlines()) == 1  # no early samples any more
    sampler._early_thread.join(1)
    assert not sampler._early_thread.is_alive()


# ------------------------------------------------------------------ not a telemetry log

@pytest.mark.parametrize("content", [
    b"hello\nthis is not a log\n",
    json.dumps({"results": [1, 2, 3], "ok": True}, indent=2).encode(),
    b'{"section": "header", "version": 2}\n{"section": "row", "value": 1}\n',
    b'{"event": "start", "time": 1}\n{"event": "stop", "time": 2}\n',
    bytes(range(256)) * 40,
    b"",
    b"x\n" * (GIVE_UP_AFTER + 10),
])
def test_a_file_that_is_not_a_telemetry_log_exits_2_with_one_line(tmp_path, content):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    result = _invoke([path])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"asyncflow-hpc report: {path}")
    assert "not an asyncflow-hpc telemetry log" in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ modes

def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.timeout(180)
def test_group_readable_output_and_private_by_default(campaign_log, tmp_path):
    pytest.importorskip("matplotlib")
    old = os.umask(0o077)  # the strictest umask: the modes must not depend on it
    try:
        shared = tmp_path / "shared" / "report"
        assert _invoke([campaign_log, "--out", shared, "--group-readable"]).exit_code == 0
        private = tmp_path / "private" / "report"
        assert _invoke([campaign_log, "--out", private]).exit_code == 0
        existing = tmp_path / "existing"
        existing.mkdir(mode=0o700)
        assert _invoke([campaign_log, "--out", existing, "--group-readable"]).exit_code == 0
    finally:
        os.umask(old)
    names = {"summary.json", "failures.csv", "failures.json", "report.html", "timeline.png",
             "concurrency.png", "utilisation.png", "durations.png"}
    for folder, dmode, fmode in ((shared, 0o750, 0o640), (private, 0o700, 0o600),
                                 (existing, 0o750, 0o640)):
        assert {p.name for p in folder.iterdir()} == names
        assert _mode(folder) == dmode, folder
        for p in folder.iterdir():
            assert _mode(p) == fmode, p
    assert _mode(shared.parent) == 0o750 and _mode(private.parent) == 0o700
    # the CSV holds every failure in either case
    n = len(list(csv.DictReader(io.StringIO((shared / "failures.csv").read_text()))))
    assert n == sum(EXPECTED_FAILED.values())
