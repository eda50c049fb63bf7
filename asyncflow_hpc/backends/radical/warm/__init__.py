"""Warm workers inside the pilot: small tasks without RADICAL-Pilot's per-task cost.

RP acquires and holds the allocation and places the *pool agents* (one RP task per node of
the pilot, :mod:`.agent`); each agent keeps persistent worker processes (:mod:`.worker`) and
runs single-core executables itself. The engine's side (:mod:`.dispatcher`) ships small
tasks to the agents in bundles over one TCP connection each and hands results back to the
event loop in batches. Which tasks go this way is decided by :mod:`.route`; everything else
(MPI, multi-core, GPUs, staging, ``pre_exec``, ...) keeps RP's own path. :mod:`.launch`
submits the agents as RP tasks, where RP's client runs.

One file per process role: ``dispatcher`` (the campaign's process), ``agent`` (one per node,
inside the pilot), ``worker`` (the agent's children); ``protocol`` is what they share.
"""

from .route import warm_reason

__all__ = ["warm_reason"]
