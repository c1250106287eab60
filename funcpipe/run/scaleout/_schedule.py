"""The shared rate limit's book of starts: what the limiter actor grants, and when.

Workers do not start calls on their own authority: they ask for *grants*.
A grant books starts ahead of time on one timeline every worker reads (the
wall clock) and answers with their times; the worker starts each call at
its time. The book is the limiter's GCRA and hard window bound
(`funcpipe.policy.limiter`), with two changes that a shared limit needs:

- **Starts are booked in advance**, in the order asked, so a start may lie
  in the future; the window bound counts booked starts, future ones too.
- **A guard widens the window.** A booked start happens a little off its
  time: the worker's loop wakes late, the request is built and travels to
  the service, and clocks of different hosts differ a little. The book therefore keeps at most
  ``requests + burst - 1`` starts in any window of ``per + guard`` and paces
  at ``requests / (per + guard)``, and a worker drops a start it could not
  make within `TOLERANCE` of its time. A start that lands up to
  ``guard`` off its booked time then still leaves every ``per`` window the
  service sees within the limit.

A ``Retry-After`` pauses a key's book: nothing is booked before its end, so
every worker's next grant waits it out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from funcpipe.policy.models import RateLimit

__all__ = ["GUARD", "TOLERANCE", "Book"]

GUARD = 0.04
"""Seconds the shared window is widened by, to absorb the jitter of starts in other processes."""

TOLERANCE = 0.015
"""How late after its booked time a worker may still make a start; later, it drops it and asks again."""


@dataclass(eq=False, slots=True)
class _Key:
    tat: float = float("-inf")
    last: float = float("-inf")  # the latest start booked: bookings never go back in time
    paused_until: float = float("-inf")
    log: deque[tuple[float, int]] = field(default_factory=deque)
    log_cost: int = 0


class Book:
    """The booked starts of one shared `RateLimit`, per key.

    Args:
        limit: the rate limit every worker shares.
        guard: seconds the window is widened by (see the module's docstring).
    """

    def __init__(self, limit: RateLimit, guard: float = GUARD) -> None:
        if guard < 0:
            raise ValueError(f"the guard cannot be negative, got {guard}")
        self.limit = limit
        self.window = limit.per + guard
        self.interval = self.window / limit.requests
        self.capacity = limit.requests + limit.burst - 1
        self._keys: dict[Hashable, _Key] = {}

    def __repr__(self) -> str:
        return f"Book({self.limit!r}, window={self.window}, keys={len(self._keys)})"

    def book(self, costs: Sequence[int], now: float, *, key: Hashable = None, slack: int = 0) -> list[float]:
        """Book one start per cost, in order, none before ``now``; return their times.

        ``slack`` intervals are left free after the first start: room for a
        start expected to come late (a worker's first call opens its client
        and its connection), so that it cannot crowd the next one.

        Raises:
            ValueError: if a cost is negative.
        """
        bucket = self._keys.get(key)
        if bucket is None:
            self._evict(now)
            bucket = self._keys[key] = _Key()
        starts = []
        for i, cost in enumerate(costs):
            if cost < 0:
                raise ValueError(f"a call's cost cannot be negative, got {cost}")
            start = self._earliest(bucket, cost, now)
            bucket.tat = max(bucket.tat, start) + (cost + (slack if i == 0 else 0)) * self.interval
            bucket.last = start
            if cost:
                bucket.log.append((start, cost))
                bucket.log_cost += cost
            starts.append(start)
        return starts

    def pause(self, until: float, *, key: Hashable = None) -> None:
        """Book nothing for ``key`` before ``until`` (a server's ``Retry-After``)."""
        bucket = self._keys.setdefault(key, _Key())
        bucket.paused_until = max(bucket.paused_until, until)

    def _earliest(self, bucket: _Key, cost: int, now: float) -> float:
        burst = self.limit.burst
        start = max(now, bucket.last, bucket.paused_until, bucket.tat - (burst - min(cost, burst)) * self.interval)
        log, window = bucket.log, self.window
        while log and log[0][0] + window <= now:
            bucket.log_cost -= log.popleft()[1]
        # Every booked start is at or before ``start``: free the oldest until this one fits.
        excess = bucket.log_cost if cost > self.capacity else bucket.log_cost + cost - self.capacity
        for started, logged in log:
            if excess <= 0:
                break
            start = max(start, started + window)
            excess -= logged
        return start

    def _evict(self, now: float) -> None:
        """Forget keys with nothing booked in the last window, no pause and no pacing left."""
        if len(self._keys) < 64:
            return
        idle = [
            k for k, b in self._keys.items() if b.last + self.window <= now and b.tat <= now and b.paused_until <= now
        ]
        for k in idle:
            del self._keys[k]
