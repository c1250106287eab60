"""`apply_policy`: the call-level policy interpreter.

Order for one call (DESIGN.md)::

    total deadline
      └ retry loop ─ per attempt: rate limit → breaker → concurrency slot → budget → attempt timeout → call

In detail, one attempt:

1. If the breaker is open, its reset is awaited when the deadline allows it;
   otherwise the attempt fails fast with ``CIRCUIT_OPEN``.
2. It waits for its turn at the rate limiter (FIFO per key), holding no slot.
3. It takes a concurrency slot.
4. Holding the slot, the breaker admits it and the limiter records its start,
   both at once and without awaiting, so the limiter meters the moments
   calls really start.
5. With a `funcpipe.policy.budget.Meter` (the runner gives every stage one,
   and a policy with a ``budget`` makes its own), the call's estimate is
   held against its budgets; a call that would cross one is never started
   and returns ``BUDGET_EXHAUSTED``.
6. The call runs under the attempt timeout, itself cut short by the deadline.
   A metered call's usage (what the adapter reported with
   `funcpipe.core.report_usage`, else the estimate) is settled when it
   ends, cancelled or not, and reported as a ``usage`` event.

Between attempts the retry loop backs off holding nothing. A wait that would
end at or past the deadline is never started: the last error is returned.
Every error returned carries ``meta.attempts``, the number of attempts made.

Events. A call reports its attempts' events, then ``call_end`` (with the
items it carried and its whole duration); every one of them carries the
call's number (`Event.call`), so a listener can tell concurrent calls apart
(a trace's spans). The number is held in a context variable for the
duration of the call rather than passed down every helper. There is no
event for a call's start: its first event marks it, and one event fewer per
call is a third of what reporting a call costs.

Cost. Every call of a stage runs through here, so the usual case is kept
cheap: when a slot is free and the limiter and breaker let the call start at
once, steps 2 to 4 are plain synchronous checks, no `Turn` is made, no
timeout is armed without a limit, and no event is built for the `null_sink`.
A policy with neither retry, deadline, limiter nor breaker skips the retry
loop altogether.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
from collections.abc import Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, metering, user_error
from funcpipe.policy.breaker import Breaker, BreakerState, Ticket
from funcpipe.policy.budget import Meter, Spend
from funcpipe.policy.clock import REAL_CLOCK, Clock, sleep_until
from funcpipe.policy.events import Event, EventKind, EventSink, null_sink
from funcpipe.policy.limiter import RateLimiter
from funcpipe.policy.models import Policy, format_duration
from funcpipe.policy.retry import backoff_delays, retry_after, should_retry, wait_before_retry
from funcpipe.policy.shared import BreakerGate, LimiterGate, LimiterTurn, SharedPolicy
from funcpipe.policy.slots import Slots

__all__ = ["PolicyRuntime", "apply_policy"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Late:
    """The attempt could not start before the deadline: nothing was called."""

    error: ErrInfo


_UNGUARDED = Ticket(-1, probe=False)
"""The admission of a call when the policy has no breaker."""

_CALL_NUMBERS = itertools.count(1)
"""Numbers calls, process-wide, so that a run's calls never share one across stages."""


@dataclass(slots=True)
class _CallState:
    """The call being made in a task: its number, which its events carry, and the attempts started."""

    number: int
    attempts: int = 0


_NO_CALL = _CallState(0)
_CALL: ContextVar[_CallState] = ContextVar("funcpipe_policy_call", default=_NO_CALL)
"""The call being made in this task; `_NO_CALL` outside one."""


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
        meter: counts, prices and budgets every attempt (`funcpipe.policy.budget`);
            by default one holding the policy's own ``budget``, if it has one.
        shared: where to get a limiter and breaker shared with other runtimes
            (other processes, through the scale-out executor); default: local ones.
        scope: what the shared ones are shared per: the adapter the stage calls.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Clock = REAL_CLOCK,
        events: EventSink = null_sink,
        stage: str = "",
        seed: int | None = None,
        meter: Meter | None = None,
        shared: SharedPolicy | None = None,
        scope: str = "",
    ) -> None:
        self.policy = policy
        if meter is None and policy.budget is not None:
            meter = Meter(scopes=(Spend(policy.budget, f"stage {stage}" if stage else "call"),))
        self.meter = meter
        self.clock = clock
        self.events = events
        self.stage = stage
        self.rng = random.Random(seed)
        self.limiter: LimiterGate | None = None
        self.breaker: BreakerGate | None = None
        scope = scope or stage
        if policy.rate_limit is not None:
            shared_limiter = shared.limiter(scope, policy.rate_limit, clock) if shared is not None else None
            self.limiter = shared_limiter or RateLimiter(policy.rate_limit, clock)
        if policy.circuit_breaker is not None:
            cb = policy.circuit_breaker
            shared_breaker = shared.breaker(scope, cb, clock, self._breaker_moved) if shared is not None else None
            self.breaker = shared_breaker or Breaker(cb, clock, self._breaker_moved)
        self.slots = Slots(policy.concurrency) if policy.concurrency else None
        timeout = policy.timeout
        self._attempt_limit = timeout.attempt if timeout is not None else None
        self._total = timeout.total if timeout is not None else None
        retries = policy.retry is not None and policy.retry.max_attempts > 1
        # One attempt, no deadline, nothing to wait for but a slot: no retry loop needed.
        self._single = not retries and self._total is None and self.limiter is None and self.breaker is None

    @property
    def events(self) -> EventSink:
        """Where events are reported."""
        return self._events

    @events.setter
    def events(self, sink: EventSink) -> None:
        self._events = sink
        self._emitting = sink is not null_sink  # building events nobody reads is most of a call's cost

    def __repr__(self) -> str:
        return f"PolicyRuntime(stage={self.stage!r}, policy={self.policy!r})"

    def apply(
        self,
        plan: AsyncPlan[T],
        *,
        item_id: str | None = None,
        cost: int = 1,
        key: Hashable = None,
        chars: int | None = None,
        items: int = 1,
    ) -> AsyncPlan[T]:
        """Wrap ``plan`` with the call-level parts of the policy.

        Args:
            plan: the call; invoked afresh for every attempt.
            item_id: the item concerned, carried by events.
            cost: what one call costs the rate limiter (1, items or tokens).
            key: the rate limiter bucket (the value of ``rate_limit.key``).
            chars: the characters of text the call sends, from which the meter
                estimates its tokens; None for a call that sends no text to count.
            items: how many items the call carries (a batch's size), carried by ``call_end``.

        Returns:
            A plan that never raises for a failed or timed-out call: it
            returns ``Err`` with ``meta.attempts``. Cancellation propagates.
        """
        if cost < 0:
            raise ValueError(f"a call's cost cannot be negative, got {cost}")
        if self._emitting:
            return functools.partial(self._run_reported, plan, item_id, cost, key, chars, items)
        if self._single:
            return functools.partial(self._run_once, plan, item_id, chars)
        return functools.partial(self._run, plan, item_id, cost, key, chars)

    async def _run_reported(
        self, plan: AsyncPlan[T], item_id: str | None, cost: int, key: Hashable, chars: int | None, items: int
    ) -> Result[T, ErrInfo]:
        """`_run` (or `_run_once`), then a ``call_end`` event; the call's events all numbered alike."""
        state = _CallState(next(_CALL_NUMBERS))
        token = _CALL.set(state)
        try:
            started = self.clock.now()
            if self._single:
                res = await self._run_once(plan, item_id, chars)
            else:
                res = await self._run(plan, item_id, cost, key, chars)
            code = None if isinstance(res, Ok) else res.error.code
            ended = self.clock.now()
            self._emit("call_end", item_id, state.attempts, ended - started, code=code, data={"items": items}, at=ended)
            return res
        finally:
            _CALL.reset(token)

    async def _run_once(self, plan: AsyncPlan[T], item_id: str | None, chars: int | None) -> Result[T, ErrInfo]:
        """`_run` for a policy with one attempt and no deadline, limiter or breaker."""
        slots = self.slots
        if slots is not None and not slots.try_acquire():
            await slots.acquire()
        try:
            if self._emitting or self._attempt_limit is not None or self.meter is not None:
                res = await self._call(plan, 1, None, item_id, _UNGUARDED, chars)
            else:  # `_call` with nothing to time or report
                try:
                    res = await plan()
                except Exception as exc:
                    res = Err(user_error(exc))
        finally:
            if slots is not None:
                slots.release()
        if isinstance(res, Ok):
            return res
        return Err(res.error.with_meta(attempts=1))

    async def _run(
        self, plan: AsyncPlan[T], item_id: str | None, cost: int, key: Hashable, chars: int | None
    ) -> Result[T, ErrInfo]:
        clock = self.clock
        retry = self.policy.retry
        total = self._total
        deadline = None if total is None else clock.now() + total
        schedule: Iterator[float] | None = None
        last: ErrInfo | None = None
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(plan, attempt, deadline, item_id, cost, key, chars)
            if isinstance(outcome, Ok):
                return outcome
            if isinstance(outcome, _Late):
                return Err(last if last is not None else outcome.error.with_meta(attempts=0))
            error = outcome.error.with_meta(attempts=attempt)
            if self.limiter is not None:
                self._share_back_off(error, attempt, item_id, key)
            if retry is None or not should_retry(retry, error, attempt):
                return Err(error)
            if schedule is None:  # made at the first retry: the schedule draws nothing until then
                schedule = backoff_delays(retry.backoff, retry.jitter, self.rng)
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
        chars: int | None,
    ) -> Result[T, ErrInfo] | _Late:
        breaker, limiter, slots = self.breaker, self.limiter, self.slots
        while True:
            if breaker is not None and breaker.refusal() is not None:
                refused = await self._await_breaker(attempt, deadline, item_id)
                if refused is not None:
                    return self._refuse(refused, attempt, item_id)
            if slots is None or slots.try_acquire():
                # Every gate may be open right now: steps 2 to 4 without suspending.
                try:
                    admitted = self._admit(attempt, deadline, item_id)
                    if not isinstance(admitted, Ticket):
                        if admitted is None:
                            continue
                        return admitted
                    if limiter is None or limiter.start_now(cost, key=key):
                        return await self._call(plan, attempt, deadline, item_id, admitted, chars)
                    if breaker is not None:
                        breaker.release(admitted)  # the limiter is closed: wait in its line below
                finally:
                    if slots is not None:
                        slots.release()
            outcome = await self._attempt_waiting(plan, attempt, deadline, item_id, cost, key, chars)
            if outcome is not None:
                return outcome

    async def _attempt_waiting(
        self,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        cost: int,
        key: Hashable,
        chars: int | None,
    ) -> Result[T, ErrInfo] | _Late | None:
        """An attempt that waits: its turn at the limiter holding no slot, then a slot.

        Returns ``None`` when the breaker opened meanwhile and its reset comes
        before the deadline: the attempt should go round again.
        """
        turn: AbstractAsyncContextManager[LimiterTurn | None] = (
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
                admitted = self._admit(attempt, deadline, item_id)
                if not isinstance(admitted, Ticket):
                    return admitted
                if place is not None:
                    place.commit()
                return await self._call(plan, attempt, deadline, item_id, admitted, chars)
            finally:
                if self.slots is not None:
                    self.slots.release()

    def _admit(self, attempt: int, deadline: float | None, item_id: str | None) -> Ticket | _Late | Err[ErrInfo] | None:
        """Let the call start now, holding its slot: the breaker's ticket, or why not.

        ``None`` means the breaker refused it but resets before the deadline.
        """
        if deadline is not None and self.clock.now() >= deadline:
            return _Late(_too_late(deadline, "the call could start", "start"))
        breaker = self.breaker
        if breaker is None:
            return _UNGUARDED
        admission = breaker.admit(item_id)
        if isinstance(admission, Ticket):
            return admission
        if self._reset_reachable(deadline):
            return None
        return self._refuse(admission, attempt, item_id)

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
        place: LimiterTurn,
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
        slots = self.slots
        if slots is None or slots.try_acquire():
            return True
        if deadline is None:
            await slots.acquire()
            return True
        try:
            async with asyncio.timeout(deadline - self.clock.now()):
                await slots.acquire()
        except TimeoutError:
            return False
        return True

    async def _call(
        self,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        ticket: Ticket,
        chars: int | None = None,
    ) -> Result[T, ErrInfo]:
        if self.meter is not None:
            return await self._metered_call(self.meter, plan, attempt, deadline, item_id, ticket, chars)
        return await self._timed_call(plan, attempt, deadline, item_id, ticket)

    async def _metered_call(
        self,
        meter: Meter,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        ticket: Ticket,
        chars: int | None,
    ) -> Result[T, ErrInfo]:
        """`_timed_call` held against the budgets, its usage counted and reported as a ``usage`` event."""
        hold = meter.admit(chars)
        if isinstance(hold, ErrInfo):
            # Never started: neither an outcome for the breaker nor a request spent.
            if self.breaker is not None:
                self.breaker.release(ticket)
            self._emit(
                "budget", item_id, attempt, code=hold.code, data={"budget": hold.meta["budget"], "reason": hold.msg}
            )
            return Err(hold)
        ok = False
        with metering() as reported:
            try:
                res = await self._timed_call(plan, attempt, deadline, item_id, ticket)
                ok = isinstance(res, Ok)
            finally:
                # Counted even when cancelled: the request may have reached the provider.
                settled = meter.settle(hold, reported, ok)
                self._emit("usage", item_id, attempt, data=settled.to_data())
        return res

    async def _timed_call(
        self,
        plan: AsyncPlan[T],
        attempt: int,
        deadline: float | None,
        item_id: str | None,
        ticket: Ticket,
    ) -> Result[T, ErrInfo]:
        emitting = self._emitting
        limit = self._attempt_limit
        bound = "attempt"
        started = 0.0
        if deadline is not None or emitting:
            started = self.clock.now()
            if deadline is not None and (limit is None or deadline - started < limit):
                limit, bound = deadline - started, "total"
            if emitting:
                state = _CALL.get()
                if state is not _NO_CALL:
                    state.attempts = attempt
                self._emit("attempt", item_id, attempt, at=started)
        res: Result[T, ErrInfo]
        try:
            if limit is None:
                res = await plan()
            else:
                scope = asyncio.timeout(limit)
                try:
                    async with scope:
                        res = await plan()
                except TimeoutError as exc:
                    res = Err(_timed_out(attempt, bound, limit, self.policy) if scope.expired() else user_error(exc))
        except Exception as exc:  # a plan should return Err; keep the policy's accounting whole
            res = Err(user_error(exc))
        except BaseException:
            # Cancelled (or interrupted): not an outcome the breaker should count.
            if self.breaker is not None:
                self.breaker.release(ticket)
            raise
        breaker = self.breaker
        if isinstance(res, Ok):
            if breaker is not None:
                breaker.record(ticket, None, item_id)
            if emitting:
                ended = self.clock.now()
                self._emit("success", item_id, attempt, ended - started, at=ended)
        else:
            if breaker is not None:
                breaker.record(ticket, res.error.code, item_id)
            if emitting:
                ended = self.clock.now()
                self._emit(
                    "failure", item_id, attempt, ended - started, code=res.error.code, data=_told(res.error), at=ended
                )
        return res

    def _refuse(self, error: ErrInfo, attempt: int, item_id: str | None) -> Err[ErrInfo]:
        self._emit("failure", item_id, attempt, code=error.code, data={"gate": "breaker", **_told(error)})
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
        at: float | None = None,
    ) -> None:
        if not self._emitting:
            return
        self._events(
            Event(
                kind,
                self.stage,
                item_id,
                attempt,
                duration,
                code,
                at=self.clock.now() if at is None else at,  # a time the caller read already saves a read
                data=data if data is not None else {},
                call=_CALL.get().number,
            )
        )


def _told(error: ErrInfo) -> dict[str, object]:
    """What a failure event says of its error: the message, and the HTTP status and Retry-After if known."""
    told: dict[str, object] = {"message": error.msg}
    status = error.meta.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        told["status"] = status
    hint = retry_after(error)
    if hint is not None:
        told["retry_after"] = hint
    return told


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
    chars: int | None = None,
) -> AsyncPlan[T]:
    """Apply ``policy``'s call-level parts to ``plan_factory`` with a fresh runtime.

    The runtime (limiter, breaker, RNG) belongs to the returned plan alone;
    to share them between calls, make one `PolicyRuntime` and use its `apply`.
    """
    runtime = PolicyRuntime(policy, clock=clock, events=events, stage=stage, seed=seed)
    return runtime.apply(plan_factory, item_id=item_id, cost=cost, key=key, chars=chars)
