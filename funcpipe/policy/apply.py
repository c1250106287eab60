"""`apply_policy`: the call-level policy interpreter.

Order for one call (DESIGN.md)::

    total deadline
      └ retry loop ─ per attempt: rate limit → breaker → concurrency slot → attempt timeout → call

In detail, one attempt:

1. If the breaker is open, its reset is awaited when the deadline allows it;
   otherwise the attempt fails fast with ``CIRCUIT_OPEN``.
2. It waits for its turn at the rate limiter (FIFO per key), holding no slot.
3. It takes a concurrency slot.
4. Holding the slot, the breaker admits it and the limiter records its start,
   both at once and without awaiting, so the limiter meters the moments
   calls really start.
5. The call runs under the attempt timeout, itself cut short by the deadline.

Between attempts the retry loop backs off holding nothing. A wait that would
end at or past the deadline is never started: the last error is returned.
Every error returned carries ``meta.attempts``, the number of attempts made.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, user_error
from funcpipe.policy.breaker import Breaker, BreakerState, Ticket
from funcpipe.policy.clock import REAL_CLOCK, Clock, sleep_until
from funcpipe.policy.events import Event, EventKind, EventSink, null_sink
from funcpipe.policy.limiter import RateLimiter, Turn
from funcpipe.policy.models import Policy, format_duration
from funcpipe.policy.retry import backoff_delays, retry_after, should_retry, wait_before_retry

__all__ = ["PolicyRuntime", "apply_policy"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Late:
    """The attempt could not start before the deadline: nothing was called."""

    error: ErrInfo


class PolicyRuntime:
    """Per-run state for one policy (RNG, limiter buckets, breaker, slots); applies it to plans.

    One runtime serves every call of a stage in a run: calls share its
    limiter, breaker and concurrency slots, while each call keeps its own
    attempt count and backoff schedule. The policy value itself is never
    changed, so any number of runtimes may share it.

    Args:
        policy: the policy to apply.
        clock: the clock to read and sleep on (it must agree with the event
            loop's time, which timeouts use).
        events: where to report events.
        stage: the stage id carried by events.
        seed: seeds the jitter RNG, for reproducible schedules.
    """

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
        self.limiter = RateLimiter(policy.rate_limit, clock) if policy.rate_limit else None
        self.breaker = Breaker(policy.circuit_breaker, clock, self._breaker_moved) if policy.circuit_breaker else None
        self.slots = asyncio.Semaphore(policy.concurrency) if policy.concurrency else None

    def __repr__(self) -> str:
        return f"PolicyRuntime(stage={self.stage!r}, policy={self.policy!r})"

    def apply(
        self,
        plan: AsyncPlan[T],
        *,
        item_id: str | None = None,
        cost: int = 1,
        key: Hashable = None,
    ) -> AsyncPlan[T]:
        """Wrap ``plan`` with the call-level parts of the policy.

        Args:
            plan: the call; invoked afresh for every attempt.
            item_id: the item concerned, carried by events.
            cost: what one call costs the rate limiter (1, items or tokens).
            key: the rate limiter bucket (the value of ``rate_limit.key``).

        Returns:
            A plan that never raises for a failed or timed-out call: it
            returns ``Err`` with ``meta.attempts``. Cancellation propagates.
        """
        if cost < 0:
            raise ValueError(f"a call's cost cannot be negative, got {cost}")

        async def run() -> Result[T, ErrInfo]:
            return await self._run(plan, item_id, cost, key)

        return run

    async def _run(self, plan: AsyncPlan[T], item_id: str | None, cost: int, key: Hashable) -> Result[T, ErrInfo]:
        policy, clock = self.policy, self.clock
        retry = policy.retry
        total = policy.timeout.total if policy.timeout else None
        deadline = None if total is None else clock.now() + total
        schedule = backoff_delays(retry.backoff, retry.jitter, self.rng) if retry else None
        last: ErrInfo | None = None
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(plan, attempt, deadline, item_id, cost, key)
            if isinstance(outcome, Ok):
                return outcome
            if isinstance(outcome, _Late):
                return Err(last if last is not None else outcome.error.with_meta(attempts=0))
            error = outcome.error.with_meta(attempts=attempt)
            self._share_back_off(error, attempt, item_id, key)
            if retry is None or schedule is None or not should_retry(retry, error, attempt):
                return Err(error)
            wait = wait_before_retry(retry, next(schedule), error)
            now = clock.now()
            if deadline is not None and now + wait >= deadline:
                return Err(error)
            self._emit("wait", item_id, attempt, wait, data={"reason": "backoff", "code": error.code})
            await sleep_until(clock, now + wait)
            last = error

    async def _attempt(
        self,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        cost: int,
        key: Hashable,
    ) -> Result[T, ErrInfo] | _Late:
        while True:
            refused = await self._await_breaker(attempt, deadline, item_id)
            if refused is not None:
                return self._refuse(refused, attempt, item_id)
            turn: AbstractAsyncContextManager[Turn | None] = (
                self.limiter.turn(cost, key=key) if self.limiter is not None else contextlib.nullcontext()
            )
            async with turn as place:
                if place is not None:
                    late = await self._await_turn(place, attempt, deadline, item_id, cost, key)
                    if late is not None:
                        return late
                if not await self._take_slot(deadline):
                    return _Late(_too_late(deadline, "a concurrency slot frees up", "concurrency"))
                try:
                    # A shared back-off may have paused the limiter while we waited for the slot.
                    while place is not None and not place.may_start():
                        late = await self._await_turn(place, attempt, deadline, item_id, cost, key)
                        if late is not None:
                            return late
                    if deadline is not None and self.clock.now() >= deadline:
                        return _Late(_too_late(deadline, "the call could start", "start"))
                    admission = self.breaker.admit(item_id) if self.breaker is not None else None
                    if isinstance(admission, ErrInfo):
                        if self._reset_reachable(deadline):
                            continue
                        return self._refuse(admission, attempt, item_id)
                    if place is not None:
                        place.commit()
                    return await self._call(plan, attempt, deadline, item_id, admission)
                finally:
                    if self.slots is not None:
                        self.slots.release()

    async def _await_breaker(self, attempt: int, deadline: float | None, item_id: str | None) -> ErrInfo | None:
        """Wait out an open breaker when the deadline allows; else the error to fail fast with."""
        if self.breaker is None:
            return None
        refusal = self.breaker.refusal()
        if refusal is None:
            return None
        reset = self.breaker.reset_at()
        if reset is None or not self._reset_reachable(deadline):
            return refusal
        self._emit("wait", item_id, attempt, reset - self.clock.now(), data={"reason": "circuit_open"})
        await sleep_until(self.clock, reset)
        return None

    def _reset_reachable(self, deadline: float | None) -> bool:
        reset = self.breaker.reset_at() if self.breaker is not None else None
        return reset is not None and deadline is not None and reset < deadline

    async def _await_turn(
        self,
        place: Turn,
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        cost: int,
        key: Hashable,
    ) -> _Late | None:
        waited = await place.ready(deadline)
        if isinstance(waited, Err):
            return _Late(waited.error)
        if waited.value > 0:
            self._emit("limited", item_id, attempt, waited.value, data={"key": key, "cost": cost})
        return None

    async def _take_slot(self, deadline: float | None) -> bool:
        if self.slots is None:
            return True
        if deadline is None or not self.slots.locked():
            await self.slots.acquire()  # a free slot is taken without suspending
            return True
        try:
            async with asyncio.timeout(deadline - self.clock.now()):
                await self.slots.acquire()
        except TimeoutError:
            return False
        return True

    async def _call(
        self,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        ticket: Ticket | None,
    ) -> Result[T, ErrInfo]:
        clock = self.clock
        started = clock.now()
        timeout = self.policy.timeout
        limit = timeout.attempt if timeout is not None else None
        bound = "attempt"
        if deadline is not None and (limit is None or deadline - started < limit):
            limit, bound = deadline - started, "total"
        self._emit("attempt", item_id, attempt)
        scope = asyncio.timeout(limit)
        res: Result[T, ErrInfo]
        try:
            async with scope:
                res = await plan()
        except TimeoutError as exc:
            expired = scope.expired()
            res = Err(_timed_out(attempt, bound, limit, self.policy) if expired else user_error(exc))
        except Exception as exc:  # a plan should return Err; keep the policy's accounting whole
            res = Err(user_error(exc))
        except BaseException:
            # Cancelled (or interrupted): not an outcome the breaker should count.
            if ticket is not None and self.breaker is not None:
                self.breaker.release(ticket)
            raise
        took = clock.now() - started
        if isinstance(res, Ok):
            if ticket is not None and self.breaker is not None:
                self.breaker.record(ticket, None, item_id)
            self._emit("success", item_id, attempt, took)
        else:
            if ticket is not None and self.breaker is not None:
                self.breaker.record(ticket, res.error.code, item_id)
            self._emit("failure", item_id, attempt, took, code=res.error.code)
        return res

    def _refuse(self, error: ErrInfo, attempt: int, item_id: str | None) -> Err[ErrInfo]:
        self._emit("failure", item_id, attempt, code=error.code, data={"gate": "breaker"})
        return Err(error)

    def _share_back_off(self, error: ErrInfo, attempt: int, item_id: str | None, key: Hashable) -> None:
        """A throttled call pauses its limiter key for everyone, for the hinted time."""
        if self.limiter is None or error.code != ErrCode.RATE_LIMIT:
            return
        hint = retry_after(error)
        if hint is None or hint <= 0:
            return
        self.limiter.pause(hint, key=key)
        self._emit("limited", item_id, attempt, hint, data={"key": key, "reason": "retry_after"})

    def _breaker_moved(self, old: BreakerState, new: BreakerState, item_id: str | None) -> None:
        self._emit("breaker", item_id, code=new, data={"from": old})

    def _emit(
        self,
        kind: EventKind,
        item_id: str | None,
        attempt: int = 0,
        duration: float = 0.0,
        *,
        code: str | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        self.events(
            Event(
                kind,
                self.stage,
                item_id,
                attempt,
                duration,
                code,
                at=self.clock.now(),
                data=data if data is not None else {},
            )
        )


def _too_late(deadline: float | None, what: str, waiting_for: str) -> ErrInfo:
    return ErrInfo(
        ErrCode.TIMEOUT,
        f"the deadline passes before {what}",
        {"deadline": deadline, "waiting_for": waiting_for},
    )


def _timed_out(attempt: int, bound: str, limit: float | None, policy: Policy) -> ErrInfo:
    if bound == "total" and policy.timeout is not None and policy.timeout.total is not None:
        what = f"the total deadline of {format_duration(policy.timeout.total)}"
    else:
        what = f"the attempt timeout of {format_duration(limit or 0.0)}"
    return ErrInfo(ErrCode.TIMEOUT, f"attempt {attempt} timed out: {what} passed", {"timeout": bound})


def apply_policy(
    policy: Policy,
    plan_factory: AsyncPlan[T],
    *,
    clock: Clock = REAL_CLOCK,
    events: EventSink = null_sink,
    stage: str = "",
    seed: int | None = None,
    item_id: str | None = None,
    cost: int = 1,
    key: Hashable = None,
) -> AsyncPlan[T]:
    """Apply ``policy``'s call-level parts to ``plan_factory`` with a fresh runtime.

    The runtime (limiter, breaker, RNG) belongs to the returned plan alone;
    to share them between calls, make one `PolicyRuntime` and use its `apply`.
    """
    runtime = PolicyRuntime(policy, clock=clock, events=events, stage=stage, seed=seed)
    return runtime.apply(plan_factory, item_id=item_id, cost=cost, key=key)
