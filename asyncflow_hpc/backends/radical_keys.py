"""RADICAL-Pilot's task keys, as data: readable without importing radical.pilot."""

from __future__ import annotations

__all__ = ["TASK_FIELDS"]

#: TaskDescription fields of radical.pilot 1.103 that users may set
TASK_FIELDS = frozenset({
    "arguments", "cleanup", "cores_per_rank", "cpu_process_type", "cpu_processes",
    "cpu_thread_type", "cpu_threads", "environment", "executable", "gpu_process_type",
    "gpu_processes", "gpu_thread_type", "gpu_threads", "gpu_type", "gpus_per_rank",
    "info_pattern", "input_staging", "lfs_per_process", "lfs_per_rank", "mem_per_process",
    "mem_per_rank", "metadata", "mode", "name", "named_env", "output_staging", "partition",
    "pilot", "post_exec", "post_launch", "pre_exec", "pre_exec_sync", "pre_launch", "priority",
    "ranks", "ranks_per_node", "restartable", "sandbox", "scheduler", "services", "slots",
    "stage_on_error", "startup_timeout", "stderr", "stdout", "tags", "threading_type",
    "timeout", "uid", "use_mpi",
})
