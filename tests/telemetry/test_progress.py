"""Live progress: plain lines when stderr is not a terminal, rich bar on one, nothing when off."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import textwrap

import pytest
from telemetry_testlib import (
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    make_engine,
    run,
)

import asyncflow_hpc
from asyncflow_hpc.progress import PlainProgress, RichProgress, resolve_mode

pytestmark = pytest.mark.usefixtures("clean_env")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))


async def _work(flow, n=60):
    @flow.function_task
    async def step(i):
        await asyncio.sleep(0.005 * (i % 5))
        if i % 20 == 7:
            raise ValueError(i)
        return i

    await asyncio.gather(*[step(i) for i in range(n)], return_exceptions=True)
    await asyncio.sleep(0.12)


@pytest.mark.timeout(120)
def test_plain_lines_when_stderr_is_not_a_terminal(capsys, clean_env):
    clean_env.setenv("ASYNCFLOW_HPC_PROGRESS_INTERVAL", "0.05")

    async def main():
        flow = await make_engine(progress="auto")  # captured stderr is not a tty: plain
        await _work(flow)
        await flow.shutdown()

    run(main())
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("asyncflow-hpc ")]
    assert len(lines) >= 2, err
    assert all("done" in ln and "running" in ln and "failed" in ln and "pending" in ln
               for ln in lines)
    assert "finished" in lines[-1] and "57 done" in lines[-1] and "3 failed" in lines[-1]


@pytest.mark.timeout(120)
def test_environment_variable_and_off(capsys, clean_env):
    clean_env.setenv("ASYNCFLOW_HPC_PROGRESS_INTERVAL", "0.05")
    clean_env.setenv("ASYNCFLOW_HPC_PROGRESS", "off")

    async def main():
        flow = await make_engine()
        await _work(flow, 10)
        await flow.shutdown()

    run(main())
    assert "asyncflow-hpc" not in capsys.readouterr().err

    clean_env.setenv("ASYNCFLOW_HPC_PROGRESS", "plain")
    run(main())
    assert "finished" in capsys.readouterr().err


def test_mode_resolution():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert resolve_mode("auto", Tty()) == "rich"
    assert resolve_mode("auto", io.StringIO()) == "plain"
    assert resolve_mode("PLAIN") == "plain"
    assert resolve_mode("quiet") == "off" and resolve_mode("off") == "off"
    assert resolve_mode("bogus", io.StringIO()) == "plain"


@pytest.mark.timeout(120)
def test_rich_display_and_plain_heartbeat():
    from rich.console import Console

    async def main():
        flow = await make_engine()
        out = io.StringIO()
        bar = RichProgress(flow, console=Console(file=out, force_terminal=True, width=100))
        buf = io.StringIO()
        plain = PlainProgress(flow, interval=0.02, stream=buf)
        await _work(flow, 30)
        await bar.close()
        await plain.close()
        await flow.shutdown()
        return out.getvalue(), buf.getvalue()

    rich_out, plain_out = run(main())
    assert "done 28" in rich_out and "failed 2" in rich_out and "100%" in rich_out
    assert plain_out.splitlines()[-1].split("finished")[1].startswith(" [")


CAMPAIGN = textwrap.dedent("""
    import asyncio
    from asyncflow_hpc import WorkflowEngine

    async def main():
        flow = await WorkflowEngine.create()  # backend, telemetry, progress: from the CLI

        @flow.function_task
        async def step(i):
            await asyncio.sleep(0.01 * (i % 10))
            if i % 25 == 3:
                raise ValueError(f"step {i}")
            return i

        async with flow.workflow_scope("cli-wf"):
            await asyncio.gather(*[step(i) for i in range(200)], return_exceptions=True)
        await asyncio.sleep(0.3)
        await flow.shutdown()
        print("script done")

    asyncio.run(main())
""")


def _run_cli(tmp_path, *flags, stderr=subprocess.PIPE):
    (tmp_path / "campaign.py").write_text(CAMPAIGN)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               ASYNCFLOW_HPC_PROGRESS_INTERVAL="0.05", ASYNCFLOW_HPC_TELEMETRY_INTERVAL="0",
               COLUMNS="100", TERM="xterm")
    for name in ("ASYNCFLOW_HPC_TELEMETRY", "ASYNCFLOW_HPC_PROGRESS", "ASYNCFLOW_HPC_BACKEND"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", "run", "campaign.py", *flags],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=100)


@pytest.mark.timeout(150)
def test_cli_run_prints_plain_lines_when_not_a_terminal_and_nothing_when_quiet(tmp_path):
    out = _run_cli(tmp_path, "--telemetry", "ev.jsonl")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "script done"  # progress goes to stderr only
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("asyncflow-hpc ")]
    assert len(lines) >= 2, out.stderr
    assert "\x1b[" not in out.stderr  # no terminal control sequences in a log file
    assert "progress" in lines[0] and "finished" in lines[-1]
    assert "192 done, 0 running, 8 failed, 0 cancelled, 0 pending" in lines[-1]
    # the CLI flag switched telemetry on; the report reads the file
    from asyncflow_hpc.report import read_log, summarize

    s = summarize(read_log(tmp_path / "ev.jsonl", workflow="cli-wf"))
    assert s["tasks"] == 200 and s["by_state"]["failed"] == 8 and s["complete"]

    quiet = _run_cli(tmp_path, "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "script done"
    # no progress line (the only line: where the earlier run's journal was moved)
    assert not [ln for ln in quiet.stderr.splitlines() if not ln.startswith("journal: ")], \
        quiet.stderr


@pytest.mark.timeout(150)
def test_cli_run_shows_a_live_display_on_a_terminal(tmp_path):
    import pty

    master, slave = pty.openpty()
    try:
        out = _run_cli(tmp_path, stderr=slave)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed and everything was read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert out.returncode == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in screen  # a live display redraws in place
    assert "done 192" in screen and "failed 8" in screen and "100%" in screen
    assert "asyncflow-hpc " not in screen  # not the plain log lines
