"""Spans: session -> workflow -> block -> task, in the JSONL file and through OpenTelemetry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest
from telemetry_testlib import (
    clean_env_fixture,  # noqa: F401 - the clean_env fixture
    make_engine,
    read_lines,
    run,
    spans,
)

import asyncflow_hpc
from asyncflow_hpc.telemetry import attach

pytestmark = pytest.mark.usefixtures("clean_env")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(asyncflow_hpc.__file__)))


async def _nested_run(flow):
    @flow.function_task
    async def leaf(x):
        await asyncio.sleep(0.001)
        return x

    @flow.block
    async def inner(x):
        return await leaf(x)

    @flow.block
    async def outer(x):
        a = await leaf(x)
        return await inner(a)

    async with flow.workflow_scope("wf-nest"):
        assert await outer(1) == 1
        assert await leaf(2) == 2
    assert await leaf(3) == 3  # outside any workflow


def _check_jsonl_nesting(lines):
    by_id = {s["span_id"]: s for s in spans(lines)}
    (session,) = spans(lines, "session")
    (wf,) = spans(lines, "workflow")
    assert session["parent_span_id"] is None
    assert wf["parent_span_id"] == session["span_id"]
    assert wf["attributes"]["workflow_id"] == "wf-nest"
    assert len({s["trace_id"] for s in by_id.values()}) == 1
    blocks = {s["attributes"]["task_name"]: s for s in spans(lines, "block")}
    assert blocks["outer"]["parent_span_id"] == wf["span_id"]
    assert blocks["inner"]["parent_span_id"] == blocks["outer"]["span_id"]
    tasks = spans(lines, "task")
    assert len(tasks) == 4
    parents = sorted(by_id[t["parent_span_id"]]["name"] + ":" +
                     str(by_id[t["parent_span_id"]]["attributes"].get("task_name", ""))
                     for t in tasks)
    assert parents == ["block:inner", "block:outer", "session:", "workflow:"]
    for s in by_id.values():
        assert s["start_ns"] <= s["end_ns"]
        parent = by_id.get(s["parent_span_id"])
        if parent is not None:  # a child lies within its parent
            assert parent["start_ns"] <= s["start_ns"] and s["end_ns"] <= parent["end_ns"]
    for t in tasks + list(blocks.values()):
        if t["attributes"]["task_id"] != "task.000006":  # the one outside the workflow
            assert t["attributes"]["workflow_id"] == "wf-nest"
    return by_id


@pytest.mark.timeout(120)
def test_jsonl_spans_nest(tmp_path):
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine(path)
        await _nested_run(flow)
        await flow.shutdown()

    run(main())
    _check_jsonl_nesting(read_lines(path))


@pytest.mark.timeout(120)
def test_opentelemetry_spans_nest_like_the_jsonl(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = tmp_path / "ev.jsonl"

    async def main():
        flow = await make_engine()
        session = attach(flow, path, tracer_provider=provider)
        await _nested_run(flow)
        await session.close()
        await flow.shutdown()

    run(main())
    jsonl = _check_jsonl_nesting(read_lines(path))
    otel = {f"{s.context.span_id:#x}": s for s in exporter.get_finished_spans()}
    assert set(otel) == set(jsonl)  # the same spans, with the same ids
    for sid, s in otel.items():
        j = jsonl[sid]
        assert s.name == j["name"]
        assert f"{s.context.trace_id:#x}" == j["trace_id"]
        parent = f"{s.parent.span_id:#x}" if s.parent is not None else None
        assert parent == j["parent_span_id"]
        assert s.start_time == j["start_ns"] or abs(s.start_time - j["start_ns"]) < 1000
        assert s.status.status_code.name == j["status_code"] or j["status_code"] == "UNSET"
    wf = next(s for s in otel.values() if s.name == "workflow")
    assert wf.attributes["workflow_id"] == "wf-nest"
    task = next(s for s in otel.values() if s.name == "task")
    assert task.attributes["session_id"] and task.attributes["status"] == "completed"


OTEL_GLOBAL = textwrap.dedent("""
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from asyncflow_hpc import WorkflowEngine, NoopExecutionBackend

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the usual way; asyncflow-hpc finds it

    async def main():
        tracer = trace.get_tracer("user")
        with tracer.start_as_current_span("my-campaign"):
            flow = await WorkflowEngine.create(backend=NoopExecutionBackend(),
                                               telemetry=sys.argv[1],
                                               install_signal_handlers=False)
            @flow.function_task
            async def t():
                return 1
            async with flow.workflow_scope("wf-g"):
                await t()
            await flow.shutdown()

    asyncio.run(main())
    print(json.dumps([[s.name, s.context.span_id, s.parent.span_id if s.parent else None]
                      for s in exporter.get_finished_spans()]))
""")


@pytest.mark.timeout(120)
def test_a_globally_configured_tracer_provider_is_used(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    script = tmp_path / "otel_user.py"
    script.write_text(OTEL_GLOBAL)
    path = tmp_path / "ev.jsonl"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ASYNCFLOW_HPC_OTEL", None)
    out = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True,
                         text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout.strip().splitlines()[-1])
    names = {name: (sid, parent) for name, sid, parent in exported}
    assert set(names) == {"my-campaign", "session", "workflow", "task"}
    # the session nests under the span the user had open when the engine started
    assert names["session"][1] == names["my-campaign"][0]
    assert names["workflow"][1] == names["session"][0]
    assert names["task"][1] == names["workflow"][0]
    jsonl = {s["name"]: s for s in spans(read_lines(path))}
    assert jsonl["task"]["span_id"] == f"{names['task'][0]:#x}"
    assert jsonl["session"]["parent_span_id"] == f"{names['my-campaign'][0]:#x}"


@pytest.mark.timeout(120)
def test_no_bridge_without_a_configured_provider(tmp_path):
    from asyncflow_hpc.telemetry.otel import find_bridge

    try:
        from opentelemetry import trace
    except ImportError:
        assert find_bridge() is None
        return
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        assert find_bridge() is None
