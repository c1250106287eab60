"""The state a scale-out run shares, as plain classes that the executor makes into Ray actors.

- `PolicyBoard`: one book of starts per shared rate limit (per adapter and
  limit, then per key) and one circuit breaker per adapter. Every worker's
  limiter asks it for grants; every worker's breaker tells it outcomes and
  hears whether the adapter's breaker is open.
- `ProgressBoard`: what each shard attempt has settled, and its counters.
  Workers report to it every moment; the driver reads it for its display,
  and a retried shard reads it to skip what an attempt that died finished.

Both are plain objects, tested without Ray; each method is short and
synchronous, so an actor serves them one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence

from funcpipe.policy.breaker import Breaker, Ticket
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.models import CircuitBreaker, RateLimit
from funcpipe.run.scaleout._schedule import GUARD, Book

__all__ = ["PolicyBoard", "ProgressBoard", "StageCounters"]

StageCounters = dict[str, int]
"""A stage's counters as sent between processes: inputs, outputs, failed, filtered, retries, calls, waits, limited."""


class PolicyBoard:
    """Shared rate limits and breakers.

    Rate limits are booked on the wall clock, the one timeline every worker
    reads (on one host it is the same clock; across hosts, clocks kept in
    step by NTP differ by far less than the guard). Breakers run on this
    process's monotonic clock and answer in durations.

    Args:
        guard: seconds each shared window is widened by (see `Book`).
        clock: the breakers' clock.
        wall: the shared timeline's time now (the wall clock).
    """

    def __init__(self, guard: float = GUARD, clock: Clock = REAL_CLOCK, wall: Callable[[], float] = time.time) -> None:
        self.guard = guard
        self.clock = clock
        self.wall = wall
        self._books: dict[tuple[str, str], Book] = {}
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self.grants = 0

    def grant(
        self,
        scope: str,
        limit: RateLimit,
        key: Hashable,
        costs: Sequence[int],
        lead: float = 0.0,
        slack: int = 0,
    ) -> list[float]:
        """Book one start per cost for ``scope``'s ``limit`` and ``key``, none sooner than ``lead`` from now.

        ``slack`` intervals are left free after the first (see `Book.book`).

        Returns:
            The start times, on the wall clock every worker reads.
        """
        ident = (scope, limit.model_dump_json())
        book = self._books.get(ident)
        if book is None:
            book = self._books[ident] = Book(limit, self.guard)
        self.grants += 1
        return book.book(costs, self.wall() + max(0.0, lead), key=key, slack=slack)

    def pause(self, scope: str, limit: RateLimit, key: Hashable, seconds: float) -> None:
        """Book nothing for ``key`` during the next ``seconds``."""
        ident = (scope, limit.model_dump_json())
        book = self._books.get(ident)
        if book is None:
            book = self._books[ident] = Book(limit, self.guard)
        book.pause(self.wall() + seconds, key=key)

    def record(self, scope: str, config: CircuitBreaker, code: str | None, counted: bool = True) -> float:
        """Count one call's outcome (``code`` None on success) in ``scope``'s breaker; just answer if not ``counted``.

        Returns:
            Seconds the breaker stays open from now; 0 when it admits calls.
        """
        ident = (scope, config.model_dump_json())
        breaker = self._breakers.get(ident)
        if breaker is None:
            breaker = self._breakers[ident] = Breaker(config, self.clock)
        if counted:
            admitted = breaker.admit()
            if isinstance(admitted, Ticket):
                breaker.record(admitted, code)
        reset = breaker.reset_at()
        return 0.0 if reset is None else max(0.0, reset - self.clock.now())


class ProgressBoard:
    """What every shard attempt settled and counted."""

    def __init__(self) -> None:
        self._attempts: dict[int, int] = {}
        self._outcomes: dict[int, dict[str, str]] = {}
        self._counters: dict[tuple[int, int], dict[str, StageCounters]] = {}
        self._notices: list[str] = []

    def begin(self, shard: int) -> tuple[int, list[str]]:
        """A new attempt at ``shard`` starts: its number, and the source ids earlier attempts finished.

        Finished means done or filtered: a failed item is tried again, so its
        dead letter comes from the attempt that reports.
        """
        attempt = self._attempts[shard] = self._attempts.get(shard, 0) + 1
        finished = [sid for sid, outcome in self._outcomes.get(shard, {}).items() if outcome != "failed"]
        return attempt, finished

    def report(
        self,
        shard: int,
        attempt: int,
        settled: Sequence[tuple[str, str]],
        counters: Mapping[str, StageCounters],
        notices: Sequence[str] = (),
    ) -> None:
        """An attempt's news: source items it settled since its last report, its counters now, its status lines."""
        self._outcomes.setdefault(shard, {}).update(settled)
        self._counters[(shard, attempt)] = dict(counters)
        self._notices.extend(f"shard {shard}: {line}" for line in notices)

    def notices(self, since: int) -> list[str]:
        """The workers' status lines from the ``since``-th on."""
        return self._notices[since:]

    def counters(self) -> dict[str, StageCounters]:
        """Every stage's counters, summed over every attempt of every shard (work a dead attempt did too)."""
        total: dict[str, StageCounters] = {}
        for per_stage in self._counters.values():
            for stage, counts in per_stage.items():
                into = total.setdefault(stage, {})
                for name, value in counts.items():
                    into[name] = into.get(name, 0) + value
        return total

    def outcomes(self) -> dict[str, str]:
        """The last reported outcome of every settled source id."""
        merged: dict[str, str] = {}
        for per_shard in self._outcomes.values():
            merged.update(per_shard)
        return merged

    def attempts(self) -> dict[int, int]:
        """How many attempts each shard took."""
        return dict(self._attempts)

    def settled(self) -> int:
        """How many source items are settled so far."""
        return sum(len(per_shard) for per_shard in self._outcomes.values())
