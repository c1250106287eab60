"""Workers' shared policy state on virtual time: leased starts, the shared pause and breaker, the boards.

Each "worker" here is a `PolicyRuntime` given the scale-out executor's
shared policy, with the book and the boards in the same process (the Ray
actors hold the very same objects); grants take a virtual round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import Err, ErrCode, Ok
from funcpipe.policy import CircuitBreaker, Clock, Policy, PolicyRuntime, RateLimit, Retry
from funcpipe.policy.breaker import TransitionListener
from funcpipe.run.scaleout import GUARD, TOLERANCE, Book
from funcpipe.run.scaleout._boards import PolicyBoard, ProgressBoard
from funcpipe.run.scaleout._breakers import REFRESH, SharedBreaker
from funcpipe.run.scaleout._leases import MAX_GRANT, LeasedLimiter
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import LateClock, Service, max_window_cost

LIMIT = RateLimit(requests=10, per=1.0)
RTT = 0.01


@dataclass
class InProcessBoard:
    """The shared policy of every worker, with the book in this process and a virtual round trip."""

    clock: Clock
    book: Book = field(default_factory=lambda: Book(LIMIT))
    grants: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.board = PolicyBoard(clock=self.clock, wall=self.clock.now)

    def limiter(self, scope: str, limit: RateLimit, clock: Clock) -> LeasedLimiter:
        book = self.book

        async def grant(key: Hashable, costs: Sequence[int], lead: float, slack: int) -> Sequence[float]:
            self.grants.append(len(costs))
            await self.clock.sleep(RTT / 2)
            starts = book.book(costs, self.clock.now() + lead, key=key, slack=slack)
            await self.clock.sleep(RTT / 2)
            return starts

        def pause(key: Hashable, seconds: float) -> None:
            book.pause(self.clock.now() + seconds, key=key)

        return LeasedLimiter(grant, pause, clock, self.clock.now)

    def breaker(
        self, scope: str, config: CircuitBreaker, clock: Clock, on_transition: TransitionListener
    ) -> SharedBreaker:
        def tell(code: str | None, counted: bool, answer: object) -> None:
            assert callable(answer)
            asyncio.get_running_loop().call_soon(answer, self.board.record(scope, config, code, counted))

        return SharedBreaker(config, clock, tell, on_transition)


def _workers(shared: InProcessBoard, n: int, policy: Policy, clock: Clock) -> list[PolicyRuntime]:
    return [PolicyRuntime(policy, clock=clock, shared=shared, scope="embedder", seed=i) for i in range(n)]


async def _drive(runtimes: list[PolicyRuntime], service: Service, calls: int) -> list[object]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(runtimes[i % len(runtimes)].apply(service.plan())()) for i in range(calls)]
    return [t.result() for t in tasks]


def test_workers_start_on_one_paced_schedule() -> None:
    clock = VirtualClock()
    shared = InProcessBoard(clock)
    service = Service(clock=clock)
    runtimes = _workers(shared, 3, Policy(rate_limit=LIMIT, concurrency=2), clock)
    results = run_virtual(lambda: _drive(runtimes, service, 30))
    assert all(isinstance(r, Ok) for r in results)
    interval = (1.0 + GUARD) / 10
    starts = service.starts
    # Each worker's first start leaves one interval free after it; then the book is saturated.
    assert all(b - a >= interval - 1e-9 for a, b in pairwise(starts))
    assert max_window_cost([(s, 1) for s in starts], 1.0 + GUARD) <= 10
    assert starts[-1] == pytest.approx(starts[0] + (29 + 3) * interval, abs=RTT)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(workers=st.integers(1, 4), late=st.floats(0.0, 3 * TOLERANCE), seed=st.integers(0, 1000))
def test_starts_late_by_up_to_the_tolerance_never_exceed_the_limit_in_any_window(
    workers: int, late: float, seed: int
) -> None:
    clock = LateClock(late, seed)
    shared = InProcessBoard(clock.clock)
    service = Service(clock=clock.clock)
    runtimes = _workers(shared, workers, Policy(rate_limit=LIMIT, concurrency=3), clock)
    results = run_virtual(lambda: _drive(runtimes, service, 25))
    assert all(isinstance(r, Ok) for r in results)
    assert service.calls == 25
    # What the service sees, in windows of the limit's own period.
    assert max_window_cost([(s, 1) for s in service.starts], LIMIT.per) <= LIMIT.requests


def test_one_grant_serves_the_calls_waiting_together() -> None:
    clock = VirtualClock()
    shared = InProcessBoard(clock)
    service = Service(clock=clock)
    runtimes = _workers(shared, 1, Policy(rate_limit=LIMIT, concurrency=20), clock)
    run_virtual(lambda: _drive(runtimes, service, 20))
    assert shared.grants[0] == 1  # the first grant is asked for before the others queue
    assert max(shared.grants) == MAX_GRANT
    assert len(shared.grants) <= 1 + -(-19 // MAX_GRANT) + 1


def test_a_granted_start_past_the_deadline_times_out_without_calling() -> None:
    clock = VirtualClock()
    shared = InProcessBoard(clock)
    service = Service(clock=clock)
    shared.book.pause(5.0)
    (runtime,) = _workers(shared, 1, Policy(rate_limit=LIMIT, timeout={"total": 1.0}), clock)
    result = run_virtual(runtime.apply(service.plan()))
    assert isinstance(result, Err) and result.error.code == ErrCode.TIMEOUT
    assert service.calls == 0


def test_a_retry_after_seen_by_one_worker_pauses_every_worker() -> None:
    clock = VirtualClock()
    shared = InProcessBoard(clock)
    service = Service(script=[ErrCode.RATE_LIMIT], retry_after=2.0, clock=clock)
    policy = Policy(rate_limit=LIMIT, retry=Retry(max_attempts=3))
    first, second = _workers(shared, 2, policy, clock)

    async def main() -> None:
        throttled = asyncio.create_task(first.apply(service.plan())())
        await clock.sleep(0.5)  # the 429 is in; the other worker calls now
        assert isinstance(await second.apply(service.plan())(), Ok)
        assert isinstance(await throttled, Ok)

    run_virtual(main)
    assert service.starts[0] == pytest.approx(RTT)  # booked half a round trip earlier, made on arrival
    assert all(s >= 2.0 for s in service.starts[1:])


def test_a_breaker_opened_by_one_worker_refuses_calls_in_every_worker() -> None:
    clock = VirtualClock()
    shared = InProcessBoard(clock)
    breaker = CircuitBreaker(failures=3, reset_after=10.0)
    service = Service(script=[None, *[ErrCode.TRANSIENT] * 3], clock=clock)
    first, second = _workers(shared, 2, Policy(circuit_breaker=breaker), clock)

    async def main() -> None:
        assert isinstance(await second.apply(service.plan())(), Ok)  # before the failures
        for _ in range(3):
            assert isinstance(await first.apply(service.plan())(), Err)
        await clock.sleep(REFRESH)
        # The second worker saw no failure itself: its next admission asks the board, and hears.
        assert isinstance(await second.apply(service.plan())(), Ok)
        await asyncio.sleep(0)
        refused = await second.apply(service.plan())()
        assert isinstance(refused, Err) and refused.error.code == ErrCode.CIRCUIT_OPEN
        assert second.breaker is not None and second.breaker.state == "open"
        await clock.sleep(11.0)
        assert isinstance(await second.apply(service.plan())(), Ok)

    run_virtual(main)
    assert service.calls == 6


def test_the_progress_board_counts_every_attempt_and_keeps_the_last_outcome() -> None:
    board = ProgressBoard()
    assert board.begin(0) == (1, [])
    board.report(0, 1, [("a", "done"), ("b", "failed"), ("c", "filtered")], {"embed": {"calls": 3}}, ["hello"])
    attempt, finished = board.begin(0)
    assert attempt == 2 and sorted(finished) == ["a", "c"]  # a failed item is tried again
    board.report(0, 2, [("b", "done")], {"embed": {"calls": 1}})
    assert board.outcomes() == {"a": "done", "b": "done", "c": "filtered"}
    assert board.counters() == {"embed": {"calls": 4}}
    assert board.attempts() == {0: 2}
    assert board.notices(0) == ["shard 0: hello"] and board.notices(1) == []
    assert board.settled() == 3
