"""`AsyncPlan`: a replayable description of one asynchronous computation.

An ``AsyncPlan[T]`` is a zero-argument callable that returns a *fresh*
coroutine producing ``Result[T, ErrInfo]``. Building a plan runs nothing;
calling it starts a new attempt, so the same plan can be retried, timed out
and replayed. Only ``funcpipe.run`` drives a top-level plan.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar

from funcpipe.core._result import Err, ErrCode, ErrInfo, Ok, Result

T = TypeVar("T")
U = TypeVar("U")
P = ParamSpec("P")

AsyncPlan: TypeAlias = Callable[[], Coroutine[Any, Any, Result[T, ErrInfo]]]


def user_error(exc: BaseException, *, code: str = ErrCode.USER_CODE) -> ErrInfo:
    """Describe an exception raised by user code as an `ErrInfo` carrying its traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrInfo(code, f"{type(exc).__name__}: {exc}", {"traceback": tb, "exception": type(exc).__name__})


def async_pure(value: T) -> AsyncPlan[T]:
    """A plan that succeeds with ``value``."""

    async def run() -> Result[T, ErrInfo]:
        return Ok(value)

    return run


def async_fail(error: ErrInfo) -> AsyncPlan[Any]:
    """A plan that fails with ``error``."""

    async def run() -> Result[Any, ErrInfo]:
        return Err(error)

    return run


def async_bind(plan: AsyncPlan[T], f: Callable[[T], AsyncPlan[U]]) -> AsyncPlan[U]:
    """Sequence ``plan`` then the plan ``f`` makes from its value; an `Err` short-circuits."""

    async def run() -> Result[U, ErrInfo]:
        res = await plan()
        if isinstance(res, Ok):
            return await f(res.value)()
        return res

    return run


def async_map(plan: AsyncPlan[T], f: Callable[[T], U]) -> AsyncPlan[U]:
    """Apply a pure ``f`` to the plan's value; an `Err` passes through."""

    async def run() -> Result[U, ErrInfo]:
        res = await plan()
        if isinstance(res, Ok):
            return Ok(f(res.value))
        return res

    return run


def async_map_err(plan: AsyncPlan[T], f: Callable[[ErrInfo], ErrInfo]) -> AsyncPlan[T]:
    """Transform the error of a failed plan."""

    async def run() -> Result[T, ErrInfo]:
        res = await plan()
        if isinstance(res, Err):
            return Err(f(res.error))
        return res

    return run


def async_lift(fn: Callable[P, Awaitable[T]]) -> Callable[P, AsyncPlan[T]]:
    """Lift an ``async def`` into a function returning plans.

    Exceptions raised by ``fn`` become ``Err(USER_CODE)`` with the traceback
    in ``meta``; cancellation is never swallowed.
    """

    def lifted(*args: P.args, **kwargs: P.kwargs) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            try:
                return Ok(await fn(*args, **kwargs))
            except Exception as exc:
                return Err(user_error(exc))

        return run

    return lifted


def async_from_result(fn: Callable[[], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
    """Wrap a coroutine function that already returns a `Result` as a plan.

    Unexpected exceptions become ``Err(USER_CODE)`` rather than escaping.
    """

    async def run() -> Result[T, ErrInfo]:
        try:
            return await fn()
        except Exception as exc:
            return Err(user_error(exc))

    return run
