"""A worker's side of a shared rate limit: calls wait in a local line for starts granted by the book.

`LeasedLimiter` offers what `funcpipe.policy.PolicyRuntime` asks of a
limiter (`funcpipe.policy.shared.LimiterGate`). It never starts a call on
its own: the head of a key's line asks the book (`funcpipe.run.scaleout._schedule.Book`,
kept by the policy actor) for a *grant* covering every call then waiting
without a start, up to `MAX_GRANT` of them, so one round trip serves a
small batch and the overhead stays low. Each call receives a start time,
sleeps until it, and starts within `TOLERANCE` of it or gives it up and
asks again: a late start could crowd a window the book already filled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from types import TracebackType

from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy.clock import Clock, sleep_until
from funcpipe.run.scaleout._schedule import TOLERANCE

__all__ = ["MAX_GRANT", "Grant", "LeasedLimiter", "LeasedTurn"]

MAX_GRANT = 8
"""The most starts one grant books: enough to batch round trips, few enough to share fairly."""

MAX_LEAD = 0.25
"""The most a grant's starts are booked ahead of its request, to cover the round trip."""

FIRST_SLACK = 1
"""Intervals the book leaves free after a worker's first start, which comes late: its client and
connection open then."""

Grant = Callable[[Hashable, Sequence[int], float, int], Awaitable[Sequence[float]]]
"""``(key, costs, lead, slack) -> start times``: books one start per cost, none sooner than ``lead``
seconds from now and ``slack`` intervals free after the first, and says when each is, on the shared
timeline (`LeasedLimiter`'s ``shared_now``)."""


class _Line:
    """One key's waiting calls and the grant being fetched for them."""

    __slots__ = ("fetching", "paused_until", "turns")

    def __init__(self) -> None:
        self.turns: deque[LeasedTurn] = deque()
        self.fetching: asyncio.Future[None] | None = None
        self.paused_until = float("-inf")


class LeasedLimiter:
    """A rate limiter whose starts are granted by a shared book.

    Granted starts are times on a timeline every worker reads, the wall
    clock (``shared_now``): a start then means the same moment in every
    process, however long its grant took to arrive. Each grant asks for its
    starts to be booked at least one round trip ahead (measured, at most
    `MAX_LEAD`), so they arrive in time to be made.

    Args:
        grant: books starts (a call to the policy actor).
        pause: tells the book to start nothing for a key for some seconds
            (a ``Retry-After``); it returns at once.
        clock: this process's clock, which calls sleep on.
        shared_now: the shared timeline's time now (the wall clock).
    """

    def __init__(
        self,
        grant: Grant,
        pause: Callable[[Hashable, float], None],
        clock: Clock,
        shared_now: Callable[[], float],
    ) -> None:
        self._grant = grant
        self._pause = pause
        self.clock = clock
        self._shared_now = shared_now
        self._lines: dict[Hashable, _Line] = {}
        self.round_trip = 0.0
        self._granted = False
        self._measured = False

    def start_now(self, cost: int = 1, *, key: Hashable = None) -> bool:
        """Never: every start is granted, so a call always takes its turn."""
        return False

    def turn(self, cost: int = 1, *, key: Hashable = None) -> LeasedTurn:
        """A place in ``key``'s line for a call of ``cost``.

        Raises:
            ValueError: if ``cost`` is negative.
        """
        if cost < 0:
            raise ValueError(f"a call's cost cannot be negative, got {cost}")
        return LeasedTurn(self, key, cost)

    def pause(self, seconds: float, *, key: Hashable = None) -> None:
        """Start nothing for ``key`` during the next ``seconds``, here and in every other worker."""
        if seconds <= 0:
            return
        line = self._line(key)
        line.paused_until = max(line.paused_until, self.clock.now() + seconds)
        for turn in line.turns:
            turn.drop_before(line.paused_until)
        self._pause(key, seconds)

    def _line(self, key: Hashable) -> _Line:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        return line

    async def _fetch(self, key: Hashable, line: _Line) -> None:
        """Wait for a grant covering the calls of ``line`` that have no start yet."""
        if line.fetching is not None:
            await asyncio.shield(line.fetching)
            return
        wanting = [t for t in line.turns if t.start is None][:MAX_GRANT]
        if not wanting:
            return
        done = line.fetching = asyncio.get_running_loop().create_future()
        try:
            sent = self.clock.now()
            slack = 0 if self._granted else FIRST_SLACK
            self._granted = True
            starts = await self._grant(key, [t.cost for t in wanting], min(MAX_LEAD, self.round_trip), slack)
            received = self.clock.now()
            # A moving estimate of the round trip: one slow answer does not double every lead. The
            # first is left out: it includes the actor's cold start.
            if self._measured:
                rtt = received - sent
                self.round_trip = 0.8 * self.round_trip + 0.2 * rtt if self.round_trip else rtt
            self._measured = True
            offset = received - self._shared_now()
            for turn, start in zip(wanting, starts, strict=True):
                # Starts inside a local pause were booked before the pause reached the book.
                at = start + offset
                if not turn.done and at >= line.paused_until:
                    turn.start = at
        finally:
            line.fetching = None
            done.set_result(None)

    def _forget(self, key: Hashable, line: _Line) -> None:
        """Drop an idle line, so memory follows the keys in use."""
        if (
            not line.turns
            and line.fetching is None
            and line.paused_until <= self.clock.now()
            and self._lines.get(key) is line
        ):
            del self._lines[key]


class LeasedTurn:
    """A call's place in a `LeasedLimiter` line; use as ``async with limiter.turn(...) as turn``."""

    def __init__(self, limiter: LeasedLimiter, key: Hashable, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self.cost = cost
        self.start: float | None = None
        self.done = False
        self._line: _Line | None = None

    async def __aenter__(self) -> LeasedTurn:
        self._line = self._limiter._line(self._key)
        self._line.turns.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    def drop_before(self, moment: float) -> None:
        """Give up a granted start earlier than ``moment``."""
        if self.start is not None and self.start < moment:
            self.start = None

    async def ready(self, deadline: float | None = None) -> Result[float, ErrInfo]:
        """Wait for a granted start and until its time.

        Returns:
            ``Ok(seconds waited)``, or ``Err(TIMEOUT)`` once the granted start
            is at or past ``deadline``.
        """
        line = self._require_line()
        clock = self._limiter.clock
        began = clock.now()
        while True:
            if self.start is None or clock.now() > self.start + TOLERANCE:
                self.start = None
                await self._limiter._fetch(self._key, line)
                continue
            if deadline is not None and self.start >= deadline:
                self.start = None
                return Err(_too_late(deadline))
            await sleep_until(clock, self.start)
            if self.start is not None and self.may_start():
                return Ok(clock.now() - began)

    def may_start(self) -> bool:
        """Whether the granted start is now (not early, and not later than `TOLERANCE`)."""
        if self.start is None or self.done:
            return False
        now = self._limiter.clock.now()
        return self.start <= now <= self.start + TOLERANCE

    def commit(self) -> None:
        """Use the granted start now and leave the line.

        Raises:
            RuntimeError: if the call may not start now (see `may_start`).
        """
        if not self.may_start():
            raise RuntimeError("LeasedTurn.commit() called before the turn was ready")
        self._leave()

    def _require_line(self) -> _Line:
        if self._line is None:
            raise RuntimeError("use the turn as `async with limiter.turn(...) as turn:`")
        return self._line

    def _leave(self) -> None:
        if self.done or self._line is None:
            return
        self.done = True
        self._line.turns.remove(self)
        self._limiter._forget(self._key, self._line)


def _too_late(deadline: float) -> ErrInfo:
    return ErrInfo(
        ErrCode.TIMEOUT,
        f"the deadline ({deadline:.3f}) passes before the shared rate limiter's granted start",
        {"deadline": deadline, "waiting_for": "rate_limit"},
    )
