"""The live dashboard (issue 16): its access token, bind address, read-only routes, the
log-following mode (a writer appending while the page reads) and bounded payloads."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest
from telemetry_testlib import clean_env_fixture, make_engine, run  # noqa: F401

pytest.importorskip("aiohttp")

from asyncflow_hpc.dashboard import serve_log  # noqa: E402
from asyncflow_hpc.dashboard.aggregate import Aggregator  # noqa: E402
from asyncflow_hpc.report import read_log, summarize  # noqa: E402


def get(url: str, method: str = "GET", cookie: str | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, method=method)
    if cookie:
        req.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def make_log(path, tasks: int = 300, fail_every: int = 50) -> None:
    async def main():
        flow = await make_engine(path, workers=4)

        @flow.function_task
        def work(i):
            time.sleep(0.001)
            if i % fail_every == 7:
                raise ValueError(f"bad input {i}")
            return i

        async with flow.workflow_scope("wf-a"):
            a = [work(i) for i in range(tasks // 2)]
        async with flow.workflow_scope("wf-b"):
            b = [work(i) for i in range(tasks // 2, tasks)]
        await asyncio.gather(*a, *b, return_exceptions=True)
        await flow.shutdown()

    run(main(), 120)


def test_token_bind_address_and_read_only(tmp_path, clean_env):
    log = tmp_path / "ev.jsonl"
    make_log(log, 100)
    dash = serve_log(log, "0")
    try:
        assert dash.url.startswith("http://127.0.0.1:")
        base, token = dash.url.split("/?token=")
        # it listens on loopback only
        conns = [c for c in psutil.Process().net_connections()
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == dash.thread.port]
        assert conns and {c.laddr.ip for c in conns} == {"127.0.0.1"}
        for path in ("/", "/api/state", "/static/app.js"):
            assert get(base + path)[0] == 403
            assert get(base + path + "?token=" + token[:-1] + "x")[0] == 403
        status, body, headers = get(base + "/?token=" + token)
        assert status == 200 and b"asyncflow-hpc" in body
        assert headers.get("Referrer-Policy") == "no-referrer"
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"]
        # the page's own files with the cookie; nothing else of the file system
        assert get(base + "/static/uPlot.min.js", cookie=cookie)[0] == 200
        for bad in ("/static/server.py", "/static/..%2fserver.py", "/static/../server.py",
                    "/etc/passwd", "/api/other"):
            assert get(base + bad + "?token=" + token)[0] in (403, 404), bad
        # read-only: no method but GET/HEAD
        for method in ("POST", "PUT", "DELETE"):
            assert get(base + "/api/state?token=" + token, method)[0] == 405
        state = json.loads(get(base + "/api/state", cookie=cookie)[1])
        assert state["tasks"]["done"] + state["tasks"]["failed"] == 100
    finally:
        dash.close()
    assert not dash.thread._thread.is_alive()


def test_following_a_log_while_it_is_written(tmp_path, clean_env):
    """A writer appends a real log in pieces (cut in the middle of lines); the page's counts
    only grow, and end equal to the report's."""
    src = tmp_path / "full.jsonl"
    make_log(src, 600)
    data = src.read_bytes()
    live = tmp_path / "live.jsonl"
    dash = serve_log(live, "127.0.0.1:0")  # before the file exists
    base, token = dash.url.split("/?token=")
    seen = []

    def writer():
        with open(live, "wb") as fh:
            step = len(data) // 40 + 7
            for i in range(0, len(data), step):
                fh.write(data[i:i + step])
                fh.flush()
                time.sleep(0.1)

    try:
        assert json.loads(get(base + "/api/state?token=" + token)[1])["lines"] == 0
        t = threading.Thread(target=writer)
        t.start()
        while t.is_alive():
            state = json.loads(get(base + "/api/state?token=" + token)[1])
            seen.append(state["tasks"]["done"] + state["tasks"]["failed"])
            time.sleep(0.5)
        t.join()
        deadline = time.monotonic() + 20
        while True:
            state = json.loads(get(base + "/api/state?token=" + token)[1])
            if not state["live"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        dash.close()
    assert seen == sorted(seen) and len(set(seen)) >= 2, seen  # it advanced while written
    s = summarize(read_log(str(src)))
    by = s["by_state"]
    assert not state["live"]
    assert state["tasks"]["done"] == by["completed"] and state["tasks"]["failed"] == by["failed"]
    assert {r[0]: r[1] + r[2] for r in state["workflows"]} == {"wf-a": 300, "wf-b": 300}
    assert state["failed_total"] == by["failed"] == 12
    assert all("bad input" in f["error"] for f in state["failures"])


def test_payload_and_memory_stay_bounded(tmp_path, clean_env):
    """20,000 real tasks through the aggregator: the page's data stays small and the
    aggregator keeps no per-task state (memory does not grow with more tasks)."""
    import tracemalloc

    log = tmp_path / "ev.jsonl"
    make_log(log, 20_000, fail_every=10)
    agg = Aggregator()
    lines = log.read_text().splitlines()
    tracemalloc.start()
    for line in lines[: len(lines) // 2]:
        agg.feed(line)
    half = tracemalloc.get_traced_memory()[0]
    for line in lines[len(lines) // 2:]:
        agg.feed(line)
    full = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    payload = json.dumps(agg.snapshot()).encode()
    assert len(payload) < 200_000, len(payload)
    assert full - half < 2_000_000, (half, full)  # bounded: the second 10,000 add ~nothing new
    assert agg.snapshot()["failed_total"] == 2_000


def test_bad_address_is_one_line(tmp_path, clean_env):
    from asyncflow_hpc.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="port must be a number"):
        serve_log(tmp_path / "x.jsonl", "127.0.0.1:http")


def test_a_killed_campaign_leaves_no_server_and_no_state(tmp_path, clean_env):
    """kill -9 of the campaign: its dashboard's server process ends within seconds and
    removes the campaign's state folder; nothing is left listening."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "k.py"
    script.write_text(
        "import asyncio, time\n"
        "from asyncflow_hpc import WorkflowEngine\n"
        "async def main():\n"
        "    async with WorkflowEngine.create(dashboard='127.0.0.1:0') as flow:\n"
        "        @flow.function_task\n"
        "        def f():\n"
        "            time.sleep(60)\n"
        "        print('URL', flow.dashboard_url, flush=True)\n"
        "        await f()\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        assert line.startswith("URL "), line
        url = line.split()[1]
        servers = [c for c in psutil.Process(proc.pid).children()
                   if "asyncflow_hpc.dashboard.process" in " ".join(c.cmdline())]
        assert len(servers) == 1
        state_dir = servers[0].cmdline()[servers[0].cmdline().index("--state") + 1]
        assert get(url.replace("/?", "/api/state?"))[0] == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, alive
    assert not os.path.exists(os.path.dirname(state_dir))
