"""Random DAGs (hypothesis) evaluated by the engine match a sequential evaluation."""

import asyncio

from conftest import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow_hpc import DependencyFailureError


@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    nodes = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=4)) if i else []
        kind = draw(st.sampled_from(["async", "sync", "fail"] if i else ["async", "sync"]))
        nodes.append((parents, kind, draw(st.integers(-5, 5))))
    return nodes


def sequential(nodes):
    out = []
    for parents, kind, k in nodes:
        vals = [out[p] for p in parents]
        if any(isinstance(v, Exception) for v in vals):
            out.append(DependencyFailureError("x"))
        elif kind == "fail" and k < -3:
            out.append(ValueError(k))
        else:
            out.append(sum(vals) * 2 + k)
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=dags())
def test_random_dag_matches_sequential(make_flow, nodes):
    expected = sequential(nodes)

    async def main():
        flow = await make_flow()

        @flow.function_task
        async def anode(k, *vals):
            await asyncio.sleep(0)
            return sum(vals) * 2 + k

        @flow.function_task
        def snode(k, *vals):
            return sum(vals) * 2 + k

        @flow.function_task
        async def fnode(k, *vals):
            if k < -3:
                raise ValueError(k)
            return sum(vals) * 2 + k

        futs = []
        for parents, kind, k in nodes:
            fn = {"async": anode, "sync": snode, "fail": fnode}[kind]
            futs.append(fn(k, *[futs[p] for p in parents]))
        got = await asyncio.gather(*futs, return_exceptions=True)
        await flow.shutdown()
        return got

    got = run(main())
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, Exception):
            assert type(g) is type(e)
        else:
            assert g == e
