"""Time as a seam: every sleep and every ``now()`` in funcpipe goes through a `Clock`.

A clock must agree with the running event loop's ``time()``, because timeouts
(``asyncio.timeout``) are scheduled on the loop. `RealClock` reads the loop's
time when one is running, so under ``funcpipe.testing``'s virtual event loop
the same clock (and every timeout) runs on virtual time.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Monotonic time and sleeping, on the same scale as the running event loop."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend for ``seconds`` (a negative value means no wait)."""
        ...


class RealClock:
    """The running event loop's monotonic clock (`time.monotonic` outside a loop)."""

    def now(self) -> float:
        """The running loop's ``time()``, or `time.monotonic()` when no loop runs."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep` for ``seconds`` (at least zero)."""
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "RealClock()"


REAL_CLOCK = RealClock()
"""The clock every interpreter uses unless it is given another."""


async def sleep_until(clock: Clock, when: float) -> None:
    """Sleep on ``clock`` until its ``now()`` is at least ``when``.

    Float rounding can wake a sleeper a hair early; this loops until the
    deadline has really passed, always making progress.
    """
    while True:
        now = clock.now()
        if now >= when:
            return
        # ``now + tiny`` can round back to ``now``; one ulp always moves time on.
        await clock.sleep(max(when - now, math.ulp(now)))
