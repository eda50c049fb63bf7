"""What the dispatcher, the pool agents and their workers say to each other.

Every message is a pickled tuple in a length-prefixed frame (:mod:`asyncflow_hpc.framing`).
Standard library only: the agent and its workers run inside the pilot.

dispatcher -> agent::

    (RUN, [(tid, kind, timeout, body), ...])     kind FN: body = (fid, fblob | None, argblob)
                                                 kind EXE: body = (argv | str, shell, env,
                                                               folder name)
    (CANCEL, [tid, ...])
    (STOP,)

agent -> dispatcher::

    (HELLO, token, agent_id, host, slots, pid)
    (EVENTS, [(tid, STARTED, t), (tid, status, payload, t0, t1), ...])

``status`` of an ended task: OK (payload: pickled value, or the executable's stdout),
ERR (payload: (pickled exception | None, "Type: message", traceback text)), EXIT
(payload: (exit code, stdout, stderr tail, task dir)), NOTFOUND (payload: reason),
TIMEOUT, CANCELLED, LOST (payload: why), RETURNED (never started; the agent is
stopping). ``t0``/``t1`` are ``time.time()`` where the task
ran, when its body started and ended.
"""

from __future__ import annotations

__all__ = ["CANCEL", "CANCELLED", "ERR", "EVENTS", "EXE", "EXIT", "FN", "HELLO", "LOST",
           "NOTFOUND", "OK", "RETURNED", "RUN", "STARTED", "STOP", "TIMEOUT", "ENV_ADDRESS", "ENV_TOKEN",
           "ENV_AGENT", "ENV_SLOTS"]

RUN, CANCEL, STOP, HELLO, EVENTS = "run", "cancel", "stop", "hello", "events"
FN, EXE = "fn", "exe"
STARTED = "started"
OK, ERR, EXIT, NOTFOUND, TIMEOUT, CANCELLED, LOST, RETURNED = (
    "ok", "err", "exit", "notfound", "timeout", "cancelled", "lost", "returned")

#: the agent's settings travel in its environment (RP writes it into the task's launch
#: script inside the pilot sandbox, which only the user can read): never on a command line
ENV_ADDRESS = "ASYNCFLOW_WARM_ADDRESS"  # host:port of the dispatcher
ENV_TOKEN = "ASYNCFLOW_WARM_TOKEN"  # shared secret the agent presents first
ENV_AGENT = "ASYNCFLOW_WARM_AGENT"  # agent id
ENV_SLOTS = "ASYNCFLOW_WARM_SLOTS"  # tasks at once (at most the cores the agent's node has)
