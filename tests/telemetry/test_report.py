"""Reports: reading (also truncated logs), workflow filtering, CLI, figures on real logs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from telemetry_testlib import (
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    make_engine,
    run,
)

import asyncflow_hpc
from asyncflow_hpc.cli.report import report_command
from asyncflow_hpc.report import read_log, render_text, summarize, write_report

pytestmark = pytest.mark.usefixtures("clean_env")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))


def _two_workflows(path) -> None:
    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def work(i):
            await asyncio.sleep(0.002 * (i % 4))
            if i == 7:
                raise ValueError("bad input 7")
            return i

        futs = []
        async with flow.workflow_scope("alpha"):
            futs += [work(i) for i in range(10)]
        async with flow.workflow_scope("beta"):
            futs += [work(100 + i) for i in range(5)]
        await asyncio.gather(*futs, return_exceptions=True)
        await flow.shutdown()

    run(main())


@pytest.mark.timeout(120)
def test_summary_and_workflow_filter(tmp_path):
    path = tmp_path / "ev.jsonl"
    _two_workflows(path)
    log = read_log(path)
    s = summarize(log)
    assert s["tasks"] == 15 and s["complete"] and s["bad_lines"] == 0
    assert s["by_state"]["completed"] == 14 and s["by_state"]["failed"] == 1
    assert s["failed"][0]["error_type"] == "ValueError"
    assert "bad input 7" in s["failed"][0]["error_message"]
    assert [w["workflow_id"] for w in s["workflows"]] == ["alpha", "beta"]
    assert all(w["makespan_s"] > 0 for w in s["workflows"])
    assert s["durations"]["p50"] is not None and s["tasks_per_s"] > 0
    assert log.workflow_ids == ["alpha", "beta"]

    beta = read_log(path, workflow="beta")
    assert len(beta.tasks) == 5 and {t.workflow_id for t in beta.tasks} == {"beta"}
    sb = summarize(beta)
    assert sb["by_state"]["failed"] == 0 and [w["workflow_id"] for w in sb["workflows"]] == ["beta"]
    text = render_text(sb)
    assert "beta" in text and "alpha" not in text

    result = CliRunner().invoke(report_command, [str(path), "--workflow", "alpha"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" not in result.output
    assert "ValueError: bad input 7" in result.output
    result = CliRunner().invoke(report_command, [str(path), "--workflow", "gamma"])
    assert result.exit_code != 0 and "alpha, beta" in result.output


@pytest.mark.timeout(120)
def test_truncated_last_line_is_tolerated(tmp_path):
    path = tmp_path / "ev.jsonl"
    _two_workflows(path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert b"SessionEnded" in b"".join(lines[-4:])
    cut = tmp_path / "cut.jsonl"
    # the end of the session gone, and the last line half written
    cut.write_bytes(b"".join(lines[:-5]) + lines[-5][:40])
    log = read_log(cut)
    assert log.bad_lines == 1 and log.truncated
    assert summarize(log)["tasks"] == 15


KILLED_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from concurrent.futures import ThreadPoolExecutor
    from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine

    async def main(path):
        flow = await WorkflowEngine.create(
            backend=await LocalExecutionBackend(ThreadPoolExecutor(4)), telemetry=path,
            install_signal_handlers=False)

        @flow.function_task
        async def step(i):
            await asyncio.sleep(0.002)
            if i % 50 == 3:
                raise RuntimeError(f"step {i} failed")
            return i

        i = 0
        async with flow.workflow_scope("doomed"):
            while True:
                await asyncio.gather(*[step(i + k) for k in range(50)], return_exceptions=True)
                i += 50
                if i == 500:
                    print("ready", flush=True)

    asyncio.run(main(sys.argv[1]))
""")


@pytest.mark.timeout(120)
def test_a_run_killed_with_sigkill_leaves_a_readable_log(tmp_path):
    path = tmp_path / "killed.jsonl"
    script = tmp_path / "campaign.py"
    script.write_text(KILLED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2.5)  # more than two flush intervals
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    raw = path.read_bytes().split(b"\n")
    for line in raw[:-1]:  # every complete line is a JSON object
        assert isinstance(json.loads(line), dict)
    log = read_log(path)
    assert log.truncated and log.bad_lines <= 1
    s = summarize(log)
    assert s["tasks"] >= 500 and s["by_state"]["completed"] >= 450
    assert s["by_state"]["failed"] >= 10 and s["error_types"] == {"RuntimeError": s["failed_total"]}
    assert [w["workflow_id"] for w in s["workflows"]] == ["doomed"]
    result = CliRunner().invoke(report_command, [str(path)])
    assert result.exit_code == 0, result.output
    assert "doomed" in result.output


@pytest.mark.timeout(120)
def test_report_renders_on_a_real_10000_task_log(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ev10k.jsonl"

    async def main():
        flow = await make_engine(path)

        @flow.function_task
        async def work(i):
            if i % 3 == 0:
                await asyncio.sleep(0.001 * (i % 7))
            if i % 500 == 11:
                raise ValueError(f"task {i}")
            return i

        @flow.function_task
        def crunch(*xs):  # thread-pool tasks: they report TaskStarted
            return len(xs)

        futs = []
        for w in range(4):
            async with flow.workflow_scope(f"batch-{w}"):
                part = [work(w * 2475 + i) for i in range(2475)]
                futs += part
                futs += [crunch(*part[k:k + 99]) for k in range(0, 2475, 99)]
        results = await asyncio.gather(*futs, return_exceptions=True)
        await flow.shutdown()
        return len(results)

    assert run(main()) == 10_000
    out = tmp_path / "report"
    result = CliRunner().invoke(report_command, [str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    s = json.loads((out / "summary.json").read_text())
    assert s["tasks"] == 10_000 and s["complete"]
    assert s["by_state"]["completed"] + s["by_state"]["failed"] == 10_000
    assert len(s["workflows"]) == 4
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "src='http" not in html and "<script" not in html  # self-contained
    for name in ("timeline", "concurrency", "utilisation", "durations"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        assert base64.b64encode(png).decode() in html
    # one workflow only, into another directory
    files = write_report(read_log(path, workflow="batch-2"), tmp_path / "b2")
    assert json.loads(open(files["summary"]).read())["tasks"] == 2500


@pytest.mark.timeout(120)
def test_small_report_figures(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ev.jsonl"
    _two_workflows(path)
    files = write_report(read_log(path), tmp_path / "out")
    assert set(files) == {"summary", "timeline", "concurrency", "utilisation", "durations",
                          "html"}
    for f in files.values():
        assert os.path.getsize(f) > 0
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600  # like the log: private
