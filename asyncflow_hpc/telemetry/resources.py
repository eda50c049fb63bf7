"""Resource samples of this node (psutil): RHAPSODY ``ResourceUpdate`` event lines.

Runs on the telemetry writer's sampling thread, never on the event loop. Imports only the
standard library and psutil. CPU is the node's busy share since the previous sample, memory a
point-in-time percentage; disk and network are byte deltas since the previous sample; the
GPU is read through NVML (``pynvml``) when it is installed, otherwise ``gpu_percent`` is null.

The writer asks for a sample once per interval (5 s by default), which would leave a short
run with one or two points. So the sampler also samples by itself at the start of a run:
every ``FAST_STEP`` (0.1 s) for ``FAST_FOR`` (2 s), then at doubling gaps until the writer's
interval takes over (:func:`early_offsets`) — a few dozen extra samples per run at most, on a
short-lived thread. Its samples are handed over with the writer's next one, in time order.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ResourceSampler", "early_offsets", "interval_from_env"]

DEFAULT_INTERVAL = 5.0
FAST_STEP = 0.1  # seconds between the first samples of a run...
FAST_FOR = 2.0  # ...for this long; then the gap doubles until the regular interval


def early_offsets(interval: float) -> list[float]:
    """When (seconds after sampling starts) the sampler samples by itself: every
    ``FAST_STEP`` for ``FAST_FOR`` s, then at doubling gaps, while the next sample would come
    before the writer's first one (at ``interval``). None when the interval is that short."""
    out: list[float] = []
    t, gap = 0.0, FAST_STEP
    while t + gap < interval - 1e-9:
        t = round(t + gap, 6)
        out.append(t)
        if t >= FAST_FOR - 1e-9:
            gap *= 2
    return out


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
                 pid: int | None = None, interval: float | None = None) -> None:
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
        # the writer's interval, for the early samples (the session passes none: the same
        # setting it read; switched off there, the default)
        iv = interval_from_env(None) if interval is None else float(interval)
        self._early = early_offsets(iv if iv > 0 else DEFAULT_INTERVAL)
        self._lock = threading.Lock()  # the reference points and the early samples' buffer
        self._pending: list[str] = []  # lines of early samples, for the next line()
        self._early_done = threading.Event()  # set by the writer's first sample
        self._early_thread: threading.Thread | None = None
        self._mark()

    def _mark(self) -> None:
        self._cpu = self._cpu_counters()
        self._disk = self._disk_counters()
        self._net = self._net_counters()

    def prime(self) -> None:
        """Start the intervals of the next sample here, and the early samples. Call it on
        the thread that samples, when sampling starts (the early samples stop when that
        thread ends)."""
        with self._lock:
            self._mark()
        if self._early and self._early_thread is None:
            self._early_thread = threading.Thread(
                target=self._sample_early, args=(threading.current_thread(), time.monotonic()),
                name="asyncflow-hpc-telemetry-early-samples", daemon=True)
            self._early_thread.start()

    def _sample_early(self, owner: threading.Thread, t0: float) -> None:
        """The early samples (see the module's docstring), until the writer samples itself or
        its thread ends. Each wait is at most FAST_STEP, to notice that soon."""
        done = self._early_done
        for offset in self._early:
            while not done.is_set() and owner.is_alive():
                left = t0 + offset - time.monotonic()
                if left <= 0:
                    break
                done.wait(min(left, FAST_STEP))
            with self._lock:
                if done.is_set() or not owner.is_alive():
                    return
                try:
                    self._pending.append(self._line(self._sample()))
                except Exception:  # psutil failing now: the writer's samples carry on
                    return

    def _cpu_counters(self) -> tuple[float, float] | None:
        """(total, busy) CPU seconds of the node, as psutil's cpu_percent counts them; one
        reference point for every thread that samples."""
        try:
            t = self._psutil.cpu_times()
        except Exception:
            return None
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        return total, total - t.idle - getattr(t, "iowait", 0.0)

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
        """The node's figures since the previous sample (of any thread)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> dict:
        ps = self._psutil
        cpu, disk, net = self._cpu_counters(), self._disk_counters(), self._net_counters()
        busy = None
        if cpu is not None and self._cpu is not None:
            dt = cpu[0] - self._cpu[0]
            busy = round(min(100.0, max(0.0, (cpu[1] - self._cpu[1]) / dt * 100)), 1) if dt > 0 else 0.0
        out = {
            "cpu_percent": busy,
            "memory_percent": ps.virtual_memory().percent,
            "gpu_percent": self._gpu() if self._gpu is not None else None,
            "disk_read_bytes": disk[0] - self._disk[0] if disk and self._disk else None,
            "disk_write_bytes": disk[1] - self._disk[1] if disk and self._disk else None,
            "net_sent_bytes": net[0] - self._net[0] if net and self._net else None,
            "net_recv_bytes": net[1] - self._net[1] if net and self._net else None,
        }
        self._cpu, self._disk, self._net = cpu, disk, net
        return out

    def line(self) -> str:
        """One ``ResourceUpdate`` line, after those of the early samples not handed over yet
        (the writer's first call ends the early samples)."""
        self._early_done.set()
        with self._lock:
            s = self._sample()
            text = "".join(self._pending) + self._line(s)
            self._pending.clear()
        if self._on_sample is not None:
            self._on_sample(s)
        return text

    def _line(self, s: dict) -> str:
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
