"""`AsyncGen`: a replayable description of a lazy asynchronous stream.

An ``AsyncGen[T]`` is a zero-argument callable returning a *fresh* async
iterator of ``Result[T, ErrInfo]``. Per-item failures are ``Err`` values that
flow through every operator unchanged while the stream goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, TypeVar

from funcpipe.core._plan import AsyncPlan
from funcpipe.core._result import Err, ErrInfo, Ok, Result

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

AsyncGen: TypeAlias = Callable[[], AsyncIterator[Result[T, ErrInfo]]]


def async_gen_return(value: T) -> AsyncGen[T]:
    """A stream of exactly one ``Ok(value)``."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        yield Ok(value)

    return run


def async_gen_empty() -> AsyncGen[Any]:
    """A stream with no items."""

    async def run() -> AsyncIterator[Result[Any, ErrInfo]]:
        return
        yield  # pragma: no cover - makes this an async generator

    return run


def async_gen_from_iterable(values: Iterable[T]) -> AsyncGen[T]:
    """A stream of ``Ok(v)`` for each ``v``; the iterable is read lazily on each run."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        for v in values:
            yield Ok(v)

    return run


def async_gen_from_results(results: Iterable[Result[T, ErrInfo]]) -> AsyncGen[T]:
    """A stream of the given results, as they are."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        for r in results:
            yield r

    return run


def async_gen_map(gen: AsyncGen[T], f: Callable[[T], U]) -> AsyncGen[U]:
    """Apply a pure ``f`` to every ``Ok``; each ``Err`` passes through unchanged."""

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        async for r in gen():
            if type(r) is Ok:
                yield Ok(f(r.value))
            else:
                yield r  # type: ignore[misc]

    return run


def async_gen_filter(gen: AsyncGen[T], keep: Callable[[T], bool]) -> AsyncGen[T]:
    """Keep the ``Ok`` values for which ``keep`` is true; every ``Err`` is kept."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        async for r in gen():
            if type(r) is not Ok or keep(r.value):
                yield r

    return run


def async_gen_and_then(gen: AsyncGen[T], f: Callable[[T], AsyncGen[U]]) -> AsyncGen[U]:
    """Replace each ``Ok(v)`` by the stream ``f(v)`` (flat map).

    An ``Err`` passes through and its inner stream is never started.
    """

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        async for r in gen():
            if isinstance(r, Ok):
                async for inner in f(r.value)():
                    yield inner
            else:
                yield r

    return run


def async_gen_map_plan(gen: AsyncGen[T], f: Callable[[T], AsyncPlan[U]]) -> AsyncGen[U]:
    """Run the plan ``f(v)`` for each ``Ok(v)``, one at a time, yielding its result."""

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        async for r in gen():
            if isinstance(r, Ok):
                yield await f(r.value)()
            else:
                yield r

    return run


def lift_async_item(plan: AsyncPlan[T]) -> AsyncGen[T]:
    """A stream of the single result of ``plan``."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        yield await plan()

    return run


def async_gen_using(
    acquire: AsyncPlan[R],
    release: Callable[[R], Awaitable[None]],
    use: Callable[[R], AsyncGen[T]],
) -> AsyncGen[T]:
    """Acquire a resource, stream ``use(resource)``, and always release it.

    The release runs on normal end, on early close (``break`` followed by
    ``aclose``), on an exception and on cancellation. If acquiring fails, the
    stream is that single ``Err``.
    """

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        acquired = await acquire()
        if isinstance(acquired, Err):
            yield acquired
            return
        resource = acquired.value
        try:
            async for r in use(resource)():
                yield r
        finally:
            await release(resource)

    return run


async def collect(gen: AsyncGen[T]) -> list[Result[T, ErrInfo]]:
    """Drain a stream into a list (for tests and small streams)."""
    return [r async for r in gen()]


def partition(results: Iterable[Result[T, ErrInfo]]) -> tuple[list[T], list[ErrInfo]]:
    """Split results into (values, errors)."""
    oks: list[T] = []
    errs: list[ErrInfo] = []
    for r in results:
        if isinstance(r, Ok):
            oks.append(r.value)
        else:
            errs.append(r.error)
    return oks, errs


