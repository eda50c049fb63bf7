"""RADICAL-Pilot's task_description keys, as data: readable without importing radical.pilot."""

from __future__ import annotations

__all__ = ["RENAMED", "RESERVED_KEYS", "TASK_FIELDS", "TD_ALIASES"]

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
#: the backend sets these itself; a user value would break the translation
RESERVED_KEYS = frozenset({
    "uid", "mode", "executable", "arguments", "function", "args", "kwargs", "code",
    "command", "method", "raptor_id", "scheduler", "raptor_class", "raptor_file",
    "worker_class", "worker_file", "slots",
})
#: portable names -> RP names
RENAMED = {"cwd": "sandbox", "env": "environment"}
#: common mistakes -> the RP key meant
TD_ALIASES = {
    "cores": "cores_per_rank", "gpus": "gpus_per_rank", "nprocs": "ranks", "np": "ranks",
    "processes": "ranks", "walltime": "timeout", "workdir": "sandbox", "threads": "cores_per_rank",
    "env_vars": "environment", "gpus_per_task": "gpus_per_rank", "ntasks": "ranks",
    "cpus": "cores_per_rank", "cpus_per_task": "cores_per_rank", "cpus_per_rank": "cores_per_rank",
    "nodes": "ranks", "mpi": "use_mpi", "workdir_path": "sandbox",
}
