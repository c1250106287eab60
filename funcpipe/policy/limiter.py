"""A keyed GCRA rate limiter with FIFO waiters and a hard per-period bound.

For a `RateLimit` of ``requests`` per ``per`` with ``burst`` b, let
``T = per / requests`` (the emission interval) and ``L = requests + b - 1``.

Pacing (GCRA). Each key's bucket keeps a theoretical arrival time ``tat``. A
call of cost ``c`` may start at ``t >= tat - (b - min(c, b)) * T``; starting
moves ``tat`` to ``max(tat, t) + c * T``. Up to ``b`` unit calls may start
back to back; after that they are spaced ``T`` apart, so a saturated limiter
runs at the configured rate.

Lateness. An event loop wakes a sleeper a little after the time it asked
for. Charged at that late ``t``, every start would push all later ones back,
and a saturated limiter with ``burst: 1`` would lose the lateness on every
call (about 10% at 200/s). So a call that waited for its opening is charged
at the opening it waited for, when it starts less than ``T`` after it: the
schedule stays on its grid and the next call may start a little less than
``T`` after a late one. A later start (a stalled loop) is charged at
``t - T``, so an idle or stalled limiter never saves up more than one call.

Bound. Every start is also checked against the log of the last period's
starts: a call starts only if the cost started in ``(t - per, t]``, its own
included, is at most ``L``. So **for any half-open window of length ``per``,
the cost started is at most ``requests + burst - 1``**, whatever the pacing
allows. A single call costing more than ``L`` cannot fit any window: it
starts only once the last period is empty, and nothing else starts within a
period of it.

Waiters are served first come, first served whatever their cost, so a large
call is never starved by small ones. Nothing is reserved before a call
starts, so a waiter that is cancelled, or gives up at its deadline, leaves no
trace. `RateLimiter.pause` (a server's ``Retry-After``) holds a key's bucket
for every caller: shared back-off.

Buckets that have fully drained are evicted; a drained bucket behaves exactly
like a fresh one, so eviction never changes a schedule, and memory stays
proportional to the keys active within the last period.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from types import TracebackType

from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy.clock import REAL_CLOCK, Clock, sleep_until
from funcpipe.policy.models import RateLimit

__all__ = ["RateLimiter", "Turn"]

_MIN_SWEEP = 64


@dataclass(eq=False, slots=True)
class _Waiter:
    cost: int
    head: bool = False  # first in line: the only waiter that may start
    wake: asyncio.Future[None] | None = None  # set while it waits to become the head


@dataclass(eq=False, slots=True)
class _Bucket:
    tat: float = float("-inf")
    paused_until: float = float("-inf")
    log: deque[tuple[float, int]] = field(default_factory=deque)
    log_cost: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)


class RateLimiter:
    """Per-run state of one `RateLimit`: a bucket per key.

    Args:
        limit: the rate limit value.
        clock: the clock the limiter reads and sleeps on.
    """

    def __init__(self, limit: RateLimit, clock: Clock = REAL_CLOCK) -> None:
        self.limit = limit
        self.clock = clock
        self._interval = limit.per / limit.requests
        self._capacity = limit.requests + limit.burst - 1
        self._buckets: dict[Hashable, _Bucket] = {}
        self._sweep_at = _MIN_SWEEP

    def __repr__(self) -> str:
        return f"RateLimiter({self.limit!r}, keys={len(self._buckets)})"

    @property
    def capacity(self) -> int:
        """``requests + burst - 1``: the most cost that starts in any window of ``per``."""
        return self._capacity

    @property
    def tracked_keys(self) -> int:
        """How many buckets are held (idle ones are evicted as keys come and go)."""
        return len(self._buckets)

    def turn(self, cost: int = 1, *, key: Hashable = None) -> Turn:
        """Join ``key``'s queue for a call of ``cost``; use as ``async with``.

        Raises:
            ValueError: if ``cost`` is negative.
        """
        if cost < 0:
            raise ValueError(f"a call's cost cannot be negative, got {cost}")
        return Turn(self, key, cost)

    async def acquire(
        self, cost: int = 1, *, key: Hashable = None, deadline: float | None = None
    ) -> Result[float, ErrInfo]:
        """Wait until a call of ``cost`` may start for ``key``, and record its start.

        Returns:
            ``Ok(seconds waited)``, or ``Err(TIMEOUT)`` without waiting further
            once it is known the call cannot start before ``deadline``.
        """
        async with self.turn(cost, key=key) as turn:
            waited = await turn.ready(deadline)
            if isinstance(waited, Ok):
                turn.commit()
            return waited

    def start_now(self, cost: int = 1, *, key: Hashable = None) -> bool:
        """Record a call of ``cost`` starting now for ``key`` if it may start at once; say whether it did.

        It may when nobody waits in ``key``'s line and the limit allows it
        now. This is `acquire` for a caller that does not wait: no `Turn` is
        made, and a refusal leaves no trace.
        """
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.waiters:
            return False
        if bucket is None:
            bucket = self._bucket(key)
        now = self.clock.now()
        if self._earliest(bucket, cost, now) > now:
            return False
        self._commit(bucket, cost, now)
        return True

    def pause(self, seconds: float, *, key: Hashable = None) -> None:
        """Start nothing for ``key`` during the next ``seconds`` (e.g. a ``Retry-After``)."""
        if seconds <= 0:
            return
        bucket = self._bucket(key)
        bucket.paused_until = max(bucket.paused_until, self.clock.now() + seconds)

    def paused_until(self, key: Hashable = None) -> float | None:
        """When ``key``'s pause ends, if it is paused now."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.paused_until <= self.clock.now():
            return None
        return bucket.paused_until

    def _bucket(self, key: Hashable) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep()
            bucket = self._buckets[key] = _Bucket()
        return bucket

    def _sweep(self) -> None:
        now = self.clock.now()
        for key in [k for k, b in self._buckets.items() if self._drained(b, now)]:
            del self._buckets[key]
        # Doubling keeps the sweeps amortised O(1) per new key.
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._buckets))

    def _drained(self, bucket: _Bucket, now: float) -> bool:
        self._expire(bucket, now)
        return not bucket.waiters and not bucket.log and bucket.tat <= now and bucket.paused_until <= now

    def _expire(self, bucket: _Bucket, now: float) -> None:
        per = self.limit.per
        log = bucket.log
        while log and log[0][0] + per <= now:
            bucket.log_cost -= log.popleft()[1]

    def _earliest(self, bucket: _Bucket, cost: int, now: float) -> float:
        """The earliest time ``>= now`` at which a call of ``cost`` may start."""
        burst = self.limit.burst
        start = max(now, bucket.paused_until, bucket.tat - (burst - min(cost, burst)) * self._interval)
        self._expire(bucket, now)
        # Free enough of the logged cost for this call, oldest first; an
        # oversized call needs the whole log gone.
        excess = bucket.log_cost if cost > self._capacity else bucket.log_cost + cost - self._capacity
        per = self.limit.per
        for started, logged in bucket.log:
            if excess <= 0:
                break
            start = max(start, started + per)
            excess -= logged
        return start

    def _commit(self, bucket: _Bucket, cost: int, now: float, opening: float | None = None) -> None:
        """Record a start at ``now``, paced from the ``opening`` it waited for, if any (see Lateness)."""
        interval = self._interval
        charged = now if opening is None else max(opening, now - interval)
        bucket.tat = max(bucket.tat, charged) + cost * interval
        if cost:
            bucket.log.append((now, cost))
            bucket.log_cost += cost


class Turn:
    """A place in one key's FIFO queue of a `RateLimiter`.

    Use as ``async with limiter.turn(cost, key=k) as turn``: wait with
    `ready`, then `commit` when the call starts. Leaving the block without
    committing (cancelled, deadline, breaker open) gives the place up and
    costs nothing.
    """

    def __init__(self, limiter: RateLimiter, key: Hashable, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost
        self._bucket: _Bucket | None = None
        self._waiter = _Waiter(cost)
        self._opening: float | None = None  # the latest opening it slept until
        self._done = False

    async def __aenter__(self) -> Turn:
        bucket = self._bucket = self._limiter._bucket(self._key)
        bucket.waiters.append(self._waiter)
        if len(bucket.waiters) == 1:
            self._waiter.head = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    async def ready(self, deadline: float | None = None) -> Result[float, ErrInfo]:
        """Wait until this call is first in line and may start now.

        Args:
            deadline: clock time by which the call must start.

        Returns:
            ``Ok(seconds waited)``; or ``Err(TIMEOUT)`` as soon as the call
            cannot start before ``deadline``: no wait is scheduled past it.
        """
        limiter, bucket = self._limiter, self._require_bucket()
        clock = limiter.clock
        began = clock.now()
        waiter = self._waiter
        if not waiter.head:
            remaining = None if deadline is None else deadline - began
            wake = waiter.wake = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(remaining):
                    await wake
            except TimeoutError:
                return Err(_too_late(deadline, "waiting in line for the rate limiter"))
            finally:
                waiter.wake = None
        while True:
            now = clock.now()
            start = limiter._earliest(bucket, self._cost, now)
            if start <= now:
                return Ok(now - began)
            if deadline is not None and start >= deadline:
                return Err(_too_late(deadline, "the rate limiter's next opening", start))
            self._opening = start
            await sleep_until(clock, start)

    def may_start(self) -> bool:
        """Whether this call is first in line and may start right now."""
        bucket = self._require_bucket()
        now = self._limiter.clock.now()
        return self._waiter.head and self._limiter._earliest(bucket, self._cost, now) <= now

    def commit(self) -> None:
        """Record the call's start now and hand the line on.

        Raises:
            RuntimeError: if the call may not start now (see `may_start`).
        """
        if not self.may_start() or self._done:
            raise RuntimeError("Turn.commit() called before the turn was ready")
        self._limiter._commit(self._require_bucket(), self._cost, self._limiter.clock.now(), self._opening)
        self._leave()

    def _require_bucket(self) -> _Bucket:
        if self._bucket is None:
            raise RuntimeError("use the turn as `async with limiter.turn(...) as turn:`")
        return self._bucket

    def _leave(self) -> None:
        if self._done or self._bucket is None:
            return
        self._done = True
        waiters = self._bucket.waiters
        if waiters and waiters[0] is self._waiter:
            waiters.popleft()
            if waiters:
                head = waiters[0]
                head.head = True
                if head.wake is not None and not head.wake.done():
                    head.wake.set_result(None)
        else:
            # Not the head (given up while waiting): the line behind it just closes up.
            waiters.remove(self._waiter)


def _too_late(deadline: float | None, what: str, start: float | None = None) -> ErrInfo:
    at = "" if start is None else f" at {start:.3f}"
    return ErrInfo(
        ErrCode.TIMEOUT,
        f"the deadline ({deadline:.3f}) passes before {what}{at}",
        {"deadline": deadline, "waiting_for": "rate_limit"},
    )
