"""Structured concurrency: bounds, ordering, fail-fast, first success, and no leaked tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import (
    AsyncGen,
    AsyncPlan,
    Err,
    ErrCode,
    ErrInfo,
    Ok,
    Result,
    async_fail,
    async_gather_settled,
    async_gen_from_iterable,
    async_gen_from_results,
    async_gen_gather,
    async_pure,
    collect,
    for_each_par_settled,
    race,
    zip_par,
)

from ._support import Probe, settle

ERR = ErrInfo(ErrCode.TRANSIENT, "503")
sizes = st.integers(min_value=0, max_value=24)
bounds = st.integers(min_value=1, max_value=8)


def _delayed(value: object, yields: int, *, fail: bool = False) -> AsyncPlan[object]:
    async def run() -> Result[object, ErrInfo]:
        for _ in range(yields):
            await asyncio.sleep(0)
        return Err(ErrInfo(ErrCode.TRANSIENT, str(value))) if fail else Ok(value)

    return run


# --- async_gather_settled and for_each_par_settled ------------------------------------------------------


@settings(max_examples=40)
@given(sizes, bounds, st.integers(min_value=1, max_value=3))
async def test_gather_never_exceeds_its_bound_and_reaches_it(n: int, bound: int, yields: int) -> None:
    probe = Probe()
    res = await async_gather_settled([probe.plan(i, yields=yields) for i in range(n)], concurrency=bound)()
    assert res == Ok([Ok(i) for i in range(n)])
    assert probe.max_in_flight == min(bound, n)


@settings(max_examples=40)
@given(st.lists(st.integers(min_value=0, max_value=5), max_size=12), bounds)
async def test_gather_returns_results_in_input_order_whatever_the_finishing_order(
    delays: list[int], bound: int
) -> None:
    plans = [_delayed(i, d, fail=i % 3 == 0) for i, d in enumerate(delays)]
    res = await async_gather_settled(plans, concurrency=bound)()
    expected = [Err(ErrInfo(ErrCode.TRANSIENT, str(i))) if i % 3 == 0 else Ok(i) for i in range(len(delays))]
    assert res == Ok(expected)


async def test_gather_keeps_going_after_a_failure() -> None:
    probe = Probe()
    res = await async_gather_settled([async_fail(ERR), probe.plan(1), probe.plan(2)], concurrency=1)()
    assert res == Ok([Err(ERR), Ok(1), Ok(2)])


async def test_gather_turns_a_raising_plan_into_an_err_in_its_slot() -> None:
    async def raises() -> Result[object, ErrInfo]:
        raise RuntimeError("plan bug")

    plans: list[AsyncPlan[object]] = [raises, async_pure(1)]
    res = await async_gather_settled(plans)()
    assert isinstance(res, Ok)
    first = res.value[0]
    assert isinstance(first, Err) and first.error.code == ErrCode.USER_CODE
    assert res.value[1] == Ok(1)


async def test_gather_turns_a_self_cancelling_plan_into_a_cancelled_err() -> None:
    async def cancels_itself() -> Result[object, ErrInfo]:
        raise asyncio.CancelledError

    plans: list[AsyncPlan[object]] = [cancels_itself, async_pure(1)]
    res = await async_gather_settled(plans)()
    assert isinstance(res, Ok)
    assert [r.error.code if isinstance(r, Err) else r for r in res.value] == [ErrCode.CANCELLED, Ok(1)]


@settings(max_examples=40)
@given(sizes, bounds, st.integers(min_value=1, max_value=3))
async def test_for_each_par_never_exceeds_its_parallelism(n: int, bound: int, yields: int) -> None:
    probe = Probe()
    res = await for_each_par_settled(range(n), lambda i: probe.plan(i * 2, yields=yields), parallelism=bound)()
    assert res == Ok([Ok(i * 2) for i in range(n)])
    assert probe.max_in_flight == min(bound, n)


async def test_for_each_par_reads_items_only_as_workers_free_up() -> None:
    pulled: list[int] = []
    started = asyncio.Event()
    gate = asyncio.Event()

    def items() -> Any:
        for i in range(10):
            pulled.append(i)
            yield i

    async def hold(i: int) -> Result[int, ErrInfo]:
        started.set()
        await gate.wait()
        return Ok(i)

    task = asyncio.ensure_future(for_each_par_settled(items(), lambda i: lambda: hold(i), parallelism=3)())
    await started.wait()
    await settle()
    assert pulled == [0, 1, 2]
    gate.set()
    assert await task == Ok([Ok(i) for i in range(10)])


async def test_for_each_par_turns_a_raising_plan_factory_into_an_err() -> None:
    def f(i: int) -> AsyncPlan[int]:
        if i == 1:
            raise ValueError("bad item")
        return async_pure(i)

    res = await for_each_par_settled([0, 1, 2], f)()
    assert isinstance(res, Ok)
    assert [r.error.code if isinstance(r, Err) else r for r in res.value] == [Ok(0), ErrCode.USER_CODE, Ok(2)]


@pytest.mark.parametrize("bound", [0, -1])
def test_bounds_below_one_are_refused_when_building(bound: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        async_gather_settled([], concurrency=bound)
    with pytest.raises(ValueError, match="must be >= 1"):
        for_each_par_settled([], async_pure, parallelism=bound)
    with pytest.raises(ValueError, match="must be >= 1"):
        async_gen_gather([], concurrency=bound)
    with pytest.raises(ValueError, match="must be >= 1"):
        async_gen_gather([], max_buffer=bound)


async def test_gather_of_nothing_is_an_empty_list() -> None:
    assert await async_gather_settled([])() == Ok([])


# --- zip_par ----------------------------------------------------------------------------


async def test_zip_par_succeeds_with_every_value_in_order() -> None:
    assert await zip_par(_delayed("a", 3), _delayed("b", 0), _delayed("c", 1))() == Ok(("a", "b", "c"))


async def test_zip_par_of_nothing_is_the_empty_tuple() -> None:
    assert await zip_par()() == Ok(())


async def test_zip_par_fails_fast_and_cancels_the_rest() -> None:
    probe = Probe()
    started_b, started_c = asyncio.Event(), asyncio.Event()

    async def fails_after_others_start() -> Result[object, ErrInfo]:
        await started_b.wait()
        await started_c.wait()
        return Err(ERR)

    before = asyncio.all_tasks()
    res = await zip_par(probe.blocked(started_b, "b"), fails_after_others_start, probe.blocked(started_c, "c"))()
    assert res == Err(ERR)
    assert sorted(probe.events) == ["cancelled b", "cancelled c"]
    assert asyncio.all_tasks() == before


# --- race -----------------------------------------------------------------------------------


async def test_race_returns_the_first_success_not_the_first_completion() -> None:
    probe = Probe()
    failed = asyncio.Event()
    started = asyncio.Event()

    async def fails_first() -> Result[object, ErrInfo]:
        await started.wait()
        failed.set()
        return Err(ERR)

    async def succeeds_second() -> Result[object, ErrInfo]:
        await failed.wait()
        return Ok("winner")

    before = asyncio.all_tasks()
    res = await race(fails_first, succeeds_second, probe.blocked(started, "slow"))()
    assert res == Ok("winner")
    assert probe.events == ["cancelled slow"]
    assert asyncio.all_tasks() == before


@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6))
async def test_race_of_all_failures_carries_every_failure_in_input_order(delays: list[int]) -> None:
    res = await race(*[_delayed(i, d, fail=True) for i, d in enumerate(delays)])()
    assert isinstance(res, Err)
    errors = res.error.meta["errors"]
    assert errors == tuple(ErrInfo(ErrCode.TRANSIENT, str(i)) for i in range(len(delays)))
    assert res.error.code == ErrCode.TRANSIENT


@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6), st.data())
async def test_race_wins_with_a_success_whenever_there_is_one(delays: list[int], data: st.DataObject) -> None:
    ok_index = data.draw(st.integers(min_value=0, max_value=len(delays) - 1))
    res = await race(*[_delayed(i, d, fail=i != ok_index) for i, d in enumerate(delays)])()
    assert res == Ok(ok_index)


async def test_race_of_nothing_fails() -> None:
    res = await race()()
    assert isinstance(res, Err)


# --- cancellation leaks nothing ---------------------------------------------------------------


def _blocked_plans(probe: Probe, started: list[asyncio.Event]) -> list[AsyncPlan[object]]:
    return [probe.blocked(e, str(i)) for i, e in enumerate(started)]


async def _blocked_stream_consumer(probe: Probe, started: list[asyncio.Event]) -> None:
    def stream(i: int, e: asyncio.Event) -> AsyncGen[object]:
        async def run() -> AsyncIterator[Result[object, ErrInfo]]:
            yield Ok(i)
            await probe.blocked(e, str(i))()

        return run

    await collect(async_gen_gather([stream(i, e) for i, e in enumerate(started)], concurrency=3))


DRIVERS: dict[str, Callable[[Probe, list[asyncio.Event]], Coroutine[Any, Any, object]]] = {
    "async_gather_settled": lambda p, s: async_gather_settled(_blocked_plans(p, s), concurrency=3)(),
    "zip_par": lambda p, s: zip_par(*_blocked_plans(p, s))(),
    "race": lambda p, s: race(*_blocked_plans(p, s))(),
    "for_each_par_settled": lambda p, s: for_each_par_settled(
        range(len(s)), lambda i: p.blocked(s[i], str(i)), parallelism=3
    )(),
    "async_gen_gather": _blocked_stream_consumer,
}


@pytest.mark.parametrize("name", sorted(DRIVERS))
async def test_cancelling_a_running_combinator_cancels_its_children_and_leaks_no_task(name: str) -> None:
    probe = Probe()
    started = [asyncio.Event() for _ in range(3)]
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(DRIVERS[name](probe, started))
    for e in started:
        await e.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.cancelled == 3
    assert asyncio.all_tasks() == before


# --- async_gen_gather -------------------------------------------------------------------------


@settings(max_examples=40)
@given(st.lists(st.lists(st.integers(), max_size=6), max_size=6), bounds, st.integers(min_value=1, max_value=4))
async def test_gen_gather_delivers_everything_keeping_each_streams_order(
    lists: list[list[int]], concurrency: int, buffer: int
) -> None:
    gens = [async_gen_from_iterable([(i, x) for x in xs]) for i, xs in enumerate(lists)]
    out = await collect(async_gen_gather(gens, concurrency=concurrency, max_buffer=buffer))
    values = [r.unwrap() for r in out]
    assert sorted(values) == sorted((i, x) for i, xs in enumerate(lists) for x in xs)
    for i, xs in enumerate(lists):
        assert [x for j, x in values if j == i] == xs


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=10), bounds)
async def test_gen_gather_never_pulls_more_streams_at_once_than_its_bound(n: int, bound: int) -> None:
    probe = Probe()

    def stream(i: int) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            probe.enter()
            try:
                for _ in range(2):
                    await asyncio.sleep(0)
                    yield Ok(i)
            finally:
                probe.in_flight -= 1

        return run

    out = await collect(async_gen_gather([stream(i) for i in range(n)], concurrency=bound))
    assert len(out) == 2 * n
    assert probe.max_in_flight == min(bound, n)


@pytest.mark.parametrize(("concurrency", "buffer"), [(1, 1), (2, 3), (4, 8)])
async def test_gen_gather_blocks_producers_while_the_consumer_is_slow(concurrency: int, buffer: int) -> None:
    probe = Probe()
    gens = [probe.stream(range(100)) for _ in range(concurrency)]
    async with contextlib.aclosing(async_gen_gather(gens, concurrency=concurrency, max_buffer=buffer)()) as it:  # type: ignore[type-var]
        await it.__anext__()
        await settle(50)
        # Each producer may hold one item it is waiting to put: no more is pulled.
        assert probe.pulls == 1 + buffer + concurrency
        await it.__anext__()
        await settle(50)
        assert probe.pulls == 2 + buffer + concurrency


async def test_closing_gen_gather_early_closes_the_inner_streams() -> None:
    closed: list[int] = []

    def stream(i: int) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            try:
                for x in range(100):
                    yield Ok(i * 1000 + x)
            finally:
                closed.append(i)

        return run

    before = asyncio.all_tasks()
    async with contextlib.aclosing(
        async_gen_gather([stream(i) for i in range(3)], concurrency=3, max_buffer=2)()
    ) as it:  # type: ignore[type-var]
        async for _ in it:
            break
    assert sorted(closed) == [0, 1, 2]
    assert asyncio.all_tasks() == before


async def test_gen_gather_turns_a_raising_stream_into_an_err_and_goes_on() -> None:
    def broken() -> AsyncIterator[Result[int, ErrInfo]]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            yield Ok(1)
            raise RuntimeError("source broke")

        return run()

    out = await collect(async_gen_gather([broken, async_gen_from_iterable([2, 3])], concurrency=1))
    codes = [r.error.code if isinstance(r, Err) else r for r in out]
    assert codes == [Ok(1), ErrCode.USER_CODE, Ok(2), Ok(3)]


async def test_gen_gather_passes_errs_through() -> None:
    mixed: list[Result[int, ErrInfo]] = [Err(ERR), Ok(1)]
    out = await collect(async_gen_gather([async_gen_from_results(mixed)]))
    assert out == [Err(ERR), Ok(1)]


async def test_gen_gather_of_nothing_is_empty() -> None:
    assert await collect(async_gen_gather([])) == []


# --- purity and replay ---------------------------------------------------------------------------


def test_building_concurrent_descriptions_runs_nothing() -> None:
    probe = Probe()
    pulled: list[int] = []

    def items() -> Any:
        pulled.append(0)
        yield 0

    async_gather_settled([probe.plan(1), probe.plan(2)], concurrency=1)
    zip_par(probe.plan(1), probe.plan(2))
    race(probe.plan(1), probe.plan(2))
    for_each_par_settled(items(), probe.plan, parallelism=2)
    async_gen_gather([probe.stream([1]), probe.stream([2])])
    assert (probe.runs, probe.pulls, pulled) == (0, 0, [])


@pytest.mark.parametrize(
    "build",
    [
        lambda p: async_gather_settled([p.plan(1), p.plan(2)]),
        lambda p: zip_par(p.plan(1), p.plan(2)),
        lambda p: for_each_par_settled([1, 2], p.plan),
    ],
    ids=["async_gather_settled", "zip_par", "for_each_par_settled"],
)
async def test_a_concurrent_plan_driven_twice_runs_its_children_twice(
    build: Callable[[Probe], AsyncPlan[object]],
) -> None:
    probe = Probe()
    plan = build(probe)
    first, second = plan(), plan()
    assert first is not second
    assert await first == await second
    assert probe.runs == 4


async def test_gen_gather_driven_twice_runs_its_streams_twice() -> None:
    probe = Probe()
    gen = async_gen_gather([probe.stream([1]), probe.stream([2])])
    assert sorted(r.unwrap() for r in await collect(gen)) == sorted(r.unwrap() for r in await collect(gen)) == [1, 2]
    assert probe.runs == 4
