"""Live progress: plain lines when stderr is not a terminal, rich bar on one, nothing when off."""

from __future__ import annotations

import asyncio
import io

import pytest
from telemetry_testlib import make_engine, run

from asyncflow_hpc.progress import PlainProgress, RichProgress, resolve_mode

pytestmark = pytest.mark.usefixtures("clean_env")


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
