"""Structured concurrency over plans and streams.

Every combinator here returns a *description*. Tasks are started only when
the returned plan or stream is driven, always inside a scope that cancels and
awaits them before the plan returns or the stream closes: nothing leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

from funcpipe.core._gen import AsyncGen
from funcpipe.core._plan import AsyncPlan, user_error
from funcpipe.core._result import Err, ErrInfo, Ok, Result

T = TypeVar("T")
U = TypeVar("U")


async def _drive(plan: AsyncPlan[T]) -> Result[T, ErrInfo]:
    try:
        return await plan()
    except Exception as exc:  # a plan should not raise; keep the scope alive if it does
        return Err(user_error(exc))


async def _cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _check_bound(n: int, name: str) -> int:
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def for_each_par(
    items: Iterable[T], f: Callable[[T], AsyncPlan[U]], parallelism: int = 8
) -> AsyncPlan[list[Result[U, ErrInfo]]]:
    """Run ``f(item)`` for every item with at most ``parallelism`` in flight.

    Runs on a fixed pool of workers; the results come back in input order.
    Items are read lazily from ``items`` as workers free up.
    """
    _check_bound(parallelism, "parallelism")

    async def run() -> Result[list[Result[U, ErrInfo]], ErrInfo]:
        results: dict[int, Result[U, ErrInfo]] = {}
        source = enumerate(items)

        async def worker() -> None:
            for i, item in source:  # the shared iterator hands out work
                results[i] = await _drive(f(item))

        workers = [asyncio.ensure_future(worker()) for _ in range(parallelism)]
        try:
            await asyncio.gather(*workers)
        finally:
            await _cancel_all(workers)
        return Ok([results[i] for i in range(len(results))])

    return run


def async_gather(
    plans: Sequence[AsyncPlan[T]], concurrency: int = 8
) -> AsyncPlan[list[Result[T, ErrInfo]]]:
    """Drive every plan with at most ``concurrency`` at once; results in input order.

    Failures do not stop the others: each slot holds that plan's `Result`.
    """
    _check_bound(concurrency, "concurrency")
    return for_each_par(plans, lambda p: p, parallelism=min(concurrency, max(1, len(plans))))


def zip_par(*plans: AsyncPlan[Any]) -> AsyncPlan[tuple[Any, ...]]:
    """Drive all plans concurrently; succeed with the tuple of their values.

    Fail-fast: the first ``Err`` cancels the rest and is returned.
    """

    async def run() -> Result[tuple[Any, ...], ErrInfo]:
        tasks = [asyncio.ensure_future(_drive(p)) for p in plans]
        values: list[Any] = [None] * len(tasks)
        index = {t: i for i, t in enumerate(tasks)}
        try:
            for fut in asyncio.as_completed(tasks):
                res = await fut
                if isinstance(res, Err):
                    return res
            for t, i in index.items():
                res = t.result()
                assert isinstance(res, Ok)
                values[i] = res.value
            return Ok(tuple(values))
        finally:
            await _cancel_all(tasks)

    return run


def race(plans: Sequence[AsyncPlan[T]]) -> AsyncPlan[T]:
    """The first plan to *succeed* wins; the others are cancelled.

    If every plan fails, the result is an ``Err`` whose ``meta["errors"]``
    lists every failure in input order (its code is the first failure's).
    """

    async def run() -> Result[T, ErrInfo]:
        if not plans:
            return Err(ErrInfo("SERVICE_SPECIFIC", "race() of no plans"))
        tasks = [asyncio.ensure_future(_drive(p)) for p in plans]
        try:
            for fut in asyncio.as_completed(tasks):
                res = await fut
                if isinstance(res, Ok):
                    return res
            errors = [t.result() for t in tasks]
            infos = [e.error for e in errors if isinstance(e, Err)]
            return Err(
                ErrInfo(
                    infos[0].code,
                    f"all {len(infos)} raced plans failed: " + "; ".join(i.msg for i in infos),
                    {"errors": tuple(infos)},
                )
            )
        finally:
            await _cancel_all(tasks)

    return run


_DONE = object()


def async_gen_gather(gens: Sequence[AsyncGen[T]], concurrency: int = 8, buffer: int = 64) -> AsyncGen[T]:
    """Merge several streams concurrently into one.

    At most ``concurrency`` inner streams are pulled at once and at most
    ``buffer`` results wait to be consumed, so a slow consumer stops the
    producers. Order within each stream is kept; across streams it is the
    order of arrival. Closing or cancelling the merged stream cancels every
    producer and closes every inner stream.
    """
    _check_bound(concurrency, "concurrency")
    _check_bound(buffer, "buffer")

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=buffer)
        pending = iter(enumerate(gens))

        async def pump() -> None:
            for _, gen in pending:
                try:
                    async with contextlib.aclosing(gen()) as it:  # type: ignore[type-var]
                        async for r in it:
                            await queue.put(r)
                except Exception as exc:
                    await queue.put(Err(user_error(exc)))
            await queue.put(_DONE)

        workers = [asyncio.ensure_future(pump()) for _ in range(min(concurrency, max(1, len(gens))))]
        try:
            live = len(workers)
            while live:
                r = await queue.get()
                if r is _DONE:
                    live -= 1
                    continue
                yield r  # type: ignore[misc]
        finally:
            await _cancel_all(workers)

    return run
