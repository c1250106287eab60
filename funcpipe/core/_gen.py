"""`AsyncGen`: a replayable description of a lazy asynchronous stream.

An ``AsyncGen[T]`` is a zero-argument callable returning a *fresh* async
iterator of ``Result[T, ErrInfo]``. Per-item failures are ``Err`` values that
flow through every operator unchanged while the stream goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeAlias, TypeVar

from funcpipe.core._plan import AsyncPlan, user_error
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


def async_gen_from_list(values: list[T]) -> AsyncGen[T]:
    """A stream of ``Ok(v)`` for each ``v`` of the list, in order, on each run."""
    return async_gen_from_iterable(values)


def async_gen_from_results(results: Iterable[Result[T, ErrInfo]]) -> AsyncGen[T]:
    """A stream of the given results, as they are."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        for r in results:
            yield r

    return run


async def aclose_iterator(it: AsyncIterator[object]) -> None:
    """Close ``it`` now if it can be closed (async generators can).

    Operators close their upstream as soon as they stop pulling from it, so a
    resource held upstream (`async_gen_using`) is released when the consumer
    stops, not whenever the garbage collector gets to the abandoned generator.
    """
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


class _MapGen(Generic[U]):
    """The thunk `async_gen_map` returns: a source stream and the functions to apply.

    Keeping the parts visible lets ``async_gen_map(async_gen_map(g, f), h)`` fuse
    into one pass applying ``f`` then ``h`` (the functor composition law): one
    generator and one ``Ok`` per item instead of one per stage. Because streams
    are pulled one item at a time, the calls happen in exactly the same order as
    with separate stages.
    """

    __slots__ = ("fs", "source")

    def __init__(self, source: AsyncGen[Any], fs: tuple[Callable[[Any], Any], ...]) -> None:
        self.source = source
        self.fs = fs

    def __call__(self) -> AsyncIterator[Result[U, ErrInfo]]:
        if len(self.fs) == 1:
            return _map_one(self.source(), self.fs[0])
        return _map_many(self.source(), self.fs)

    def __repr__(self) -> str:
        return f"async_gen_map({self.source!r}, {', '.join(map(repr, self.fs))})"


async def _map_one(
    upstream: AsyncIterator[Result[Any, ErrInfo]], f: Callable[[Any], Any]
) -> AsyncIterator[Result[Any, ErrInfo]]:
    try:
        async for r in upstream:
            # ``type(...) is`` is the cheapest Ok test, exact because Ok is final.
            if type(r) is Ok:
                yield Ok(f(r.value))
            else:
                yield r
    finally:
        await aclose_iterator(upstream)


async def _map_many(
    upstream: AsyncIterator[Result[Any, ErrInfo]], fs: tuple[Callable[[Any], Any], ...]
) -> AsyncIterator[Result[Any, ErrInfo]]:
    try:
        async for r in upstream:
            if type(r) is Ok:
                v = r.value
                for f in fs:
                    v = f(v)
                yield Ok(v)
            else:
                yield r
    finally:
        await aclose_iterator(upstream)


def async_gen_map(gen: AsyncGen[T], f: Callable[[T], U]) -> AsyncGen[U]:
    """Apply a pure ``f`` to every ``Ok``; each ``Err`` passes through unchanged.

    Chained maps fuse into a single stage; the observable behaviour (values,
    order of calls, laziness) is that of separate stages.
    """
    if type(gen) is _MapGen:
        return _MapGen(gen.source, (*gen.fs, f))
    return _MapGen(gen, (f,))


def async_gen_filter(gen: AsyncGen[T], keep: Callable[[T], bool]) -> AsyncGen[T]:
    """Keep the ``Ok`` values for which ``keep`` is true; every ``Err`` is kept."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        upstream = gen()
        try:
            async for r in upstream:
                if type(r) is not Ok or keep(r.value):
                    yield r
        finally:
            await aclose_iterator(upstream)

    return run


def async_gen_and_then(gen: AsyncGen[T], f: Callable[[T], AsyncGen[U]]) -> AsyncGen[U]:
    """Replace each ``Ok(v)`` by the stream ``f(v)`` (flat map).

    An ``Err`` passes through and its inner stream is never started.
    """

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        upstream = gen()
        try:
            async for r in upstream:
                if isinstance(r, Ok):
                    inner = f(r.value)()
                    try:
                        async for x in inner:
                            yield x
                    finally:
                        await aclose_iterator(inner)
                else:
                    yield r
        finally:
            await aclose_iterator(upstream)

    return run


def async_gen_flat_map(gen: AsyncGen[T], f: Callable[[T], AsyncGen[U]]) -> AsyncGen[U]:
    """Another name for `async_gen_and_then`."""
    return async_gen_and_then(gen, f)


def async_gen_map_action(gen: AsyncGen[T], f: Callable[[T], AsyncPlan[U]]) -> AsyncGen[U]:
    """Run the plan ``f(v)`` for each ``Ok(v)``, one at a time, yielding its result.

    An ``Err`` passes through and ``f`` is not called for it.
    """

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        upstream = gen()
        try:
            async for r in upstream:
                if isinstance(r, Ok):
                    yield await f(r.value)()
                else:
                    yield r
        finally:
            await aclose_iterator(upstream)

    return run


def lift_async_item(fn: Callable[[T], Awaitable[Result[U, ErrInfo]]]) -> Callable[[T], AsyncGen[U]]:
    """Lift a per-item async function into a stream transformer for `async_gen_and_then`.

    ``lift_async_item(fn)(x)`` is the stream of the single result of
    ``await fn(x)``, awaited afresh on each run; an exception ``fn`` raises
    becomes that item as ``Err(USER_CODE)``.
    """

    def lifted(x: T) -> AsyncGen[U]:
        async def run() -> AsyncIterator[Result[U, ErrInfo]]:
            try:
                res = await fn(x)
            except Exception as exc:
                res = Err(user_error(exc))
            yield res

        return run

    return lifted


def async_gen_from_plan(plan: AsyncPlan[T]) -> AsyncGen[T]:
    """A stream of the single result of ``plan``."""

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        yield await plan()

    return run


def async_gen_using(
    cm_thunk: Callable[[], AbstractAsyncContextManager[R]],
    make_stream: Callable[[R], AsyncGen[T]],
) -> AsyncGen[T]:
    """Stream ``make_stream(resource)`` inside ``async with cm_thunk() as resource``.

    Each run enters a fresh context manager. It is exited on every exit path:
    when the inner stream ends, on early close (``break`` then ``aclose``, as
    every funcpipe operator does), on an exception (which the context manager
    sees, then it propagates) and on cancellation. The inner stream is closed
    first, so nothing touches the resource once it is released. A consumer
    that breaks out of ``async for`` without closing the stream leaves the
    release to the generator's finalisation, whenever the event loop gets to it.
    """

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        async with cm_thunk() as resource:
            inner = make_stream(resource)()
            try:
                async for r in inner:
                    yield r
            finally:
                await aclose_iterator(inner)

    return run


def async_gen_bracket(
    acquire: AsyncPlan[R],
    release: Callable[[R], Awaitable[None]],
    use: Callable[[R], AsyncGen[T]],
) -> AsyncGen[T]:
    """Acquire a resource with a plan, stream ``use(resource)``, and always release it.

    The release runs on normal end, on early close (``break`` followed by
    ``aclose``), on an exception and on cancellation, after the inner stream
    has been closed, so nothing touches the resource once it is released. If
    acquiring fails, the stream is that single ``Err``. Use `async_gen_using`
    for a resource that is an async context manager.
    """

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        acquired = await acquire()
        if isinstance(acquired, Err):
            yield acquired
            return
        resource = acquired.value
        try:
            inner = use(resource)()
            try:
                async for r in inner:
                    yield r
            finally:
                await aclose_iterator(inner)
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
