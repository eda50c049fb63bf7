"""The dashboard of a campaign on a pilot: the pilot's state and the walltime left on the
page, the counts of warm-pool tasks advancing."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from radical_helpers import close, run

pytestmark = pytest.mark.radical
pytest.importorskip("aiohttp")


def state(url: str) -> dict:
    with urllib.request.urlopen(url.replace("/?", "/api/state?"), timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(300)
def test_pilot_state_and_walltime_on_the_page(make_flow):
    async def main():
        flow = await make_flow(dashboard="127.0.0.1:0")
        try:
            @flow.function_task
            def square(x):
                return x * x

            assert sum(await asyncio.gather(*[square(i) for i in range(200)])) == 2646700
            await asyncio.sleep(6)  # the backends' description is read every 5 s
            loop = asyncio.get_running_loop()
            got = await loop.run_in_executor(None, state, flow.dashboard_url)
        finally:
            await close(flow)
        return got

    got = run(main(), 240)
    assert got["tasks"]["done"] == 200 and got["tasks"]["pending"] == 0
    [pilot] = [b for b in got["backends"] if b.get("resource")]
    assert pilot["resource"] == "local.localhost"
    assert pilot["state"] == "PMGR_ACTIVE", pilot
    assert 0 < pilot["walltime_left_s"] <= 45 * 60, pilot
    assert {r[0]: r[1] for r in got["functions"]} == {"square": 200}
