"""The circuit breaker (`funcpipe.policy.breaker`) alone and inside `apply_policy`."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from funcpipe.core import Err, ErrCode, ErrInfo, Ok
from funcpipe.policy import Breaker, BreakerState, CircuitBreaker, EventLog, Policy, PolicyRuntime, Ticket
from funcpipe.policy.breaker import WINDOW_BUCKETS
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import Service


class ManualClock:
    """A clock moved by hand, for synchronous breaker tests."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def breaker(**config: object) -> tuple[Breaker, ManualClock, list[tuple[BreakerState, BreakerState]]]:
    clock = ManualClock()
    moves: list[tuple[BreakerState, BreakerState]] = []
    b = Breaker(
        CircuitBreaker.model_validate({"failures": 3, "min_calls": 100, "reset_after": 10.0, **config}),
        clock,
        lambda old, new, _item: moves.append((old, new)),
    )
    return b, clock, moves


def call(b: Breaker, code: str | None) -> Ticket:
    ticket = b.admit()
    assert isinstance(ticket, Ticket)
    b.record(ticket, code)
    return ticket


def trip(b: Breaker) -> None:
    while b.state == "closed":
        call(b, ErrCode.TRANSIENT)


def test_consecutive_failures_open_the_breaker() -> None:
    b, _, moves = breaker()

    for _ in range(3):
        call(b, ErrCode.TRANSIENT)

    assert b.state == "open"
    assert moves == [("closed", "open")]


def test_a_success_resets_the_consecutive_count() -> None:
    b, _, _ = breaker()

    for code in (ErrCode.TRANSIENT, ErrCode.TRANSIENT, None, ErrCode.TRANSIENT, ErrCode.TRANSIENT):
        call(b, code)

    assert b.state == "closed"


@pytest.mark.parametrize("code", [ErrCode.RATE_LIMIT, ErrCode.BAD_INPUT, ErrCode.USER_CODE])
def test_codes_outside_on_never_count_as_failures(code: str) -> None:
    b, _, _ = breaker()

    for _ in range(10):
        call(b, code)

    assert b.state == "closed"


@pytest.mark.parametrize("code", [ErrCode.AUTH, ErrCode.SERVICE_SPECIFIC, ErrCode.TIMEOUT])
def test_auth_service_specific_and_timeouts_count_by_default(code: str) -> None:
    b, _, _ = breaker()

    for _ in range(3):
        call(b, code)

    assert b.state == "open"


def test_the_counted_codes_are_configurable() -> None:
    b, _, _ = breaker(on=["RATE_LIMIT"])

    for _ in range(3):
        call(b, ErrCode.RATE_LIMIT)

    assert b.state == "open"


def test_a_failure_ratio_over_the_window_opens_it_once_min_calls_are_made() -> None:
    b, clock, _ = breaker(failures=100, ratio=0.5, window=30.0, min_calls=6)

    states = []
    for code in (ErrCode.TRANSIENT, None, ErrCode.TRANSIENT, None, ErrCode.TRANSIENT, None):
        call(b, code)
        states.append(b.state)
        clock.t += 1

    assert states == ["closed"] * 5 + ["open"]  # 3 of 5 is below min_calls; 3 of 6 is not


def test_calls_older_than_the_window_no_longer_count() -> None:
    b, clock, _ = breaker(failures=100, ratio=0.5, window=30.0, min_calls=4)
    for _ in range(3):
        call(b, ErrCode.TRANSIENT)
    clock.t = 31.0

    call(b, None)

    assert b.state == "closed"  # the three failures left the window


def test_a_call_counts_for_at_most_the_window() -> None:
    b, clock, _ = breaker(failures=100, ratio=0.5, window=30.0, min_calls=4)
    for _ in range(3):
        call(b, ErrCode.TRANSIENT)
    clock.t = 30.0

    call(b, None)

    assert b.state == "closed"


def test_a_call_counts_until_its_bucket_leaves_the_window() -> None:
    b, clock, _ = breaker(failures=100, ratio=0.5, window=30.0, min_calls=4)
    bucket = 30.0 / WINDOW_BUCKETS
    clock.t = 0.9 * bucket
    for _ in range(3):
        call(b, ErrCode.TRANSIENT)
    clock.t = 30.0 - 0.05 * bucket  # less than `window` later, more than `window - bucket`

    call(b, None)

    assert b.state == "open"


def test_the_window_takes_no_memory_per_call() -> None:
    b, clock, _ = breaker(failures=100_000, ratio=1.0, window=60.0, min_calls=100_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            clock.t = i * 0.001
            call(b, ErrCode.TRANSIENT if i % 2 else None)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert b.state == "closed"
    assert grown < 4096


def test_an_open_breaker_fails_fast_saying_when_probing_resumes() -> None:
    b, clock, _ = breaker()
    trip(b)
    clock.t += 4.0

    refusal = b.admit()

    assert isinstance(refusal, ErrInfo)
    assert refusal.code == ErrCode.CIRCUIT_OPEN
    assert refusal.meta["retry_after"] == pytest.approx(6.0)


def test_after_reset_after_only_probes_are_admitted() -> None:
    b, clock, moves = breaker(probes=2)
    trip(b)
    clock.t += 10.0

    admissions = [b.admit() for _ in range(5)]

    assert [isinstance(a, Ticket) and a.probe for a in admissions] == [True, True, False, False, False]
    assert b.state == "half_open"
    assert moves[-1] == ("open", "half_open")


def test_a_probe_success_closes_the_breaker() -> None:
    b, clock, moves = breaker()
    trip(b)
    clock.t += 10.0

    call(b, None)

    assert b.state == "closed"
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_probe_failure_reopens_it_for_another_reset_after() -> None:
    b, clock, _ = breaker()
    trip(b)
    clock.t += 10.0

    call(b, ErrCode.NETWORK)

    assert b.state == "open"
    assert b.reset_at() == 20.0


def test_a_cancelled_probe_frees_its_place_without_counting() -> None:
    b, clock, _ = breaker()
    trip(b)
    clock.t += 10.0
    probe = b.admit()
    assert isinstance(probe, Ticket)

    b.release(probe)

    assert b.state == "half_open"
    assert isinstance(b.admit(), Ticket)


def test_outcomes_admitted_before_a_transition_are_ignored() -> None:
    b, _, _ = breaker()
    slow = b.admit()
    assert isinstance(slow, Ticket)
    trip(b)

    b.record(slow, None)

    assert b.state == "open"


def test_a_ratio_at_exactly_the_threshold_opens_it() -> None:
    b, _, _ = breaker(failures=100, ratio=0.3, min_calls=10)

    for code in [ErrCode.TRANSIENT] * 3 + [None] * 7:
        call(b, code)

    assert b.state == "open"


# --- inside apply_policy -------------------------------------------------------------


def ratio_runtime() -> PolicyRuntime:
    config = CircuitBreaker(failures=100, ratio=0.5, window=30.0, min_calls=6, reset_after=60.0)
    return PolicyRuntime(Policy(circuit_breaker=config), clock=VirtualClock())


def test_a_failure_ratio_in_the_window_opens_it_on_virtual_time() -> None:
    runtime, service = ratio_runtime(), Service([ErrCode.TRANSIENT, None] * 3, latency=1.0)

    async def main() -> list[str]:
        states: list[str] = []
        for _ in range(6):
            await runtime.apply(service.plan())()
            assert runtime.breaker is not None
            states.append(runtime.breaker.state)
        return states

    assert run_virtual(main) == ["closed"] * 5 + ["open"]


def test_failures_spread_wider_than_the_window_never_reach_min_calls() -> None:
    runtime, service = ratio_runtime(), Service([ErrCode.TRANSIENT, None] * 20, latency=1.0)

    async def main() -> str:
        for _ in range(40):
            await runtime.apply(service.plan())()
            await asyncio.sleep(9.0)  # one call in 10 s: at most 3 calls in any 30 s window
        assert runtime.breaker is not None
        return runtime.breaker.state

    assert run_virtual(main) == "closed"
    assert service.calls == 40


def tripped_runtime(probes: int, log: EventLog | None = None) -> tuple[PolicyRuntime, Service]:
    config = CircuitBreaker(failures=2, reset_after=10.0, probes=probes)
    runtime = PolicyRuntime(Policy(circuit_breaker=config), clock=VirtualClock(), events=log or EventLog())
    return runtime, Service([ErrCode.TRANSIENT, ErrCode.TRANSIENT], latency=1.0)


def test_at_most_probes_of_a_hundred_concurrent_callers_reach_the_service() -> None:
    async def main() -> tuple[list[object], Service, str]:
        runtime, service = tripped_runtime(probes=3)
        for _ in range(2):
            await runtime.apply(service.plan())()
        await asyncio.sleep(10.0)
        results = await asyncio.gather(*(runtime.apply(service.plan(i))() for i in range(100)))
        assert runtime.breaker is not None
        return list(results), service, runtime.breaker.state

    results, service, state = run_virtual(main)

    assert service.calls == 2 + 3
    assert service.max_in_flight == 3
    assert sum(isinstance(r, Ok) for r in results) == 3
    assert all(r.error.code == ErrCode.CIRCUIT_OPEN for r in results if isinstance(r, Err))
    assert state == "closed"


def test_no_lock_is_held_across_calls() -> None:
    runtime = PolicyRuntime(Policy(circuit_breaker=CircuitBreaker()), clock=VirtualClock())
    service = Service(latency=5.0)

    async def main() -> float:
        await asyncio.gather(*(runtime.apply(service.plan())() for _ in range(100)))
        return VirtualClock().now()

    assert run_virtual(main) == 5.0
    assert service.max_in_flight == 100


def test_a_cancelled_call_is_not_a_failure() -> None:
    config = CircuitBreaker(failures=1)
    runtime = PolicyRuntime(Policy(circuit_breaker=config), clock=VirtualClock())
    service = Service(latency=5.0)

    async def main() -> None:
        task = asyncio.ensure_future(runtime.apply(service.plan())())
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main)

    assert runtime.breaker is not None and runtime.breaker.state == "closed"


def test_every_transition_is_an_event() -> None:
    log = EventLog()

    async def main() -> None:
        runtime, service = tripped_runtime(probes=1, log=log)
        for _ in range(2):
            await runtime.apply(service.plan(), item_id="x")()
        await asyncio.sleep(10.0)
        await runtime.apply(service.plan(), item_id="probe")()

    run_virtual(main)

    moves = [(e.data["from"], e.code, e.item_id, e.at) for e in log.of("breaker")]
    assert moves == [
        ("closed", "open", "x", 2.0),
        ("open", "half_open", "probe", 12.0),
        ("half_open", "closed", "probe", 13.0),
    ]
