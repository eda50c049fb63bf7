"""The RADICAL-Pilot backend, one module per role:

* :mod:`.backend` -- :class:`RadicalPilotBackend`, the thin front the engine talks to
* :mod:`.options` -- the backend's options and their checks; :mod:`.keys` -- task keys
* :mod:`.inprocess` -- the RP client in this process (session, managers, callbacks), with
  :mod:`.pilots` (pilot states, replacement), :mod:`.cores` (raptor and executables sharing
  cores) and :mod:`.outcomes` (a final RP state -> value or error)
* :mod:`.process_parent` / :mod:`.process_child` -- the same client in a child process, and
  :mod:`.messages` (what crosses the socket, framed by :mod:`asyncflow_hpc.framing`)
* :mod:`.translate` -- spec -> TaskDescription fields, staging, the remote-call payload
* :mod:`.environment` -- RP's environment and resource configs; :mod:`.cleanup` -- leftovers

Importing this package is cheap: radical.pilot is loaded when a backend starts.
"""

from __future__ import annotations

from .backend import RadicalPilotBackend
from .cleanup import leftover_processes

__all__ = ["RadicalPilotBackend", "leftover_processes"]
