"""Resource samples of this node (psutil): RHAPSODY ``ResourceUpdate`` event lines.

Runs in the telemetry worker process (or on the writer's thread), never on the event loop.
Imports only the standard library and psutil: the worker process loads it by file. CPU and memory are
point-in-time percentages; disk and network are byte deltas since the previous sample; the
GPU is read through NVML (``pynvml``) when it is installed, otherwise ``gpu_percent`` is null.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ResourceSampler", "interval_from_env"]

DEFAULT_INTERVAL = 5.0


def interval_from_env(value: float | None) -> float:
    """The sampling interval: the argument, else ASYNCFLOW_HPC_TELEMETRY_INTERVAL, else 5 s.
    0 (or less) switches sampling off."""
    if value is not None:
        return float(value)
    raw = os.environ.get("ASYNCFLOW_HPC_TELEMETRY_INTERVAL")
    if raw:
        try:
            return float(raw)
        except ValueError:
            pass
    return DEFAULT_INTERVAL


class ResourceSampler:
    """Call :meth:`line` periodically; each call returns one ``ResourceUpdate`` JSON line."""

    def __init__(self, session_id: str, backend: str | None, ids_json: Callable[[], str],
                 on_sample: Callable[[dict], None] | None = None,
                 pid: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.session_id = session_id
        self.backend = backend
        self.node = socket.gethostname()
        self._ids_json = ids_json
        self._on_sample = on_sample
        self._pid = pid if pid is not None else os.getpid()  # the process the tasks run in
        self._count = 0
        self._prefix = os.urandom(12).hex()
        self._gpu: Any = _nvml()
        self.prime()

    def prime(self) -> None:
        """Start the intervals of the next sample here. Call it on the thread that samples:
        psutil >= 5.9.6 keeps cpu_percent's reference point per thread (else the first
        sample reads 0 %)."""
        self._psutil.cpu_percent(None)
        self._disk = self._disk_counters()
        self._net = self._net_counters()

    def _disk_counters(self) -> tuple[int, int] | None:
        try:
            c = self._psutil.disk_io_counters()
        except Exception:
            return None
        return (c.read_bytes, c.write_bytes) if c is not None else None

    def _net_counters(self) -> tuple[int, int] | None:
        try:
            c = self._psutil.net_io_counters()
        except Exception:
            return None
        return (c.bytes_sent, c.bytes_recv) if c is not None else None

    def sample(self) -> dict:
        ps = self._psutil
        disk, net = self._disk_counters(), self._net_counters()
        out = {
            "cpu_percent": ps.cpu_percent(None),
            "memory_percent": ps.virtual_memory().percent,
            "gpu_percent": self._gpu() if self._gpu is not None else None,
            "disk_read_bytes": disk[0] - self._disk[0] if disk and self._disk else None,
            "disk_write_bytes": disk[1] - self._disk[1] if disk and self._disk else None,
            "net_sent_bytes": net[0] - self._net[0] if net and self._net else None,
            "net_recv_bytes": net[1] - self._net[1] if net and self._net else None,
        }
        self._disk, self._net = disk, net
        return out

    def line(self) -> str:
        s = self.sample()
        if self._on_sample is not None:
            self._on_sample(s)
        self._count += 1
        now = time.time()
        head = json.dumps({
            "event_id": f"{self._prefix}{self._count:08x}",
            "event_type": "ResourceUpdate",
            "event_time": now,
            "emit_time": now,
            "session_id": self.session_id,
            "backend": self.backend,
            "task_id": None,
            "node_id": self.node,
            "attributes": {"pid": self._pid},
            **s,
        }, separators=(",", ":"))
        return f'{head[:-1]},{self._ids_json()},"name":"ResourceUpdate","section":"event"}}\n'


def _nvml() -> Callable[[], float | None] | None:
    """Mean GPU utilisation over the node's GPUs through NVML, when available."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None
    if not handles:
        return None

    def read() -> float | None:
        try:
            vals = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
        except Exception:
            return None
        return sum(vals) / len(vals)

    return read
