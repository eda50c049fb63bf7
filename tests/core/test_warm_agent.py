"""The warm pool agent and its workers on their own (real processes, no pilot): what it
answers for every kind of task, timeouts, cancels, a killed worker, STOP, a wrong token.

The agent is started as RP starts it (``python -m ...warm.agent`` with its environment); the
test plays the dispatcher on a loopback socket. The RADICAL-Pilot tests run the same agent
inside real pilots.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest

from asyncflow_hpc.backends.radical.warm import protocol as P
from asyncflow_hpc.backends.radical.warm import warm_reason
from asyncflow_hpc.child_env import with_package_on_path
from asyncflow_hpc.framing import frame, read_frame
from asyncflow_hpc.tasks import TaskKind, TaskSpec


def square(x):
    return x * x


def pid_then_sleep(seconds):
    import os as o
    import time as t
    t.sleep(seconds)
    return o.getpid()


def raises():
    raise KeyError("nope")


class Agent:
    """A running agent and our end of its connection."""

    def __init__(self, tmp_path, token: str = "t0ken", slots: int = 2) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        env = with_package_on_path()
        # as the dispatcher gives it this process's import path: our functions import there
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env["PYTHONPATH"]])
        self.sandbox = tmp_path / "pilot"
        env.update({"RP_PILOT_SANDBOX": str(self.sandbox),
                    P.ENV_ADDRESS: f"127.0.0.1:{port}", P.ENV_TOKEN: token,
                    P.ENV_AGENT: "warm.000", P.ENV_SLOTS: str(slots)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asyncflow_hpc.backends.radical.warm.agent"], env=env,
            cwd=tmp_path)
        self.server.settimeout(30)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(30)
        self.hello = self.recv()
        self.fids: set[int] = set()
        self.events: list[tuple] = []
        self._ended: dict[str, tuple] = {}  # ends read while waiting for starts

    def recv(self):
        return read_frame(self.conn.recv)

    def send(self, msg) -> None:
        self.conn.sendall(frame(msg))

    def fn(self, tid, func, *args, timeout=None, fid=None):
        fid = fid or id(func)
        blob = None if fid in self.fids else cloudpickle.dumps(func)
        self.fids.add(fid)
        return (tid, P.FN, timeout, (fid, blob, pickle.dumps((args, {}))))

    def started(self, *tids: str, timeout: float = 30) -> None:
        """Read events until every one of ``tids`` has started (no fixed sleep: a loaded
        machine may take its time); ends read meanwhile are kept for :meth:`ends`."""
        deadline = time.monotonic() + timeout
        while not set(tids) <= {ev[0] for ev in self.events if ev[1] == P.STARTED}:
            assert time.monotonic() < deadline, f"{tids} did not all start: {self.events}"
            msg = self.recv()
            assert msg[0] == P.EVENTS
            for ev in msg[1]:
                self.events.append(ev)
                if ev[1] != P.STARTED:
                    self._ended[ev[0]] = ev

    def ends(self, n: int, timeout: float = 30) -> dict[str, tuple]:
        """Collect events until ``n`` tasks ended; {tid: end event}."""
        out = dict(list(self._ended.items())[:n])
        for tid in out:
            del self._ended[tid]
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} ended: {out}"
            msg = self.recv()
            assert msg[0] == P.EVENTS
            for ev in msg[1]:
                self.events.append(ev)
                if ev[1] != P.STARTED:
                    out[ev[0]] = ev
        return out

    def close(self) -> None:
        self.conn.close()
        self.server.close()
        self.proc.wait(20)


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path)
    yield a
    try:
        kids = psutil.Process(a.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it ended already (STOP)
        kids = []
    a.close()  # EOF: the agent ends and takes its workers with it
    assert a.proc.returncode == 0
    psutil.wait_procs(kids, timeout=10)
    assert not [p for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_hello_results_errors_and_stamps(agent, tmp_path):
    assert agent.hello[:3] == (P.HELLO, "t0ken", "warm.000") and agent.hello[4] == 2
    t0 = time.time()
    agent.send((P.RUN, [agent.fn(f"t{i}", square, i) for i in range(50)]
                + [agent.fn("err", raises)]
                + [("exe", P.EXE, None, (["sh", "-c", "echo $X; pwd"], False, {"X": "42"},
                                          "task.000007")),
                   ("keeps", P.EXE, None, (["sh", "-c", "echo x > out.txt"], False, None,
                                           "task.000008.r1")),
                   ("bad", P.EXE, None, (["sh", "-c", "echo oops >&2; exit 3"], False, None,
                                         "t3")),
                   ("gone", P.EXE, None, (["/no/such/prog"], False, None, "t4")),
                   ("sh", P.EXE, None, ("echo a | tr a b", True, None, "t5"))]))
    ends = agent.ends(56)
    for i in range(50):
        tid, status, payload, s, e = ends[f"t{i}"]
        assert status == P.OK and pickle.loads(payload) == i * i
        assert t0 <= s <= e <= time.time()
    status, (blob, text, tb) = ends["err"][1:3]
    assert status == P.ERR and isinstance(pickle.loads(blob), KeyError)
    assert text == "KeyError: 'nope'" and "raises" in tb
    out = ends["exe"][2].decode().split()
    # in the folder RP's own path would have used: <pilot sandbox>/<task uid>
    assert out[0] == "42" and out[1] == str(agent.sandbox / "task.000007")
    assert not (agent.sandbox / "task.000007").exists()  # empty: removed afterwards
    assert (agent.sandbox / "task.000008.r1" / "out.txt").read_text() == "x\n"  # kept
    code, _, err, _ = ends["bad"][2]
    assert ends["bad"][1] == P.EXIT and code == 3 and err == b"oops\n"
    assert ends["gone"][1] == P.NOTFOUND
    assert ends["sh"][2] == b"b\n"
    started = {ev[0] for ev in agent.events if ev[1] == P.STARTED}
    assert started == set(ends)  # every task said when it started, where it ran


def test_timeout_and_cancel_stop_only_their_task(agent):
    agent.send((P.RUN, [agent.fn("slow", pid_then_sleep, 60, timeout=2.0),
                        agent.fn("long", pid_then_sleep, 60),
                        agent.fn("queued", square, 3),
                        ("exe", P.EXE, 0.5, (["/bin/sleep", "617"], False, None, "t1")),
                        agent.fn("after", square, 4)]))
    agent.started("slow", "long")  # both workers busy: "queued" waits
    agent.send((P.CANCEL, ["queued"]))  # well before "slow" times out and frees a slot
    ends = agent.ends(2, timeout=10)
    assert ends["queued"][1] == P.CANCELLED and ends["slow"][1] == P.TIMEOUT
    agent.send((P.CANCEL, ["long"]))  # running: its worker is killed
    ends.update(agent.ends(3, timeout=20))
    assert ends["long"][1] == P.CANCELLED
    assert ends["exe"][1] == P.TIMEOUT
    assert ends["after"][1] == P.OK and pickle.loads(ends["after"][2]) == 16
    started = [ev[0] for ev in agent.events if ev[1] == P.STARTED]
    assert "queued" not in started  # left the queue without running


def test_killed_worker_loses_exactly_its_task(agent):
    agent.send((P.RUN, [agent.fn("victim", pid_then_sleep, 60)]))
    agent.started("victim")
    workers = psutil.Process(agent.proc.pid).children()
    # the victim's worker is the one the probe (on the other, idle worker) does not run on
    agent.send((P.RUN, [agent.fn("probe", pid_then_sleep, 0)]))
    probe_pid = pickle.loads(agent.ends(1)["probe"][2])
    victim = [w for w in workers if w.pid != probe_pid and "warm.worker" in " ".join(w.cmdline())]
    assert len(victim) == 1
    victim[0].kill()
    ends = agent.ends(1, timeout=10)
    assert ends["victim"][1] == P.LOST and "died" in ends["victim"][2]
    agent.send((P.RUN, [agent.fn(f"n{i}", square, i) for i in range(4)]))  # a new worker
    assert all(e[1] == P.OK for e in agent.ends(4).values())


def test_stop_returns_what_has_not_started(agent):
    agent.send((P.RUN, [agent.fn(f"l{i}", pid_then_sleep, 1) for i in range(2)]
                + [agent.fn(f"q{i}", square, i) for i in range(3)]))
    agent.started("l0", "l1")
    agent.send((P.STOP,))
    ends = agent.ends(5, timeout=20)
    assert {t for t, e in ends.items() if e[1] == P.RETURNED} == {"q0", "q1", "q2"}
    assert all(ends[f"l{i}"][1] == P.OK for i in range(2))
    agent.proc.wait(20)  # it ended on its own once the running tasks were done
    assert agent.proc.returncode == 0


def test_wrong_token_is_the_dispatchers_call(tmp_path):
    """The agent presents its token first; a dispatcher refuses a wrong one by hanging up,
    and the agent then ends at once."""
    a = Agent(tmp_path, token="wrong")
    assert a.hello[1] == "wrong"
    a.conn.close()
    a.proc.wait(20)
    a.server.close()


@pytest.mark.parametrize("kind,td,why", [
    (TaskKind.FUNCTION, {}, None),
    (TaskKind.FUNCTION, {"retries": 2, "timeout": 5, "ranks": 1, "warm": True}, None),
    (TaskKind.EXECUTABLE, {"environment": {"A": "1"}, "shell": True}, None),
    (TaskKind.FUNCTION, {"environment": {"A": "1"}}, "task_description['environment']"),
    (TaskKind.EXECUTABLE, {"ranks": 2}, "ranks=2"),
    (TaskKind.EXECUTABLE, {"cores_per_rank": 4}, "cores_per_rank=4"),
    (TaskKind.FUNCTION, {"gpus_per_rank": 1}, "gpus_per_rank=1"),
    (TaskKind.EXECUTABLE, {"pre_exec": ["module load x"]}, "task_description['pre_exec']"),
    (TaskKind.EXECUTABLE, {"warm": False}, "warm=False"),
])
def test_which_tasks_go_warm(kind, td, why):
    spec = TaskSpec("task.000001", "t", kind, function=square, command=["/bin/true"],
                    description=dict(td))
    assert warm_reason(spec) == why
