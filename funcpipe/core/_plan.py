"""`AsyncPlan`: a replayable description of one asynchronous computation.

An ``AsyncPlan[T]`` is a zero-argument callable that returns a *fresh*
coroutine producing ``Result[T, ErrInfo]``. Building a plan runs nothing;
calling it starts a new attempt, so the same plan can be retried, timed out
and replayed. Only ``funcpipe.run`` drives a top-level plan.

The lifts keep a synchronous core synchronous: `lift_sync` turns a
``Result``-returning function into one returning plans, and the executor
variants run it off the event loop.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

from funcpipe.core._result import Err, ErrCode, ErrInfo, Ok, Result

if TYPE_CHECKING:
    from funcpipe.core._gen import AsyncGen

T = TypeVar("T")
U = TypeVar("U")
P = ParamSpec("P")

AsyncPlan: TypeAlias = Callable[[], Coroutine[Any, Any, Result[T, ErrInfo]]]
# The adapter pages call a plan returned by a service method an "action"; it is the same type.
AsyncAction: TypeAlias = AsyncPlan[T]


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


def async_from_result(res: Result[T, ErrInfo]) -> AsyncPlan[T]:
    """A plan whose every run gives back ``res`` as it is."""

    async def run() -> Result[T, ErrInfo]:
        return res

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


def async_lift(make_coro: Callable[[], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
    """Lift a thunk that already returns a `Result` (``lambda: port.call(...)``) into a plan.

    The thunk is called on every run, so it must make a fresh awaitable each
    time: pass ``lambda: cap.method(x)``, never a coroutine made beforehand.
    Its `Result` is returned as it is; an exception it raises becomes
    ``Err(USER_CODE)`` rather than escaping. Cancellation is never swallowed.
    """

    async def run() -> Result[T, ErrInfo]:
        try:
            return await make_coro()
        except Exception as exc:
            return Err(user_error(exc))

    return run


def async_lift_call(fn: Callable[P, Awaitable[T]]) -> Callable[P, AsyncPlan[T]]:
    """Lift an ``async def`` returning a plain value into a function returning plans.

    ``async_lift_call(fetch)(url)`` is a plan that awaits ``fetch(url)`` on
    each run and succeeds with its value. Exceptions raised by ``fn`` become
    ``Err(USER_CODE)`` with the traceback in ``meta``; cancellation is never
    swallowed.
    """

    def lifted(*args: P.args, **kwargs: P.kwargs) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            try:
                return Ok(await fn(*args, **kwargs))
            except Exception as exc:
                return Err(user_error(exc))

        return run

    return lifted


def lift_sync(f: Callable[P, Result[T, ErrInfo]]) -> Callable[P, AsyncPlan[T]]:
    """Lift a synchronous, ``Result``-returning function into one returning plans.

    ``f`` runs when the plan runs, on the event loop's thread (keep it quick);
    an exception it raises becomes ``Err(USER_CODE)``.
    """

    def lifted(*args: P.args, **kwargs: P.kwargs) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            try:
                return f(*args, **kwargs)
            except Exception as exc:
                return Err(user_error(exc))

        return run

    return lifted


def lift_sync_with_executor(f: Callable[P, Result[T, ErrInfo]], executor: Executor) -> Callable[P, AsyncPlan[T]]:
    """Like `lift_sync`, but each run calls ``f`` on ``executor``, off the event loop."""

    def lifted(*args: P.args, **kwargs: P.kwargs) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(executor, lambda: f(*args, **kwargs))
            except Exception as exc:
                return Err(user_error(exc))

        return run

    return lifted


def lift_sync_gen_with_executor(
    f: Callable[P, Result[list[T], ErrInfo]], executor: Executor
) -> Callable[P, AsyncGen[T]]:
    """Lift a synchronous function returning ``Result[list[T]]`` into one returning streams.

    Each run calls ``f`` on ``executor`` and streams the list's items as
    ``Ok`` values; an ``Err`` (or an exception, as ``USER_CODE``) is the
    stream's single item.
    """

    def lifted(*args: P.args, **kwargs: P.kwargs) -> AsyncGen[T]:
        async def run() -> AsyncIterator[Result[T, ErrInfo]]:
            loop = asyncio.get_running_loop()
            try:
                res = await loop.run_in_executor(executor, lambda: f(*args, **kwargs))
            except Exception as exc:
                yield Err(user_error(exc))
                return
            if isinstance(res, Ok):
                for v in res.value:
                    yield Ok(v)
            else:
                yield res

        return run

    return lifted
