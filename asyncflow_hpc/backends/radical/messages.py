"""What crosses the socket between the engine's process and the RADICAL-Pilot client process.

Frames are :mod:`asyncflow_hpc.framing` frames holding a pickle. The parent sends one message
per frame (``submit``, ``cancel``, requests); the child sends a *list* of messages per frame, everything
that piled up in one iteration of its loop, so a burst of 500 state updates costs the
parent's loop one read and one unpickle, not 500.

Task specs travel as plain tuples (no user function: a function task's call is already
pickled with dill by the parent, exactly the payload the raptor worker receives), and
function results travel back still packed, so user classes are unpickled only in the
process that defined them. Exceptions are pickled one by one, so one that does not pickle
costs only its own task a clearer error, never the batch.
"""

from __future__ import annotations

import pickle

from ...errors import BackendError
from ...tasks import TaskKind, TaskSpec, TaskState

__all__ = ["CODE_STATES", "PACKED", "STATE_CODES", "dump_error", "load_error", "spec_from_wire",
           "spec_to_wire"]

#: task states as one-letter codes (an enum member costs a constructor call to unpickle)
STATE_CODES = {TaskState.RUNNING: "R", TaskState.DONE: "D", TaskState.FAILED: "F",
               TaskState.CANCELLED: "C"}
CODE_STATES = {v: k for k, v in STATE_CODES.items()}
#: report code of a function task's result that the parent still has to unpack
PACKED = "P"


def spec_to_wire(spec: TaskSpec, packed_call: str | None) -> tuple:
    """A spec without its function: ``packed_call`` carries a function task's call.

    ``files`` (a FilePlan) pickles through its ``__reduce__``; ``stdio`` is a pair of paths.
    """
    return (spec.uid, spec.name, spec.kind.value, packed_call, spec.is_async, spec.command,
            spec.shell, spec.description, spec.workflow_id, spec.timeout, spec.attempt,
            spec.inline, spec.stdio, spec.files)


def spec_from_wire(t: tuple) -> TaskSpec:
    """Rebuild a spec in the child; a function task's packed call sits in ``args[0]``."""
    (uid, name, kind, packed, is_async, command, shell, description, workflow_id, timeout,
     attempt, inline, stdio, files) = t
    return TaskSpec(uid, name, TaskKind(kind), args=(packed,) if packed is not None else (),
                    is_async=is_async, command=command, shell=shell, description=description,
                    workflow_id=workflow_id, timeout=timeout, attempt=attempt, inline=inline,
                    stdio=tuple(stdio) if stdio is not None else None, files=files)


def dump_error(exc: BaseException) -> bytes:
    """Pickle ``exc`` as itself if at all possible, else a BackendError that names it."""
    import cloudpickle

    try:
        return cloudpickle.dumps(exc)
    except Exception:
        pass
    if exc.__cause__ is not None:  # often the cause (an RP object) is what does not pickle
        saved = exc.__cause__
        try:
            exc.__cause__ = None
            return cloudpickle.dumps(exc)
        except Exception:
            pass
        finally:
            exc.__cause__ = saved
    return pickle.dumps(_stand_in(exc, "it could not be pickled"))


def load_error(blob: bytes) -> BaseException:
    try:
        exc = pickle.loads(blob)
    except Exception as why:  # its class is not importable here, ...
        return BackendError(f"an error from the RADICAL-Pilot client process could not be "
                            f"unpickled here: {why!r}")
    return exc if isinstance(exc, BaseException) else BackendError(repr(exc))


def _stand_in(exc: BaseException, why: str) -> BackendError:
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return BackendError(f"{kind}: {exc} (raised in the RADICAL-Pilot client process; {why}, "
                        "so it arrives as BackendError)")
