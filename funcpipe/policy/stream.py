"""Stream-level policies: bounded concurrency, batching and fairness (first cut)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrInfo, Ok, Result
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.models import Batch, Policy

T = TypeVar("T")
U = TypeVar("U")

ErrorTagger = Callable[[T, ErrInfo], ErrInfo]


def apply_stream_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[T], AsyncPlan[U]],
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
) -> AsyncGen[U]:
    """Map ``f`` over ``stream`` with the policy's concurrency and call-level parts.

    Each ``Err`` of the input passes through untouched; ``on_error`` may enrich
    the error of a failed call with its input (for dead-lettering).
    """
    rt = runtime or PolicyRuntime(policy)

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        async for r in stream():
            if isinstance(r, Err):
                yield r
                continue
            res = await rt.apply(f(r.value))()
            if isinstance(res, Err) and on_error is not None:
                res = Err(on_error(r.value, res.error))
            yield res

    return run


def apply_batch_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[Sequence[T]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
    batch: Batch,
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    clock: Clock = REAL_CLOCK,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
    cost: Callable[[Sequence[T]], int] | None = None,
) -> AsyncGen[U]:
    """Group ``stream`` into batches and map ``f`` over them; results map back per item.

    A batch-level ``Err`` fails each of the batch's items with that error.
    """
    rt = runtime or PolicyRuntime(policy)

    async def flush(buf: list[T]) -> list[Result[U, ErrInfo]]:
        res = await rt.apply(f(buf), cost=cost(buf) if cost else 1)()
        if isinstance(res, Err):
            return [Err(on_error(x, res.error) if on_error else res.error) for x in buf]
        out: list[Result[U, ErrInfo]] = []
        for x, r in zip(buf, res.value, strict=True):
            out.append(Err(on_error(x, r.error)) if isinstance(r, Err) and on_error else r)
        return out

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        buf: list[T] = []
        async for r in stream():
            if isinstance(r, Err):
                yield r
                continue
            buf.append(r.value)
            if len(buf) >= batch.size:
                for x in await flush(buf):
                    yield x
                buf = []
        if buf:
            for x in await flush(buf):
                yield x

    _ = asyncio  # the full version runs batches concurrently
    return run


__all__ = ["Ok", "apply_batch_policy", "apply_stream_policy"]
