"""Helpers for the telemetry, report and progress tests (imported by the test modules)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine

TASK_EVENTS = ("TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted", "TaskStarted",
               "TaskCompleted", "TaskFailed", "TaskCanceled", "TaskRetried")
EVENT_KEYS = ["event_id", "event_type", "event_time", "emit_time", "session_id", "backend",
              "task_id", "node_id", "attributes", "trace_id", "span_id", "name", "section"]
SPAN_KEYS = ["name", "span_id", "trace_id", "parent_span_id", "start_ns", "end_ns",
             "start_time_s", "end_time_s", "duration_ms", "status_code", "status_description",
             "attributes", "section"]
ENV = ("ASYNCFLOW_HPC_TELEMETRY", "ASYNCFLOW_HPC_PROGRESS", "ASYNCFLOW_HPC_TELEMETRY_INTERVAL",
       "ASYNCFLOW_HPC_PROGRESS_INTERVAL", "ASYNCFLOW_HPC_JOURNAL", "ASYNCFLOW_HPC_OTEL",
       "ASYNCFLOW_HPC_CLAIMED")


# A fixture here rather than in a conftest.py: test modules elsewhere import their own
# directory's ``conftest`` by name, and a second top-level ``conftest`` module would shadow it.
@pytest.fixture(name="clean_env")
def clean_env_fixture(monkeypatch):
    """No telemetry/progress switched on by the developer's environment."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "0")  # no sampler unless a test asks
    return monkeypatch


def run(coro, timeout: float = 100):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def make_engine(path=None, workers: int = 4, **kw) -> WorkflowEngine:
    backend = await LocalExecutionBackend(ThreadPoolExecutor(workers))
    kw.setdefault("install_signal_handlers", False)
    if path is not None:
        kw["telemetry"] = str(path)
    return await WorkflowEngine.create(backend=backend, **kw)


def read_lines(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def events(lines: list[dict], task_id: str | None = None) -> list[dict]:
    out = [d for d in lines if d["section"] == "event"]
    if task_id is not None:
        out = [d for d in out if d["task_id"] == task_id]
    return out


def spans(lines: list[dict], name: str | None = None) -> list[dict]:
    out = [d for d in lines if d["section"] == "span"]
    return [d for d in out if d["name"] == name] if name else out


def types(evs: list[dict]) -> list[str]:
    return [d["event_type"] for d in evs]
