"""`apply_policy` and `PolicyRuntime`: the order of the call-level parts, events, and all parts together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy import (
    Backoff,
    CircuitBreaker,
    EventLog,
    Policy,
    PolicyRuntime,
    RateLimit,
    Retry,
    Timeout,
    apply_policy,
)
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import Service, max_window_cost

PROPERTIES = settings(max_examples=40, deadline=None, derandomize=True)

FIXED = Backoff(kind="fixed", initial=1.0, max=30.0)


def runtime(log: EventLog | None = None, **parts: object) -> PolicyRuntime:
    return PolicyRuntime(
        Policy.model_validate(parts), clock=VirtualClock(), events=log or EventLog(), stage="embed", seed=1
    )


def gather(
    rt: PolicyRuntime, plans: list[AsyncPlan[object]], *, key: str | None = None, cost: int = 1
) -> list[Result[object, ErrInfo]]:
    async def main() -> list[Result[object, ErrInfo]]:
        return list(await asyncio.gather(*(rt.apply(p, key=key, cost=cost)() for p in plans)))

    return run_virtual(main)


# --- events ---------------------------------------------------------------------------


def test_a_retried_call_reports_each_attempt_wait_and_outcome() -> None:
    log = EventLog()
    rt = runtime(log, retry=Retry(backoff=FIXED, jitter="none"))
    service = Service([ErrCode.TRANSIENT], latency=0.5)

    run_virtual(rt.apply(service.plan(), item_id="item-1"))

    assert [(e.kind, e.stage, e.item_id, e.attempt, e.duration, e.code, e.at) for e in log.events] == [
        ("attempt", "embed", "item-1", 1, 0.0, None, 0.0),
        ("failure", "embed", "item-1", 1, 0.5, "TRANSIENT", 0.5),
        ("wait", "embed", "item-1", 1, 1.0, None, 0.5),
        ("attempt", "embed", "item-1", 2, 0.0, None, 1.5),
        ("success", "embed", "item-1", 2, 0.5, None, 2.0),
        ("call_end", "embed", "item-1", 2, 2.0, None, 2.0),
    ]
    # One call: every event carries its number, and no other call has it.
    assert len({e.call for e in log.events}) == 1 and log.events[0].call > 0


def test_a_failure_event_tells_the_message_status_and_retry_after() -> None:
    log = EventLog()
    rt = runtime(log)
    error = ErrInfo(ErrCode.RATE_LIMIT, "slow down", {"status": 429, "retry_after": 2.5})

    async def refused() -> Result[object, ErrInfo]:
        return Err(error)

    run_virtual(rt.apply(refused, items=8))

    assert log.of("failure")[0].data == {"message": "slow down", "status": 429, "retry_after": 2.5}
    end = log.of("call_end")[0]
    assert (end.code, end.attempt, end.data) == ("RATE_LIMIT", 1, {"items": 8})


def test_a_refused_call_ends_with_the_breaker_s_code_and_no_attempt() -> None:
    log = EventLog()
    rt = runtime(log, circuit_breaker={"failures": 1, "min_calls": 1, "reset_after": "10s"})
    gather(rt, [Service([ErrCode.TRANSIENT]).plan(), Service().plan()])

    assert [e.code for e in log.of("breaker")] == ["open"]
    refused = log.of("call_end")[1]
    assert (refused.code, refused.attempt) == ("CIRCUIT_OPEN", 0)
    assert [e.kind for e in log.events if e.call == refused.call] == ["failure", "call_end"]


def test_concurrent_calls_have_distinct_numbers() -> None:
    log = EventLog()
    rt = runtime(log, concurrency=4)
    gather(rt, [Service(latency=1.0).plan() for _ in range(4)])

    numbers = {e.call for e in log.of("call_end")}
    assert len(numbers) == 4 and 0 not in numbers
    for n in numbers:
        assert [e.kind for e in log.events if e.call == n] == ["attempt", "success", "call_end"]


def test_apply_policy_passes_its_runtime_options_through() -> None:
    log = EventLog()
    plan = apply_policy(Policy(), Service().plan(), clock=VirtualClock(), events=log, stage="s", item_id="i")

    run_virtual(plan)

    assert {(e.stage, e.item_id) for e in log.events} == {("s", "i")}


def test_a_sink_given_after_the_runtime_is_made_gets_the_events() -> None:
    rt = PolicyRuntime(Policy(concurrency=2), clock=VirtualClock())
    log = EventLog()
    rt.events = log

    run_virtual(rt.apply(Service().plan(), item_id="late-sink"))

    assert [(e.kind, e.item_id) for e in log.events] == [
        ("attempt", "late-sink"),
        ("success", "late-sink"),
        ("call_end", "late-sink"),
    ]


def test_an_error_not_retried_carries_its_attempts() -> None:
    result = run_virtual(runtime().apply(Service([ErrCode.AUTH]).plan()))

    assert isinstance(result, Err) and result.error.meta["attempts"] == 1


def test_a_negative_cost_is_rejected_when_applied() -> None:
    with pytest.raises(ValueError, match="negative"):
        runtime().apply(Service().plan(), cost=-1)


# --- order: limiter, breaker, slot, timeout --------------------------------------------


def test_concurrency_bounds_the_calls_in_flight() -> None:
    service = Service(latency=1.0)

    gather(runtime(concurrency=3), [service.plan() for _ in range(10)])

    assert service.max_in_flight == 3
    assert service.starts == [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0]


def test_no_slot_is_held_while_backing_off() -> None:
    failing, healthy = Service([ErrCode.TRANSIENT], latency=1.0), Service(latency=1.0)
    rt = runtime(concurrency=1, retry=Retry(backoff=Backoff(kind="fixed", initial=10.0, max=10.0), jitter="none"))

    gather(rt, [failing.plan(), healthy.plan()])

    assert failing.starts == [0.0, 11.0]
    assert healthy.starts == [1.0]  # during the first call's backoff, not after it


def test_every_retry_passes_the_rate_limiter() -> None:
    service = Service([ErrCode.TRANSIENT] * 3)
    rt = runtime(
        rate_limit=RateLimit(requests=1, per=1.0), retry=Retry(max_attempts=4, backoff=Backoff(kind="immediate"))
    )

    result = run_virtual(rt.apply(service.plan()))

    assert result == Ok("ok")
    assert service.starts == [0.0, 1.0, 2.0, 3.0]


def test_rate_limiter_waits_are_reported() -> None:
    log = EventLog()
    rt = runtime(log, rate_limit=RateLimit(requests=2, per=1.0))

    gather(rt, [Service().plan() for _ in range(3)], key="tenant-a")

    assert [(e.duration, e.data) for e in log.of("limited")] == [
        (0.5, {"key": "tenant-a", "cost": 1}),
        (1.0, {"key": "tenant-a", "cost": 1}),
    ]


def test_the_cost_passed_to_apply_is_charged_to_the_limiter() -> None:
    service = Service()
    rt = runtime(rate_limit=RateLimit(requests=10, per=1.0, burst=5))

    gather(rt, [service.plan() for _ in range(3)], cost=5)

    assert service.starts == pytest.approx([0.0, 0.5, 1.0])


@PROPERTIES
@given(
    latencies=st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5]), min_size=1, max_size=30),
    concurrency=st.integers(1, 6),
    requests=st.integers(1, 8),
    burst=st.integers(1, 4),
)
def test_the_limiter_meters_real_starts_even_when_slots_are_scarce(
    latencies: list[float], concurrency: int, requests: int, burst: int
) -> None:
    starts: list[tuple[float, int]] = []
    clock = VirtualClock()

    def plan(latency: float) -> AsyncPlan[object]:
        async def run() -> Result[object, ErrInfo]:
            starts.append((clock.now(), 1))
            await clock.sleep(latency)
            return Ok(latency)

        return run

    rt = runtime(concurrency=concurrency, rate_limit=RateLimit(requests=requests, per=1.0, burst=burst))

    results = gather(rt, [plan(latency) for latency in latencies])

    assert results == [Ok(latency) for latency in latencies]
    assert max_window_cost(starts, 1.0) <= requests + burst - 1


def test_a_throttled_call_pauses_its_key_for_every_caller() -> None:
    log = EventLog()
    throttled = Service([ErrCode.RATE_LIMIT], retry_after=5.0)
    same_key, other_key = Service(), Service()
    rt = runtime(log, rate_limit=RateLimit(requests=100, per=1.0, burst=100))

    async def main() -> None:
        async def later(service: Service, key: str) -> None:
            await asyncio.sleep(0.5)
            await rt.apply(service.plan(), key=key)()

        await asyncio.gather(rt.apply(throttled.plan(), key="a")(), later(same_key, "a"), later(other_key, "b"))

    run_virtual(main)

    assert same_key.starts == [5.0]
    assert other_key.starts == [0.5]
    assert [(e.at, e.duration, e.data) for e in log.of("limited")] == [
        (0.0, 5.0, {"key": "a", "reason": "retry_after"}),
        (5.0, 4.5, {"key": "a", "cost": 1}),
    ]


def test_a_limiter_that_cannot_admit_before_the_deadline_fails_without_waiting() -> None:
    rt = runtime(rate_limit=RateLimit(requests=1, per=60.0), timeout=Timeout(total=10.0))
    second = Service()

    async def main() -> tuple[Result[object, ErrInfo], float]:
        await rt.apply(Service().plan())()
        result = await rt.apply(second.plan())()
        return result, VirtualClock().now()

    result, ended = run_virtual(main)

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["attempts"]) == (ErrCode.TIMEOUT, 0)
    assert ended == 0.0
    assert second.calls == 0


def test_a_deadline_reached_at_the_limiter_returns_the_last_error() -> None:
    service = Service([ErrCode.NETWORK] * 5)
    rt = runtime(
        rate_limit=RateLimit(requests=1, per=4.0),
        retry=Retry(max_attempts=5, backoff=Backoff(kind="immediate")),
        timeout=Timeout(total=10.0),
    )

    result = run_virtual(rt.apply(service.plan()))

    assert service.starts == [0.0, 4.0, 8.0]
    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["attempts"]) == (ErrCode.NETWORK, 3)


def test_a_call_cancelled_while_waiting_for_a_slot_takes_none() -> None:
    service = Service(latency=1.0)
    rt = runtime(concurrency=1)

    async def main() -> None:
        holder = asyncio.ensure_future(rt.apply(service.plan())())
        cancelled = asyncio.ensure_future(rt.apply(service.plan())())
        await asyncio.sleep(0.5)
        cancelled.cancel()
        await rt.apply(service.plan())()
        await holder

    run_virtual(main)

    assert service.starts == [0.0, 1.0]


def test_waiting_for_a_slot_is_bounded_by_the_deadline() -> None:
    rt = runtime(concurrency=1, timeout=Timeout(total=3.0))
    starved = Service()

    async def stubborn() -> Result[object, ErrInfo]:
        # A call that shrugs off its first cancellation keeps its slot past its own deadline.
        try:
            await asyncio.sleep(10.0)
        except asyncio.CancelledError:
            await asyncio.sleep(10.0)
        return Ok("late")

    async def main() -> tuple[Result[object, ErrInfo], float]:
        holder = asyncio.ensure_future(rt.apply(stubborn)())
        await asyncio.sleep(1.0)
        result = await rt.apply(starved.plan())()
        gave_up = VirtualClock().now()
        await holder
        return result, gave_up

    result, gave_up = run_virtual(main)

    assert isinstance(result, Err) and result.error.meta["waiting_for"] == "concurrency"
    assert gave_up == 4.0
    assert starved.calls == 0


# --- the breaker inside the retry loop ------------------------------------------------------


def breaker_runtime(total: float | None) -> PolicyRuntime:
    return PolicyRuntime(
        Policy(
            circuit_breaker=CircuitBreaker(failures=1, reset_after=10.0),
            retry=Retry(max_attempts=3, backoff=Backoff(kind="immediate")),
            timeout=Timeout(total=total) if total is not None else None,
        ),
        clock=VirtualClock(),
    )


def call_after_opening(rt: PolicyRuntime, service: Service) -> tuple[Result[object, ErrInfo], float]:
    async def main() -> tuple[Result[object, ErrInfo], float]:
        await rt.apply(Service([ErrCode.AUTH]).plan())()  # counted by the breaker, never retried
        await asyncio.sleep(1.0)
        result = await rt.apply(service.plan())()
        return result, VirtualClock().now()

    return run_virtual(main)


def test_circuit_open_fails_fast_and_is_not_retried_without_a_deadline() -> None:
    service = Service()

    result, ended = call_after_opening(breaker_runtime(total=None), service)

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["attempts"]) == (ErrCode.CIRCUIT_OPEN, 1)
    assert result.error.meta["retry_after"] == pytest.approx(9.0)
    assert (ended, service.calls) == (1.0, 0)


def test_circuit_open_waits_for_the_reset_when_the_deadline_allows() -> None:
    service = Service()

    result, ended = call_after_opening(breaker_runtime(total=60.0), service)

    assert result == Ok("ok")
    assert service.starts == [10.0]
    assert ended == 10.0


def test_circuit_open_fails_fast_when_the_reset_comes_after_the_deadline() -> None:
    service = Service()

    result, ended = call_after_opening(breaker_runtime(total=5.0), service)

    assert isinstance(result, Err) and result.error.code == ErrCode.CIRCUIT_OPEN
    assert (ended, service.calls) == (1.0, 0)


def test_a_retry_waits_out_the_breaker_its_own_failure_opened() -> None:
    service = Service([ErrCode.TRANSIENT])

    result = run_virtual(breaker_runtime(total=60.0).apply(service.plan()))

    assert result == Ok("ok")
    assert service.starts == [0.0, 10.0]


def test_a_probe_that_must_wait_for_the_limiter_holds_no_probe_place_meanwhile() -> None:
    rt = PolicyRuntime(
        Policy(
            circuit_breaker=CircuitBreaker(failures=1, reset_after=10.0, probes=1),
            rate_limit=RateLimit(requests=1, per=20.0),
        ),
        clock=VirtualClock(),
    )
    service = Service([ErrCode.AUTH])

    async def main() -> list[Result[object, ErrInfo]]:
        await rt.apply(service.plan())()  # opens the breaker; the limiter's next opening is at 20
        await asyncio.sleep(10.0)
        probe = asyncio.ensure_future(rt.apply(service.plan("probe"))())  # admitted, then waits for the limiter
        await asyncio.sleep(1.0)
        later = asyncio.ensure_future(rt.apply(service.plan("later"))())  # not refused as a second probe
        return list(await asyncio.gather(probe, later))

    assert run_virtual(main) == [Ok("probe"), Ok("later")]
    assert service.starts == [0.0, 20.0, 40.0]


# --- everything together -----------------------------------------------------------------


@dataclass
class ThrottledApi:
    """An API that answers 429 with Retry-After while in maintenance, and counts its traffic."""

    maintenance_calls: int
    retry_after: float
    clock: VirtualClock = field(default_factory=VirtualClock)
    starts: list[tuple[float, int]] = field(default_factory=list)
    pauses: list[tuple[float, float]] = field(default_factory=list)
    done: set[int] = field(default_factory=set)

    def plan(self, item: int) -> AsyncPlan[int]:
        async def run() -> Result[int, ErrInfo]:
            now = self.clock.now()
            self.starts.append((now, 1))
            await self.clock.sleep(0.05)
            if len(self.starts) <= self.maintenance_calls:
                self.pauses.append((now, self.retry_after))
                return Err(ErrInfo(ErrCode.RATE_LIMIT, "429 Too Many Requests", {"retry_after": self.retry_after}))
            self.done.add(item)
            return Ok(item)

        return run


def test_retry_limiter_and_breaker_together_respect_a_throttling_api() -> None:
    api = ThrottledApi(maintenance_calls=6, retry_after=2.0)
    limit = RateLimit(requests=5, per=1.0, burst=2)
    rt = PolicyRuntime(
        Policy(
            retry=Retry(max_attempts=10, backoff=Backoff(kind="exponential", initial=0.1, max=5.0)),
            rate_limit=limit,
            circuit_breaker=CircuitBreaker(failures=3),
            concurrency=4,
        ),
        clock=VirtualClock(),
        seed=7,
    )

    async def main() -> list[Result[int, ErrInfo]]:
        return list(await asyncio.gather(*(rt.apply(api.plan(i))() for i in range(30))))

    results = run_virtual(main)

    assert results == [Ok(i) for i in range(30)]
    assert api.done == set(range(30))
    assert max_window_cost(api.starts, limit.per) <= limit.requests + limit.burst - 1
    for throttled_at, pause in api.pauses:
        # Calls already admitted before the 429 came back may start; none after it within the pause.
        answered = throttled_at + 0.05
        assert not [t for t, _ in api.starts if answered < t < throttled_at + pause]
    assert rt.breaker is not None and rt.breaker.state == "closed"
