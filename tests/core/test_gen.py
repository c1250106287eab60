"""`AsyncGen`: lazy, replayable streams of results and their operators."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcpipe.core import (
    AsyncGen,
    Err,
    ErrCode,
    ErrInfo,
    Ok,
    Result,
    async_fail,
    async_gen_and_then,
    async_gen_bracket,
    async_gen_empty,
    async_gen_filter,
    async_gen_from_iterable,
    async_gen_from_plan,
    async_gen_from_results,
    async_gen_map,
    async_gen_map_action,
    async_gen_return,
    async_pure,
    collect,
    partition,
)

from ._support import Probe

ints = st.integers(min_value=-100, max_value=100)
errinfos = st.builds(ErrInfo, st.sampled_from(sorted(ErrCode.ALL)), st.text(max_size=5))
results: st.SearchStrategy[Result[int, ErrInfo]] = st.one_of(ints.map(Ok), errinfos.map(Err))
result_lists = st.lists(results, max_size=6)
streams = result_lists.map(async_gen_from_results)
ok_streams = st.lists(ints, max_size=6).map(async_gen_from_iterable)
kleisli = st.functions(like=lambda x: [Ok(x)], returns=result_lists, pure=True).map(
    lambda f: lambda x: async_gen_from_results(f(x))
)
pure_int_fns = st.functions(like=lambda x: x, returns=ints, pure=True)

Kleisli = Callable[[int], AsyncGen[int]]
ERR = ErrInfo(ErrCode.BAD_INPUT, "undecodable")
MIXED: list[Result[int, ErrInfo]] = [Ok(1), Err(ERR), Ok(2)]


# --- monad and functor laws -------------------------------------------------------------


@given(ints, kleisli)
async def test_and_then_left_identity(x: int, f: Kleisli) -> None:
    assert await collect(async_gen_and_then(async_gen_return(x), f)) == await collect(f(x))


@given(streams)
async def test_and_then_right_identity(m: AsyncGen[int]) -> None:
    assert await collect(async_gen_and_then(m, async_gen_return)) == await collect(m)


@given(ok_streams, kleisli, kleisli)
async def test_and_then_associativity_on_the_ok_path(m: AsyncGen[int], f: Kleisli, g: Kleisli) -> None:
    lhs = async_gen_and_then(async_gen_and_then(m, f), g)
    rhs = async_gen_and_then(m, lambda x: async_gen_and_then(f(x), g))
    assert await collect(lhs) == await collect(rhs)


@given(streams, kleisli, kleisli)
async def test_and_then_associativity_with_errors(m: AsyncGen[int], f: Kleisli, g: Kleisli) -> None:
    lhs = async_gen_and_then(async_gen_and_then(m, f), g)
    rhs = async_gen_and_then(m, lambda x: async_gen_and_then(f(x), g))
    assert await collect(lhs) == await collect(rhs)


@given(streams)
async def test_map_identity(m: AsyncGen[int]) -> None:
    assert await collect(async_gen_map(m, lambda x: x)) == await collect(m)


@given(streams, st.lists(pure_int_fns, min_size=1, max_size=4))
async def test_chained_maps_equal_one_map_of_the_composition(m: AsyncGen[int], fs: list[Callable[[int], int]]) -> None:
    chained = m
    for f in fs:
        chained = async_gen_map(chained, f)

    def composed(x: int) -> int:
        for f in fs:
            x = f(x)
        return x

    assert await collect(chained) == await collect(async_gen_map(m, composed))


@given(ok_streams, pure_int_fns)
async def test_map_is_and_then_of_return(m: AsyncGen[int], f: Callable[[int], int]) -> None:
    via_bind = async_gen_and_then(m, lambda x: async_gen_return(f(x)))
    assert await collect(async_gen_map(m, f)) == await collect(via_bind)


async def test_chained_maps_call_each_function_per_item_in_stage_order() -> None:
    calls: list[str] = []

    def tag(name: str) -> Callable[[int], int]:
        def f(x: int) -> int:
            calls.append(f"{name}{x}")
            return x

        return f

    await collect(async_gen_map(async_gen_map(async_gen_from_iterable([1, 2]), tag("f")), tag("g")))
    assert calls == ["f1", "g1", "f2", "g2"]


async def test_a_mapped_stream_stays_usable_after_being_mapped_again() -> None:
    once = async_gen_map(async_gen_from_iterable([1, 2]), lambda x: x + 1)
    async_gen_map(once, lambda x: x * 100)
    assert await collect(once) == [Ok(2), Ok(3)]


# --- per-item errors ----------------------------------------------------------------------


async def test_map_passes_an_err_through_unchanged_and_goes_on() -> None:
    stream = async_gen_from_results(MIXED)
    assert await collect(async_gen_map(stream, lambda x: x * 10)) == [Ok(10), Err(ERR), Ok(20)]


async def test_filter_keeps_every_err() -> None:
    stream = async_gen_from_results(MIXED)
    assert await collect(async_gen_filter(stream, lambda x: x > 1)) == [Err(ERR), Ok(2)]


async def test_and_then_passes_an_err_through_without_starting_its_inner_stream() -> None:
    probe = Probe()
    stream = async_gen_from_results(MIXED)
    out = await collect(async_gen_and_then(stream, lambda x: probe.stream([x, x])))
    assert out == [Ok(1), Ok(1), Err(ERR), Ok(2), Ok(2)]
    assert probe.runs == 2


async def test_and_then_passes_inner_errs_through() -> None:
    failing: AsyncGen[int] = async_gen_from_results([Err(ERR)])
    out = await collect(async_gen_and_then(async_gen_from_iterable([1, 2]), lambda x: failing))
    assert out == [Err(ERR), Err(ERR)]


async def test_map_plan_runs_the_plan_per_ok_and_passes_errs_through() -> None:
    probe = Probe()
    stream = async_gen_from_results(MIXED)
    out = await collect(async_gen_map_action(stream, lambda x: probe.plan(x * 3)))
    assert out == [Ok(3), Err(ERR), Ok(6)]
    assert probe.runs == 2


async def test_map_plan_yields_a_failed_plan_as_an_item() -> None:
    stream = async_gen_from_iterable([1, 2])
    out = await collect(async_gen_map_action(stream, lambda x: async_fail(ERR) if x == 1 else async_pure(x)))
    assert out == [Err(ERR), Ok(2)]


# --- laziness -----------------------------------------------------------------------------


async def _take(gen: AsyncGen[object], k: int) -> list[Result[object, ErrInfo]]:
    out: list[Result[object, ErrInfo]] = []
    async with contextlib.aclosing(gen()) as it:  # type: ignore[type-var]
        async for r in it:
            out.append(r)
            if len(out) == k:
                break
    return out


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=4))
async def test_breaking_early_out_of_a_map_chain_pulls_only_what_was_taken(k: int, depth: int) -> None:
    probe = Probe()
    gen = probe.stream(range(100))
    for _ in range(depth):
        gen = async_gen_map(gen, lambda x: x)
    assert len(await _take(gen, k)) == k
    assert probe.pulls == k


async def test_breaking_early_out_of_a_filter_pulls_up_to_the_last_kept_item() -> None:
    probe = Probe()
    evens = async_gen_filter(probe.stream(range(100)), lambda x: x % 2 == 0)
    assert await _take(evens, 3) == [Ok(0), Ok(2), Ok(4)]
    assert probe.pulls == 5


async def test_breaking_early_out_of_and_then_pulls_only_the_outer_items_needed() -> None:
    outer, inner = Probe(), Probe()
    gen = async_gen_and_then(outer.stream(range(100)), lambda x: inner.stream([x, x, x]))
    assert len(await _take(gen, 4)) == 4
    assert (outer.pulls, inner.runs, inner.pulls) == (2, 2, 4)


async def test_from_iterable_reads_its_iterable_only_when_pulled() -> None:
    read: list[int] = []

    def numbers() -> object:
        for i in range(10):
            read.append(i)
            yield i

    await _take(async_gen_from_iterable(numbers()), 2)  # type: ignore[arg-type]
    assert read == [0, 1]


# --- purity and replay ----------------------------------------------------------------


def test_building_streams_runs_nothing() -> None:
    probe = Probe()
    called: list[str] = []

    def note(name: str) -> Callable[[object], object]:
        def f(x: object) -> object:
            called.append(name)
            return x

        return f

    src = probe.stream([1, 2])
    async_gen_map(async_gen_map(src, note("map")), note("map2"))
    async_gen_filter(src, lambda x: bool(note("filter")(x)))
    async_gen_and_then(src, lambda x: probe.stream([note("and_then")(x)]))
    async_gen_map_action(src, lambda x: probe.plan(note("map_plan")(x)))
    async_gen_from_plan(probe.plan(1))
    async_gen_bracket(probe.plan("r"), lambda r: asyncio.sleep(0), lambda r: src)
    assert (probe.runs, probe.pulls, called) == (0, 0, [])


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.stream([1, 2]),
        lambda p: async_gen_map(async_gen_map(p.stream([1, 2]), lambda x: x), lambda x: x),
        lambda p: async_gen_filter(p.stream([1, 2]), lambda x: True),
        lambda p: async_gen_and_then(p.stream([1]), lambda x: async_gen_from_iterable([x, 2])),
        lambda p: async_gen_map_action(p.stream([1, 2]), async_pure),
    ],
    ids=["source", "map", "filter", "and_then", "map_plan"],
)
async def test_a_stream_driven_twice_runs_twice_with_fresh_iterators(build: Callable[[Probe], AsyncGen[int]]) -> None:
    probe = Probe()
    gen = build(probe)
    first, second = gen(), gen()
    assert first is not second
    assert [r async for r in first] == [r async for r in second] == [Ok(1), Ok(2)]
    assert probe.runs == 2


async def test_lift_async_item_runs_its_plan_on_each_drive() -> None:
    probe = Probe()
    gen = async_gen_from_plan(probe.plan("x"))
    assert await collect(gen) == await collect(gen) == [Ok("x")]
    assert probe.runs == 2


# --- resource safety: async_gen_bracket ---------------------------------------------------------


class Resource:
    """A resource whose acquire, use and release are all recorded."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def acquire(self) -> Callable[[], object]:
        async def run() -> Result[str, ErrInfo]:
            self.log.append("acquire")
            return Ok("conn")

        return run

    async def release(self, handle: str) -> None:
        self.log.append(f"release {handle}")

    def use(self, handle: str, *, n: int = 3, fail_at: int | None = None, wait_at: int | None = None) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            try:
                for i in range(n):
                    if i == fail_at:
                        raise RuntimeError("use failed")
                    if i == wait_at:
                        self.log.append("waiting")
                        self.waiting.set()
                        await self.gate.wait()
                    yield Ok(i)
            finally:
                self.log.append("use closed")

        return run

    def stream(self, **use_args: int | None) -> AsyncGen[int]:
        return async_gen_bracket(
            self.acquire(),  # type: ignore[arg-type]
            self.release,
            lambda h: self.use(h, **use_args),  # type: ignore[arg-type]
        )


async def test_using_releases_on_normal_end() -> None:
    res = Resource()
    assert await collect(res.stream()) == [Ok(0), Ok(1), Ok(2)]
    assert res.log == ["acquire", "use closed", "release conn"]


async def test_using_releases_on_break_with_aclosing() -> None:
    res = Resource()
    assert await _take(res.stream(), 1) == [Ok(0)]
    assert res.log == ["acquire", "use closed", "release conn"]


async def test_using_releases_on_break_through_downstream_operators() -> None:
    res = Resource()
    gen = async_gen_and_then(
        async_gen_filter(async_gen_map(res.stream(), lambda x: x), lambda x: True),
        async_gen_return,
    )
    await _take(gen, 1)
    assert res.log == ["acquire", "use closed", "release conn"]


async def test_using_releases_when_the_stream_raises() -> None:
    res = Resource()
    with pytest.raises(RuntimeError, match="use failed"):
        await collect(res.stream(fail_at=1))
    assert res.log == ["acquire", "use closed", "release conn"]


async def test_using_releases_when_the_consumer_raises() -> None:
    res = Resource()
    with pytest.raises(LookupError):
        async with contextlib.aclosing(res.stream()()) as it:  # type: ignore[type-var]
            async for _ in it:
                raise LookupError
    assert res.log == ["acquire", "use closed", "release conn"]


async def test_using_releases_on_cancellation() -> None:
    res = Resource()

    async def consume() -> None:
        await collect(res.stream(wait_at=1))

    task = asyncio.ensure_future(consume())
    await res.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert res.log == ["acquire", "waiting", "use closed", "release conn"]


async def test_using_does_not_use_or_release_when_acquire_fails() -> None:
    probe = Probe()
    released: list[object] = []

    async def release(r: object) -> None:
        released.append(r)

    gen = async_gen_bracket(async_fail(ERR), release, lambda r: probe.stream([r]))
    assert await collect(gen) == [Err(ERR)]
    assert (probe.runs, released) == (0, [])


async def test_using_acquires_afresh_on_each_drive() -> None:
    res = Resource()
    gen = res.stream(n=1)
    await collect(gen)
    await collect(gen)
    assert res.log.count("acquire") == res.log.count("release conn") == 2


# --- small helpers ----------------------------------------------------------------------


async def test_empty_and_return() -> None:
    assert await collect(async_gen_empty()) == []
    assert await collect(async_gen_return(5)) == [Ok(5)]


def test_partition_splits_values_and_errors_in_order() -> None:
    other = ErrInfo(ErrCode.TIMEOUT, "slow")
    assert partition([*MIXED, Err(other)]) == ([1, 2], [ERR, other])
