"""The engine never polls: ready tasks go to the backend in the iteration they become ready."""

import asyncio

from conftest import run

from asyncflow_hpc import ExecutionBackend, WorkflowEngine


class RecordingBackend(ExecutionBackend):
    """Finishes each task on the next loop iteration and logs every submit call."""

    name = "rec"

    def __init__(self):
        super().__init__()
        self.log = []

    def submit(self, specs):
        self.log.append(("submit", [s.name for s in specs]))
        loop = self.reporter.loop
        for s in specs:
            loop.call_soon(self._finish, s)

    def _finish(self, spec):
        self.log.append(("done", spec.name))
        self.reporter.done(spec.uid, spec.name)
        # anything queued after this callback runs in a later iteration
        self.reporter.loop.call_soon(self.log.append, ("next-iteration", spec.name))

    def cancel(self, uid):
        pass


def test_dependents_submitted_in_the_same_iteration_and_batched():
    async def main():
        backend = RecordingBackend()
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False)

        @flow.function_task
        async def t(*deps, name=None):
            return None

        a = t()
        bs = [t(a) for _ in range(3)]  # three dependents of `a`
        await asyncio.gather(*bs)
        log = backend.log
        assert log[0] == ("submit", ["t"])  # `a` alone
        i = log.index(("done", "t"))
        # the three dependents go in ONE call, right after `a` finished, before the loop
        # moved on to its next iteration
        assert log[i + 1] == ("submit", ["t", "t", "t"])
        await flow.shutdown()

    run(main())


def test_tasks_created_in_one_iteration_go_in_one_batch():
    async def main():
        backend = RecordingBackend()
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False)

        @flow.function_task
        async def t():
            return None

        await asyncio.gather(*[t() for _ in range(100)])
        submits = [e for e in backend.log if e[0] == "submit"]
        assert len(submits) == 1 and len(submits[0][1]) == 100
        await flow.shutdown()

    run(main())
