"""The one interpreter of plans: nothing else in funcpipe drives a top-level plan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from funcpipe.core import AsyncPlan, Err, ErrInfo, Result, user_error

T = TypeVar("T")


async def perform_async(plan: AsyncPlan[T]) -> Result[T, ErrInfo]:
    """Drive ``plan`` once in the running loop; an escaped exception becomes an ``Err``."""
    try:
        return await plan()
    except Exception as exc:
        return Err(user_error(exc))


def perform(plan: AsyncPlan[T]) -> Result[T, ErrInfo]:
    """Drive ``plan`` to completion in a new event loop."""
    return asyncio.run(perform_async(plan))


def drive(
    make_coro: Callable[[], Coroutine[Any, Any, T]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run the coroutine ``make_coro()`` to completion in a new event loop.

    The synchronous entry points of the root API (``Pipeline.run()``,
    ``Pipeline.query()``) and ``funcpipe test`` start their loop here, so only
    `funcpipe.run` starts one. Exceptions propagate as they are.

    Args:
        make_coro: makes the coroutine to run.
        loop_factory: makes the loop (``funcpipe.testing.VirtualEventLoop``
            runs on virtual time); default: asyncio's.
    """
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(make_coro())
