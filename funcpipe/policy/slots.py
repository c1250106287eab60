"""Concurrency slots: a counting semaphore whose free slot costs no coroutine.

`PolicyRuntime` takes a slot for every attempt. `asyncio.Semaphore` makes and
awaits a coroutine even when a slot is free; `Slots.try_acquire` takes a free
one synchronously, so the usual case costs a comparison. Waiters are served
first come, first served: a released slot is handed straight to the oldest
waiter, so a newcomer can never take it first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["Slots"]


class Slots:
    """``n`` slots shared by concurrent callers, handed out in arrival order.

    Args:
        n: how many slots there are.

    Raises:
        ValueError: if ``n`` < 1.
    """

    __slots__ = ("_free", "_size", "_waiters")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"there must be at least one slot, got {n}")
        self._size = n
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"Slots(free={self._free}/{self._size}, waiting={len(self._waiters)})"

    @property
    def free(self) -> int:
        """How many slots nobody holds."""
        return self._free

    def locked(self) -> bool:
        """Whether a caller would have to wait for a slot now."""
        return not self._free or bool(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it; say whether it was taken."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting behind earlier waiters when none is free.

        Cancelling the wait gives up the place in line, and passes on a slot
        handed over meanwhile, so a cancelled waiter never holds one.
        """
        if self.try_acquire():
            return
        handed = asyncio.get_running_loop().create_future()
        self._waiters.append(handed)
        try:
            await handed
        except BaseException:
            if handed.done() and not handed.cancelled():
                self.release()  # it was handed a slot it will not use
            else:
                with contextlib.suppress(ValueError):  # already skipped by a release
                    self._waiters.remove(handed)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one."""
        waiters = self._waiters
        while waiters:
            handed = waiters.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1
