"""The dashboard in a real browser (Debian's Chromium, headless) during a running campaign:
the counts on the page advance while it runs, and the page of the finished log shows the
report's counts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import asyncflow_hpc
from asyncflow_hpc.report import read_log, summarize

pytest.importorskip("aiohttp")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("Chromium is not installed (scripts/test.sh installs Debian's chromium)",
                    pytrace=False)
    pytest.skip("Chromium is not installed", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))
CAMPAIGN = textwrap.dedent('''
    import asyncio, time
    from asyncflow_hpc import WorkflowEngine

    async def main():
        async with WorkflowEngine.create() as flow:
            @flow.function_task
            def step(i):
                time.sleep(0.05)  # long enough for a slow browser to look 3 times
                if i % 100 == 3:
                    raise ValueError(f"step {i} failed")
                return i

            @flow.block
            async def stage(lo, hi):
                return await asyncio.gather(*[step(i) for i in range(lo, hi)],
                                            return_exceptions=True)

            async with flow.workflow_scope("sweep"):
                await asyncio.gather(stage(0, 1000), stage(1000, 2000))

    asyncio.run(main())
''')
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=2500"]


def browse(url: str, profile, *extra: str) -> str:
    """The page's DOM after its scripts ran for 2.5 s (virtual time), or what ``extra`` asks."""
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          *(extra or ("--dump-dom",)), url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def counts(dom: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'id="n-([a-z]+)" data-value="(\d+)"', dom)}


def test_the_page_follows_a_running_campaign(tmp_path):
    (tmp_path / "campaign.py").write_text(CAMPAIGN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_HPC_")}
    env.update(PYTHONPATH=REPO, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow_hpc", "run", "campaign.py", "-q",
                             "--telemetry", "ev.jsonl", "--dashboard", "127.0.0.1:0"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("dashboard at" in x for x in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            time.sleep(0.1)
        url = next(x for x in lines if "dashboard at" in x).split("dashboard at ")[1].strip()
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        seen = []
        for _ in range(3):
            time.sleep(1.5)
            if proc.poll() is not None:
                break
            seen.append(counts(browse(url, tmp_path / "profile")))
        # the browser without the token (a fresh profile, no cookie): no page
        assert 'id="n-done"' not in browse(url.split("?")[0], tmp_path / "profile2")
        assert proc.wait(120) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = [c["done"] + c["failed"] for c in seen if c]
    assert len(done) >= 2 and done == sorted(done) and done[-1] > done[0], seen
    assert all(c["running"] <= 8 for c in seen if c), seen  # running bodies: the threads

    # the finished log, served by `asyncflow-hpc dashboard`: the report's counts
    server = subprocess.Popen([sys.executable, "-m", "asyncflow_hpc", "dashboard", "ev.jsonl",
                               "--address", "127.0.0.1:0"], cwd=tmp_path, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = line.split(" at ")[1].strip()
        dom = browse(url, tmp_path / "profile", "--dump-dom")
        shot = tmp_path / "dashboard.png"
        browse(url, tmp_path / "profile", "--window-size=1400,1200", f"--screenshot={shot}")
    finally:
        server.terminate()
        server.wait(20)
    final = counts(dom)
    s = summarize(read_log(str(tmp_path / "ev.jsonl")))
    assert final["done"] == s["by_state"]["completed"] == 1980
    assert final["failed"] == s["by_state"]["failed"] == 20
    assert final["pending"] == 0 and final["running"] == 0 and final["blocks"] == 2
    assert 'data-live="0"' in dom and "step 3 failed" in dom
    assert shot.stat().st_size > 20_000

