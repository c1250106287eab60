"""The one interpreter of plans: nothing else in funcpipe drives a top-level plan."""

from __future__ import annotations

import asyncio
from typing import TypeVar

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
