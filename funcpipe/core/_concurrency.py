"""Structured concurrency over plans and streams.

Every combinator here returns a *description*. Tasks are started only when
the returned plan or stream is driven, always inside a scope that cancels and
awaits them before the plan returns or the stream closes: nothing leaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

from funcpipe.core._gen import AsyncGen, aclose_iterator
from funcpipe.core._plan import AsyncPlan, user_error
from funcpipe.core._result import Err, ErrCode, ErrInfo, Ok, Result

T = TypeVar("T")
U = TypeVar("U")


def _foreign_cancel() -> ErrInfo:
    return ErrInfo(ErrCode.CANCELLED, "cancelled from inside the plan or stream")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _drive(f: Callable[[T], AsyncPlan[U]], arg: T) -> Result[U, ErrInfo]:
    # A plan should not raise. If building or running one does, the failure stays
    # with that one slot instead of tearing down its siblings.
    try:
        return await f(arg)()
    except asyncio.CancelledError:
        if _cancelling():  # our scope is being cancelled: let it unwind
            raise
        return Err(_foreign_cancel())
    except Exception as exc:
        return Err(user_error(exc))


def _run_plan(plan: AsyncPlan[T]) -> AsyncPlan[T]:
    return plan


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


class _FailFast(Exception):
    """Raised by a fail-fast worker to stop its siblings; carries the failure."""

    def __init__(self, failure: Err[ErrInfo]) -> None:
        super().__init__(failure.error.msg)
        self.failure = failure


def for_each_par(
    items: Iterable[T], effect_fn: Callable[[T], AsyncPlan[U]], parallelism: int = 10
) -> AsyncPlan[list[U]]:
    """Run ``effect_fn(item)`` for every item, at most ``parallelism`` at once; fail fast.

    Succeeds with the values in input order. The first ``Err`` to arrive
    cancels the plans still running, starts no more, and is the result.
    Items are read lazily from ``items`` as workers free up, on each run (a
    one-shot iterator is empty on replay). `for_each_par_settled` runs them
    all and keeps every result instead.

    Raises:
        ValueError: ``parallelism`` is below 1 (when the plan is built).
    """
    _check_bound(parallelism, "parallelism")

    async def run() -> Result[list[U], ErrInfo]:
        values: dict[int, U] = {}
        source = enumerate(items)

        async def worker() -> None:
            for i, item in source:  # the shared iterator hands out work
                res = await _drive(effect_fn, item)
                if isinstance(res, Err):
                    raise _FailFast(res)
                values[i] = res.value

        workers = [asyncio.ensure_future(worker()) for _ in range(parallelism)]
        try:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            failures = [t.exception() for t in workers if t.done() and not t.cancelled()]
            for exc in failures:
                if isinstance(exc, _FailFast):
                    return exc.failure
                if exc is not None:  # pragma: no cover - _drive turns every Exception into an Err
                    raise exc
        finally:
            await _cancel_all(workers)
        return Ok([values[i] for i in range(len(values))])

    return run


def for_each_par_settled(
    items: Iterable[T], effect_fn: Callable[[T], AsyncPlan[U]], parallelism: int = 8
) -> AsyncPlan[list[Result[U, ErrInfo]]]:
    """Run ``effect_fn(item)`` for every item with at most ``parallelism`` in flight; keep every result.

    Runs on a fixed pool of workers; the results come back in input order and
    one failure does not stop the others. Items are read lazily from ``items``
    as workers free up, on each run (a one-shot iterator is empty on replay).

    Raises:
        ValueError: ``parallelism`` is below 1 (when the plan is built).
    """
    _check_bound(parallelism, "parallelism")

    async def run() -> Result[list[Result[U, ErrInfo]], ErrInfo]:
        results: dict[int, Result[U, ErrInfo]] = {}
        source = enumerate(items)

        async def worker() -> None:
            for i, item in source:  # the shared iterator hands out work
                results[i] = await _drive(effect_fn, item)

        workers = [asyncio.ensure_future(worker()) for _ in range(parallelism)]
        try:
            await asyncio.gather(*workers)
        finally:
            await _cancel_all(workers)
        return Ok([results[i] for i in range(len(results))])

    return run


def async_gather_settled(plans: Sequence[AsyncPlan[T]], concurrency: int = 8) -> AsyncPlan[list[Result[T, ErrInfo]]]:
    """Drive every plan with at most ``concurrency`` at once; every result, in input order.

    Failures do not stop the others: each slot holds that plan's `Result`.

    Raises:
        ValueError: ``concurrency`` is below 1 (when the plan is built).
    """
    _check_bound(concurrency, "concurrency")
    return for_each_par_settled(plans, _run_plan, parallelism=min(concurrency, max(1, len(plans))))


def async_gather(plans: Sequence[AsyncPlan[T]], *, concurrency: int = 16) -> AsyncPlan[list[T]]:
    """Drive independent plans, at most ``concurrency`` at once; their values in input order.

    Every plan runs to its end. The result is ``Ok`` of the values if all
    succeed, else the ``Err`` of the first failed plan *by index*, whatever
    the order they finished in. `async_gather_settled` keeps every result.

    Raises:
        ValueError: ``concurrency`` is below 1 (when the plan is built).
    """
    settled = async_gather_settled(plans, concurrency)

    async def run() -> Result[list[T], ErrInfo]:
        res = await settled()
        if isinstance(res, Err):  # pragma: no cover - a settled gather always succeeds
            return res
        values: list[T] = []
        for r in res.value:
            if isinstance(r, Err):
                return r
            values.append(r.value)
        return Ok(values)

    return run


async def _first_completed(pending: set[asyncio.Task[Result[T, ErrInfo]]]) -> None:
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)


def zip_par(*plans: AsyncPlan[Any]) -> AsyncPlan[tuple[Any, ...]]:
    """Drive all plans concurrently; succeed with the tuple of their values.

    Fail-fast: the first ``Err`` cancels the rest and is returned.
    """

    async def run() -> Result[tuple[Any, ...], ErrInfo]:
        tasks = [asyncio.ensure_future(_drive(_run_plan, p)) for p in plans]
        try:
            pending = set(tasks)
            while pending:
                await _first_completed(pending)
                for t in [t for t in pending if t.done()]:
                    pending.discard(t)
                    res = t.result()
                    if isinstance(res, Err):
                        return res
            return Ok(tuple(t.result().unwrap() for t in tasks))
        finally:
            await _cancel_all(tasks)

    return run


def race(*plans: AsyncPlan[T]) -> AsyncPlan[T]:
    """Drive ``race(a, b, ...)`` concurrently: the first plan to *succeed* wins; the others are cancelled.

    A plan that fails early does not win. If every plan fails, the result is an
    ``Err`` whose ``meta["errors"]`` lists every failure in input order (its
    code is the first failure's).
    """

    async def run() -> Result[T, ErrInfo]:
        if not plans:
            return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, "race() of no plans"))
        tasks = [asyncio.ensure_future(_drive(_run_plan, p)) for p in plans]
        try:
            pending = set(tasks)
            while pending:
                await _first_completed(pending)
                # Among plans finishing in the same step, input order decides.
                for t in [t for t in tasks if t in pending and t.done()]:
                    pending.discard(t)
                    res = t.result()
                    if isinstance(res, Ok):
                        return res
            infos = [r.error for r in (t.result() for t in tasks) if isinstance(r, Err)]
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


def async_gen_gather(gens: Sequence[AsyncGen[T]], concurrency: int | None = None, max_buffer: int = 16) -> AsyncGen[T]:
    """Merge several streams concurrently into one.

    At most ``concurrency`` inner streams are pulled at once (all of them when
    None) and at most ``max_buffer`` results wait to be consumed, so a slow consumer stops the
    producers. Order within each stream is kept; across streams it is the
    order of arrival. An inner stream that raises ends with an ``Err`` and the
    others go on. Closing or cancelling the merged stream cancels every
    producer and closes every open inner stream before it returns.

    Raises:
        ValueError: ``concurrency`` or ``max_buffer`` is below 1 (when the stream is built).
    """
    width = len(gens) if concurrency is None else _check_bound(concurrency, "concurrency")
    _check_bound(max_buffer, "max_buffer")

    async def run() -> AsyncIterator[Result[T, ErrInfo]]:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=max_buffer)
        pending = iter(gens)

        async def pump() -> None:
            for gen in pending:  # the shared iterator hands out streams
                it: AsyncIterator[Result[T, ErrInfo]] | None = None
                try:
                    it = gen()
                    async for r in it:
                        await queue.put(r)
                except asyncio.CancelledError:
                    if _cancelling():  # the merged stream is closing
                        raise
                    await queue.put(Err(_foreign_cancel()))
                except Exception as exc:
                    await queue.put(Err(user_error(exc)))
                finally:
                    if it is not None:
                        await aclose_iterator(it)
            await queue.put(_DONE)

        workers = [asyncio.ensure_future(pump()) for _ in range(min(width, len(gens)))]
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
