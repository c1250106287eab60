"""`AsyncPlan`: replayable thunks, their monad laws, purity and error capture."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcpipe.core import (
    AsyncPlan,
    Err,
    ErrCode,
    ErrInfo,
    Ok,
    Result,
    async_bind,
    async_fail,
    async_lift,
    async_lift_call,
    async_map,
    async_map_err,
    async_pure,
    user_error,
)

from ._support import Probe

ints = st.integers(min_value=-1000, max_value=1000)
errinfos = st.builds(ErrInfo, st.sampled_from(sorted(ErrCode.ALL)), st.text(max_size=8))


def _plan_of(r: Result[int, ErrInfo]) -> AsyncPlan[int]:
    return async_pure(r.value) if isinstance(r, Ok) else async_fail(r.error)


results: st.SearchStrategy[Result[int, ErrInfo]] = st.one_of(ints.map(Ok), errinfos.map(Err))
plans = results.map(_plan_of)
kleisli = st.functions(like=lambda x: Ok(x), returns=results, pure=True).map(lambda f: lambda x: _plan_of(f(x)))
pure_int_fns = st.functions(like=lambda x: x, returns=ints, pure=True)

Kleisli = Callable[[int], AsyncPlan[int]]


@given(ints, kleisli)
async def test_bind_left_identity(x: int, f: Kleisli) -> None:
    assert await async_bind(async_pure(x), f)() == await f(x)()


@given(plans)
async def test_bind_right_identity(m: AsyncPlan[int]) -> None:
    assert await async_bind(m, async_pure)() == await m()


@given(plans, kleisli, kleisli)
async def test_bind_associativity(m: AsyncPlan[int], f: Kleisli, g: Kleisli) -> None:
    lhs = async_bind(async_bind(m, f), g)
    rhs = async_bind(m, lambda x: async_bind(f(x), g))
    assert await lhs() == await rhs()


@given(plans)
async def test_map_identity(m: AsyncPlan[int]) -> None:
    assert await async_map(m, lambda x: x)() == await m()


@given(plans, pure_int_fns, pure_int_fns)
async def test_map_composition(m: AsyncPlan[int], f: Callable[[int], int], g: Callable[[int], int]) -> None:
    assert await async_map(async_map(m, f), g)() == await async_map(m, lambda x: g(f(x)))()


async def test_bind_short_circuits_on_err() -> None:
    probe = Probe()
    info = ErrInfo(ErrCode.TIMEOUT, "slow")
    assert await async_bind(async_fail(info), lambda _: probe.plan(1))() == Err(info)
    assert probe.runs == 0


async def test_map_err_changes_only_the_error() -> None:
    tag: Callable[[ErrInfo], ErrInfo] = lambda e: e.with_meta(stage="embed")  # noqa: E731
    assert await async_map_err(async_fail(ErrInfo("X", "m")), tag)() == Err(ErrInfo("X", "m", {"stage": "embed"}))
    assert await async_map_err(async_pure(1), tag)() == Ok(1)


def test_building_plans_runs_nothing() -> None:
    probe = Probe()
    called: list[str] = []

    async def effect(x: int) -> int:
        called.append("lifted")
        return x

    def f(x: object) -> AsyncPlan[object]:
        called.append("f")
        return probe.plan(x)

    async_bind(probe.plan(1), f)
    async_map(probe.plan(1), lambda x: called.append("g"))
    async_map_err(probe.plan(1), lambda e: e)
    async_lift_call(effect)(1)
    async_lift(probe.plan(1))
    assert (probe.runs, called) == (0, [])


async def test_a_plan_driven_twice_runs_twice_with_fresh_coroutines() -> None:
    probe = Probe()
    plan = async_map(async_bind(probe.plan(1), lambda x: probe.plan(x)), lambda x: x)
    first, second = plan(), plan()
    assert first is not second
    assert (await first, await second) == (Ok(1), Ok(1))
    assert probe.runs == 4


async def test_a_lifted_call_runs_its_function_on_each_drive() -> None:
    calls: list[int] = []

    async def effect(x: int) -> int:
        calls.append(x)
        return x * 2

    plan = async_lift_call(effect)(21)
    assert (await plan(), await plan()) == (Ok(42), Ok(42))
    assert calls == [21, 21]


async def test_lift_turns_an_exception_into_user_code_with_traceback() -> None:
    async def broken() -> int:
        raise ValueError("bad input")

    res = await async_lift_call(broken)()()
    assert isinstance(res, Err)
    assert (res.error.code, res.error.msg) == (ErrCode.USER_CODE, "ValueError: bad input")
    assert "raise ValueError" in str(res.error.meta["traceback"])


async def test_lift_does_not_swallow_cancellation() -> None:
    async def cancelled() -> int:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await async_lift_call(cancelled)()()


async def test_from_result_passes_the_result_and_captures_exceptions() -> None:
    async def gives() -> Result[int, ErrInfo]:
        return Err(ErrInfo(ErrCode.AUTH, "denied"))

    async def raises() -> Result[int, ErrInfo]:
        raise RuntimeError("oops")

    assert await async_lift(gives)() == Err(ErrInfo(ErrCode.AUTH, "denied"))
    res = await async_lift(raises)()
    assert isinstance(res, Err) and res.error.code == ErrCode.USER_CODE


def test_user_error_names_the_exception_and_keeps_the_code_given() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        info = user_error(exc, code=ErrCode.BAD_INPUT)
    assert (info.code, info.msg, info.meta["exception"]) == (ErrCode.BAD_INPUT, "KeyError: 'k'", "KeyError")
