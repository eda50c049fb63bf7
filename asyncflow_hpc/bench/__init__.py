"""Benchmarks shared by ``asyncflow-hpc bench`` and ``benchmarks/``: workloads, runner,
baselines (plain asyncio, radical.asyncflow) and scaling series over node counts.

Nothing here is imported by ``import asyncflow_hpc``: benchmarking is a tool, not part of
the runtime.
"""

from __future__ import annotations

from .runner import Measurement, measure, open_engine, run_suite
from .workloads import DEFAULT_SIZES, WORKLOADS, Workload, make_workload

__all__ = ["DEFAULT_SIZES", "WORKLOADS", "Measurement", "Workload", "make_workload", "measure",
           "open_engine", "run_suite"]
