"""Fakes and helpers shared by the policy tests: instrumented services on virtual time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from funcpipe.core import AsyncPlan, Err, ErrInfo, Ok, Result
from funcpipe.policy import Clock
from funcpipe.testing import VirtualClock


@dataclass
class Service:
    """A fake external service that answers from a script and records every call.

    ``script`` gives, call by call, the error code to fail with (``None`` for
    success); once it is exhausted every call succeeds. ``latency`` is how
    long each call takes on the clock.
    """

    script: Sequence[str | None] = ()
    latency: float = 0.0
    retry_after: float | None = None
    clock: Clock = field(default_factory=VirtualClock)
    starts: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0

    @property
    def calls(self) -> int:
        """How many calls were made."""
        return len(self.starts)

    def plan(self, value: object = "ok") -> AsyncPlan[object]:
        """A plan calling the service once per attempt."""

        async def run() -> Result[object, ErrInfo]:
            n = len(self.starts)
            self.starts.append(self.clock.now())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.latency:
                    await self.clock.sleep(self.latency)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1
            code = self.script[n] if n < len(self.script) else None
            if code is None:
                return Ok(value)
            meta = {} if self.retry_after is None else {"retry_after": self.retry_after}
            return Err(ErrInfo(code, f"scripted {code}", meta))

        return run


def gaps(times: Sequence[float]) -> list[float]:
    """The differences between consecutive times."""
    return [b - a for a, b in pairwise(times)]


def max_window_cost(starts: Sequence[tuple[float, int]], per: float) -> int:
    """The most cost started in any half-open window ``[t, t + per)``.

    The maximum is reached by a window opening at some start, so only those
    windows are checked.
    """
    worst = 0
    for t, _ in starts:
        worst = max(worst, sum(c for s, c in starts if t <= s < t + per))
    return worst


class LateClock:
    """Virtual time whose every sleep wakes up late by a random, seeded amount, as a busy event loop does."""

    def __init__(self, most: float, seed: int = 0) -> None:
        self.most = most
        self.rng = random.Random(seed)
        self.clock = VirtualClock()

    def now(self) -> float:
        return self.clock.now()

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(max(0.0, seconds) + self.rng.uniform(0.0, self.most))
