"""Counters over the session, written as RHAPSODY ``metric`` snapshot lines."""

from __future__ import annotations

import json

__all__ = ["Metrics"]


class Metrics:
    """Task counters (blocks are not counted) and the latest node utilisation."""

    __slots__ = ("session_id", "submitted", "started", "running", "completed", "failed",
                 "canceled", "duration_count", "duration_sum", "node")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.submitted = 0
        self.started = 0
        self.running = 0
        self.completed = 0
        self.failed = 0
        self.canceled = 0
        self.duration_count = 0
        self.duration_sum = 0.0
        self.node: dict = {}  # latest resource sample: cpu_percent, memory_percent, gpu_percent

    def ended(self, status: str, ran: bool, duration: float) -> None:
        """A task (not a block) ended: ``status`` is completed, failed or canceled; ``ran``:
        it had reported a start (so it was counted running)."""
        if ran:
            self.running -= 1
        self.duration_count += 1
        self.duration_sum += duration
        if status == "completed":
            self.completed += 1
        elif status == "failed":
            self.failed += 1
        else:
            self.canceled += 1

    def line(self, now: float) -> str:
        node = self.node
        return json.dumps({
            "checkpoint_time": now,
            "session_id": self.session_id,
            "tasks_submitted": self.submitted,
            "tasks_started": self.started,
            "tasks_running": self.running,
            "tasks_completed": self.completed,
            "tasks_failed": self.failed,
            "tasks_canceled": self.canceled,
            "task_duration_seconds_count": self.duration_count,
            "task_duration_seconds_sum": round(self.duration_sum, 6),
            "node_cpu_utilization": node.get("cpu_percent"),
            "node_memory_utilization": node.get("memory_percent"),
            "node_gpu_utilization": node.get("gpu_percent"),
            "section": "metric",
        }, separators=(",", ":")) + "\n"
