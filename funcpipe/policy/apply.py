"""`apply_policy`: the call-level policy interpreter (first cut: retry + attempt timeout).

Order for one call (DESIGN.md):
    total deadline └ retry loop ─ per attempt: rate limit → breaker → concurrency slot → attempt timeout → call
"""

from __future__ import annotations

import asyncio
import random
from typing import TypeVar

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import Event, EventSink, null_sink
from funcpipe.policy.models import Policy

T = TypeVar("T")


class PolicyRuntime:
    """Per-run state for one policy (limiter buckets, breaker, RNG); applies it to plans."""

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Clock = REAL_CLOCK,
        events: EventSink = null_sink,
        stage: str = "",
        seed: int | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.events = events
        self.stage = stage
        self.rng = random.Random(seed)

    def apply(self, plan: AsyncPlan[T], *, item_id: str | None = None, cost: int = 1, key: str | None = None) -> AsyncPlan[T]:
        """Wrap ``plan`` with the call-level parts of the policy."""
        policy = self.policy
        retry = policy.retry
        attempt_timeout = policy.timeout.attempt if policy.timeout else None
        max_attempts = retry.max_attempts if retry else 1

        async def run() -> Result[T, ErrInfo]:
            attempt = 0
            while True:
                attempt += 1
                self.events(Event("attempt", self.stage, item_id, attempt, at=self.clock.now()))
                start = self.clock.now()
                try:
                    if attempt_timeout is not None:
                        async with asyncio.timeout(attempt_timeout):
                            res = await plan()
                    else:
                        res = await plan()
                except TimeoutError:
                    res = Err(ErrInfo(ErrCode.TIMEOUT, f"attempt timed out after {attempt_timeout}s"))
                took = self.clock.now() - start
                if isinstance(res, Ok):
                    self.events(Event("success", self.stage, item_id, attempt, took, at=self.clock.now()))
                    return res
                err = res.error
                self.events(Event("failure", self.stage, item_id, attempt, took, err.code, at=self.clock.now()))
                if retry is None or attempt >= max_attempts or err.code not in retry.on:
                    return Err(err.with_meta(attempts=attempt))
                b = retry.backoff
                wait = 0.0 if b.kind == "immediate" else min(b.max, b.initial * (b.factor ** (attempt - 1) if b.kind == "exponential" else 1))
                self.events(Event("wait", self.stage, item_id, attempt, wait, at=self.clock.now()))
                await self.clock.sleep(wait)

        return run


def apply_policy(policy: Policy, plan_factory: AsyncPlan[T], **runtime: object) -> AsyncPlan[T]:
    """Apply ``policy``'s call-level parts to ``plan_factory`` with a fresh runtime."""
    return PolicyRuntime(policy, **runtime).apply(plan_factory)  # type: ignore[arg-type]
