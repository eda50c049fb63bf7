"""Every await settles: hostile bodies, options and arguments never leave a future pending;
futures are found and replaced in every container the engine accepts, or refused by name."""

import asyncio
import collections
import math
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncflow_hpc import ConfigurationError, WorkflowEngine
from asyncflow_hpc.errors import EngineError
from asyncflow_hpc.journal import Journal


class BadStr(Exception):
    def __str__(self):
        raise ValueError("no text for you")


def _stop_iteration():
    raise StopIteration


async def _async_stop_iteration():
    raise StopIteration


def _bad_str():
    raise BadStr()


def _keyboard_interrupt():
    raise KeyboardInterrupt


async def _async_keyboard_interrupt():
    raise KeyboardInterrupt


def _system_exit():
    raise SystemExit(3)


async def _async_system_exit():
    raise SystemExit(3)


def _value_error():
    raise ValueError("x")


CASES = [
    ("StopIteration", _stop_iteration, {}, RuntimeError),
    ("async StopIteration", _async_stop_iteration, {}, RuntimeError),
    ("__str__ raises", _bad_str, {"retries": 2}, BadStr),
    ("retries=2000", _value_error, {"retries": 2000}, ValueError),
    ("KeyboardInterrupt", _keyboard_interrupt, {}, RuntimeError),
    ("async KeyboardInterrupt", _async_keyboard_interrupt, {}, RuntimeError),
    ("SystemExit", _system_exit, {}, RuntimeError),
    ("async SystemExit", _async_system_exit, {}, RuntimeError),
    ("inline async SystemExit", _async_system_exit, {"inline": True}, RuntimeError),
]


@pytest.mark.parametrize("pool", ["threads", "processes"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_task_settles(case, pool, make_flow):
    _, body, options, expected = case
    if pool == "processes" and (options.get("inline") or body is _bad_str):
        pytest.skip("inline runs on the loop; BadStr is not importable in the worker")

    async def main():
        flow = await make_flow(ThreadPoolExecutor(2) if pool == "threads" else ProcessPoolExecutor(1))
        task = flow.function_task(**options)(body)
        with pytest.raises(expected):
            await asyncio.wait_for(task(), 30)
        # the engine is still usable afterwards
        ok = flow.function_task(lambda: 7)
        assert await asyncio.wait_for(ok(), 10) == 7
        assert flow.task_states()["pending"] == 0
        await flow.shutdown()

    run(main(), timeout=60)


@pytest.mark.parametrize("bad", [
    {"retries": -1}, {"retries": 1.5}, {"retries": True},
    {"retry_backoff": "1s"}, {"retry_backoff": -1}, {"retry_backoff": math.nan},
    {"timeout": math.nan}, {"timeout": -1}, {"timeout": 0}, {"timeout": math.inf},
])
def test_options_are_checked_at_decoration(bad, make_flow):
    async def main():
        flow = await make_flow()
        with pytest.raises(ConfigurationError):
            flow.function_task(**bad)(_value_error)
        await flow.shutdown()

    run(main())


def test_a_journal_that_cannot_be_written_stops_the_run_loudly(make_flow, tmp_path):
    """ENOSPC (or any write error) on the journal: every future settles with an error that
    says so, and new submissions are refused, instead of results going unrecorded."""
    async def main():
        class FullDisk(Journal):  # the disk fills up after 20 records
            def record(self, *a, **k):
                if self.written >= 20:
                    raise OSError(28, "No space left on device")
                return super().record(*a, **k)

        flow = await make_flow(journal=FullDisk(tmp_path / "journal.jsonl"))

        @flow.function_task
        async def work(i):
            await asyncio.sleep(0.01 * (i % 5))
            return i

        futs = [work(i) for i in range(40)]
        done, pending = await asyncio.wait(futs, timeout=20)
        assert not pending
        failed = [f for f in futs if f.exception() is not None]
        assert failed and all(isinstance(f.exception(), EngineError) for f in failed)
        assert "No space left" in str(failed[0].exception())
        assert sum(1 for f in futs if f.exception() is None) == 20
        with pytest.raises(EngineError, match="journal"):
            work(99)
        await flow.shutdown()

    run(main())


# ---------------------------------------------------------------------- containers
class TaggedList(list):
    def __init__(self, a, b):
        super().__init__([a, b])
        self.tag = "kept"


def _one_and_echo(flow):
    """A task that returns 1 and one that returns its argument."""

    @flow.function_task
    async def one():
        return 1

    @flow.function_task
    def echo(x):
        return x

    return one, echo


def test_futures_in_big_and_subclassed_containers(make_flow):
    async def main():
        flow = await make_flow()
        one, echo = _one_and_echo(flow)

        big = [(i, i) for i in range(150_000)]
        big.append((one(),))
        assert (await echo(big))[-1] == (1,)
        dd = collections.defaultdict(list)
        dd["a"] = one()
        got = await echo(dd)
        assert type(got) is collections.defaultdict and got["a"] == 1 and got.default_factory is list
        got = await echo(TaggedList(one(), 2))
        assert type(got) is TaggedList and list(got) == [1, 2] and got.tag == "kept"
        got = await echo(collections.deque([one(), 2], maxlen=5))
        assert got == collections.deque([1, 2]) and got.maxlen == 5
        got = await echo(collections.OrderedDict(a=one()))
        assert type(got) is collections.OrderedDict and got["a"] == 1
        point = collections.namedtuple("Point", "x y")
        assert await echo(point(one(), 2)) == point(1, 2)
        await flow.shutdown()

    run(main())


def test_a_container_that_cannot_be_rebuilt_is_refused_by_name(make_flow):
    class Frozen(tuple):
        def __new__(cls, items, flag):  # cannot be rebuilt from its items alone
            return super().__new__(cls, items)

    async def main():
        flow = await make_flow()
        one, echo = _one_and_echo(flow)

        with pytest.raises(TypeError, match="Frozen"):
            await echo(Frozen([one()], True))
        await flow.shutdown()

    run(main())


atoms = st.one_of(st.integers(), st.text(max_size=5), st.none())
containers = st.sampled_from(["list", "tuple", "set", "frozenset", "dict", "deque",
                              "defaultdict", "ordereddict", "listsub"])


class ListSub(list):
    pass


def _wrap(kind, items):
    if kind == "list":
        return list(items)
    if kind == "tuple":
        return tuple(items)
    if kind == "set":
        return set(items)
    if kind == "frozenset":
        return frozenset(items)
    if kind == "deque":
        return collections.deque(items)
    if kind == "listsub":
        return ListSub(items)
    d = {f"k{i}": v for i, v in enumerate(items)}
    if kind == "defaultdict":
        return collections.defaultdict(int, d)
    if kind == "ordereddict":
        return collections.OrderedDict(d)
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(containers, min_size=1, max_size=3), extra=st.lists(atoms, max_size=20),
       size=st.integers(min_value=0, max_value=2000))
def test_fuzzed_containers_never_pass_a_future_through(kinds, extra, size):
    async def main():
        flow = await WorkflowEngine.create(install_signal_handlers=False)

        @flow.function_task(inline=True)
        async def val():
            return 41

        @flow.function_task(inline=True)
        async def echo(x):
            return x

        def build():
            items = [val()] + [i for i in range(size)] + [repr(a) for a in extra]
            obj = items
            for kind in kinds:
                if kind in ("set", "frozenset"):  # hashable members only: a fresh future
                    obj = _wrap(kind, [val(), size, *map(repr, extra)])
                else:
                    obj = _wrap(kind, [obj])
                items = [obj]
            return obj

        got = await echo(build())

        def no_future(x, depth=0):
            assert not isinstance(x, asyncio.Future)
            if isinstance(x, dict):
                for v in x.values():
                    no_future(v, depth + 1)
            elif isinstance(x, (list, tuple, set, frozenset, collections.deque)):
                for v in x:
                    no_future(v, depth + 1)

        no_future(got)
        await flow.shutdown()

    run(main())


def test_futures_as_dict_keys_and_bad_numbers_at_call_time(make_flow):
    async def main():
        flow = await make_flow()

        @flow.function_task
        async def key():
            return "k"

        @flow.function_task
        def echo(x):
            return x

        assert await echo({key(): 1}) == {"k": 1}
        got = await echo(collections.OrderedDict([(key(), 1), ("z", 2)]))
        assert list(got.items()) == [("k", 1), ("z", 2)]
        for bad in ({"retry_backoff": math.nan}, {"timeout": math.inf}, {"retries": -2}):
            with pytest.raises(ConfigurationError):
                await asyncio.wait_for(echo(1, task_description=bad), 10)
        await flow.shutdown()

    run(main())
