"""The keyed GCRA rate limiter (`funcpipe.policy.limiter`), on virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import Err, ErrCode, Ok
from funcpipe.policy import Clock, RateLimit, RateLimiter
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import LateClock, max_window_cost

PROPERTIES = settings(max_examples=80, deadline=None, derandomize=True)


def limiter(requests: int = 10, per: float = 1.0, burst: int = 1, clock: Clock | None = None) -> RateLimiter:
    return RateLimiter(RateLimit(requests=requests, per=per, burst=burst), clock or VirtualClock())


async def start_at(
    lim: RateLimiter, arrival: float, cost: int, starts: list[tuple[float, int]], key: Hashable = None
) -> None:
    clock = VirtualClock()
    await clock.sleep(arrival - clock.now())
    waited = await lim.acquire(cost, key=key)
    assert isinstance(waited, Ok)
    starts.append((clock.now(), cost))


def schedule(
    arrivals: list[tuple[float, int]], *, requests: int = 10, per: float = 1.0, burst: int = 1
) -> list[tuple[float, int]]:
    """Start times (and costs) of calls arriving at the given times, in start order."""

    async def main() -> list[tuple[float, int]]:
        lim = limiter(requests, per, burst)
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            for arrival, cost in arrivals:
                tg.create_task(start_at(lim, arrival, cost, starts))
                await asyncio.sleep(0)  # keep arrival order among equal times
        return starts

    return run_virtual(main)


def times(starts: list[tuple[float, int]]) -> list[float]:
    return [t for t, _ in starts]


# --- exact schedules -----------------------------------------------------------------


def test_unit_calls_are_spaced_one_interval_apart() -> None:
    assert times(schedule([(0.0, 1)] * 5)) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_a_burst_starts_back_to_back_then_calls_are_spaced() -> None:
    assert times(schedule([(0.0, 1)] * 6, burst=3)) == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


def test_an_idle_bucket_refills_its_burst() -> None:
    arrivals = [(0.0, 1)] * 3 + [(2.0, 1)] * 3

    assert times(schedule(arrivals, burst=3)) == pytest.approx([0.0, 0.0, 0.0, 2.0, 2.0, 2.0])


def test_a_call_costing_its_burst_waits_for_the_whole_burst() -> None:
    assert times(schedule([(0.0, 5)] * 3, burst=5)) == pytest.approx([0.0, 0.5, 1.0])


def test_calls_costing_more_than_the_burst_keep_within_the_period_bound() -> None:
    starts = schedule([(0.0, 4)] * 4)

    assert times(starts) == pytest.approx([0.0, 0.4, 1.0, 1.4])
    assert max_window_cost(starts, 1.0) <= 10


def test_a_call_costing_more_than_the_bound_runs_alone_in_its_period() -> None:
    starts = schedule([(0.0, 1), (0.0, 8), (0.0, 1)], requests=5)

    # 8 > 5 + 1 - 1: it waits for an empty period, and the next call both for
    # the period to pass (2.0) and for the 8 units' pacing (1.0 + 8 * 0.2).
    assert times(starts) == pytest.approx([0.0, 1.0, 2.6])


def test_waiters_are_served_in_arrival_order_whatever_their_cost() -> None:
    starts = schedule([(0.0, 1), (0.0, 5), (0.0, 1)])

    assert starts == [(0.0, 1), (pytest.approx(0.1), 5), (pytest.approx(0.6), 1)]


def test_a_cancelled_waiter_returns_its_place() -> None:
    async def main() -> list[tuple[float, int]]:
        lim = limiter()
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            tg.create_task(start_at(lim, 0.0, 1, starts))
            await asyncio.sleep(0)
            big = tg.create_task(start_at(lim, 0.0, 5, starts))
            await asyncio.sleep(0)
            tg.create_task(start_at(lim, 0.0, 1, starts))
            await asyncio.sleep(0.05)
            big.cancel()
        return starts

    assert run_virtual(main) == [(0.0, 1), (pytest.approx(0.1), 1)]


def test_a_call_that_cannot_start_before_its_deadline_fails_at_once_and_takes_nothing() -> None:
    async def main() -> tuple[object, float, float]:
        lim, clock = limiter(requests=1, per=10.0), VirtualClock()
        await lim.acquire()
        refused = await lim.acquire(deadline=5.0)
        refused_at = clock.now()
        await lim.acquire()
        return refused, refused_at, clock.now()

    refused, refused_at, next_start = run_virtual(main)

    assert isinstance(refused, Err) and refused.error.code == ErrCode.TIMEOUT
    assert refused_at == 0.0
    assert next_start == 10.0


def test_a_waiter_in_line_gives_up_at_its_deadline() -> None:
    async def main() -> tuple[object, float]:
        lim, clock = limiter(requests=1, per=10.0), VirtualClock()
        await lim.acquire()
        ahead = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        late = await lim.acquire(deadline=3.0)
        gave_up = clock.now()
        await ahead
        return late, gave_up

    late, gave_up = run_virtual(main)

    assert isinstance(late, Err) and late.error.meta["waiting_for"] == "rate_limit"
    assert gave_up == 3.0


def test_each_key_has_its_own_bucket() -> None:
    async def main() -> list[tuple[float, int]]:
        lim = limiter(requests=1, per=10.0)
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            for key in ("a", "b", "a", "b"):
                tg.create_task(start_at(lim, 0.0, 1, starts, key=key))
                await asyncio.sleep(0)
        return starts

    assert times(run_virtual(main)) == [0.0, 0.0, 10.0, 10.0]


def test_idle_buckets_are_evicted() -> None:
    async def main() -> int:
        lim = limiter(requests=1, per=1.0)
        for i in range(1000):
            await lim.acquire(key=f"tenant-{i}")
            await asyncio.sleep(0.5)
        return lim.tracked_keys

    assert run_virtual(main) <= 64


def test_a_pause_holds_its_key_for_every_caller() -> None:
    async def main() -> list[tuple[float, int]]:
        lim = limiter()
        lim.pause(2.0, key="throttled")
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            for key in ("throttled", "other", "throttled"):
                tg.create_task(start_at(lim, 0.0, 1, starts, key=key))
                await asyncio.sleep(0)
        return starts

    assert times(run_virtual(main)) == pytest.approx([0.0, 2.0, 2.1])


def test_start_now_starts_a_call_the_limit_allows_at_once() -> None:
    async def main() -> tuple[list[bool], list[tuple[float, int]]]:
        lim = limiter(requests=2, per=1.0, burst=2)
        started = [lim.start_now(), lim.start_now(), lim.start_now()]
        starts: list[tuple[float, int]] = []
        await start_at(lim, 0.0, 1, starts)
        return started, starts

    started, starts = run_virtual(main)

    assert started == [True, True, False]
    assert times(starts) == pytest.approx([0.5])  # the refusal took nothing


def test_start_now_never_jumps_the_line() -> None:
    async def main() -> tuple[bool, list[tuple[float, int]]]:
        lim = limiter(requests=1, per=1.0)
        await lim.acquire()
        starts: list[tuple[float, int]] = []
        waiting = asyncio.ensure_future(start_at(lim, 0.0, 1, starts))
        await asyncio.sleep(0)
        await asyncio.sleep(1.0)  # the limit allows a call now, but one waits for it
        jumped = lim.start_now()
        await waiting
        return jumped, starts

    jumped, starts = run_virtual(main)

    assert not jumped
    assert times(starts) == [1.0]


def test_a_negative_cost_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        limiter().turn(-1)


def test_a_turn_cannot_commit_before_it_is_ready() -> None:
    async def main() -> None:
        lim = limiter(requests=1, per=10.0)
        await lim.acquire()
        async with lim.turn() as turn:
            turn.commit()

    with pytest.raises(RuntimeError, match="before the turn was ready"):
        run_virtual(main)


# --- laws --------------------------------------------------------------------------


LIMITS = st.tuples(st.integers(1, 20), st.sampled_from([0.1, 0.25, 1.0, 3.0, 7.5]), st.integers(1, 6))


@PROPERTIES
@given(limit=LIMITS, data=st.data())
def test_no_period_starts_more_than_requests_plus_burst_minus_one(
    limit: tuple[int, float, int], data: st.DataObject
) -> None:
    requests, per, burst = limit
    bound = requests + burst - 1
    arrivals = data.draw(
        st.lists(st.tuples(st.floats(0, 4 * per), st.integers(1, bound)), min_size=1, max_size=40).map(sorted)
    )

    starts = schedule(arrivals, requests=requests, per=per, burst=burst)

    assert len(starts) == len(arrivals)
    assert max_window_cost(starts, per) <= bound


@PROPERTIES
@given(limit=LIMITS, data=st.data())
def test_a_period_over_the_bound_holds_a_single_oversized_call(
    limit: tuple[int, float, int], data: st.DataObject
) -> None:
    requests, per, burst = limit
    bound = requests + burst - 1
    arrivals = data.draw(
        st.lists(st.tuples(st.floats(0, 4 * per), st.integers(1, 2 * bound)), min_size=1, max_size=30).map(sorted)
    )

    starts = schedule(arrivals, requests=requests, per=per, burst=burst)

    for t, _ in starts:
        window = [c for s, c in starts if t <= s < t + per]
        assert sum(window) <= bound or len(window) == 1


@PROPERTIES
@given(limit=LIMITS, data=st.data())
def test_calls_start_in_arrival_order(limit: tuple[int, float, int], data: st.DataObject) -> None:
    requests, per, burst = limit
    arrivals = data.draw(
        st.lists(st.tuples(st.floats(0, 4 * per), st.integers(1, 2 * (requests + burst))), min_size=1, max_size=30).map(
            sorted
        )
    )

    async def main() -> tuple[list[int], list[int]]:
        lim = limiter(requests, per, burst)
        arrived: list[int] = []
        started: list[int] = []

        async def call(index: int, arrival: float, cost: int) -> None:
            await asyncio.sleep(arrival - asyncio.get_running_loop().time())
            arrived.append(index)  # joining the line happens without suspending
            await lim.acquire(cost)
            started.append(index)

        async with asyncio.TaskGroup() as tg:
            for index, (arrival, cost) in enumerate(arrivals):
                tg.create_task(call(index, arrival, cost))
        return arrived, started

    arrived, started = run_virtual(main)

    assert started == arrived


@PROPERTIES
@given(limit=LIMITS, data=st.data())
def test_cancelled_waiters_never_break_the_bound(limit: tuple[int, float, int], data: st.DataObject) -> None:
    requests, per, burst = limit
    bound = requests + burst - 1
    calls = data.draw(
        st.lists(
            st.tuples(st.floats(0, 3 * per), st.integers(1, bound), st.one_of(st.none(), st.floats(0, 2 * per))),
            min_size=1,
            max_size=30,
        )
    )

    async def main() -> list[tuple[float, int]]:
        lim = limiter(requests, per, burst)
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            for arrival, cost, patience in calls:
                task = tg.create_task(start_at(lim, arrival, cost, starts))
                if patience is not None:
                    asyncio.get_running_loop().call_at(arrival + patience, task.cancel)
        return starts

    assert max_window_cost(run_virtual(main), per) <= bound


def saturated_starts(
    requests: int, burst: int, cost: int, horizon: float = 100.0, clock: Clock | None = None
) -> list[tuple[float, int]]:
    """The starts of 8 workers that always want to call, over ``horizon`` seconds."""

    async def main() -> list[tuple[float, int]]:
        lim = limiter(requests, 1.0, burst, clock)
        starts: list[tuple[float, int]] = []

        async def worker() -> None:
            while True:
                await lim.acquire(cost)
                now = lim.clock.now()
                if now >= horizon:
                    return
                starts.append((now, cost))

        async with asyncio.TaskGroup() as tg:
            for _ in range(8):
                tg.create_task(worker())
        return starts

    return run_virtual(main)


def saturated_rate(requests: int, burst: int, cost: int, horizon: float = 100.0, clock: Clock | None = None) -> float:
    """Cost started per second by 8 workers that always want to call."""
    return sum(c for _, c in saturated_starts(requests, burst, cost, horizon, clock)) / horizon


@pytest.mark.parametrize(("cost", "burst"), [(1, 1), (1, 5), (10, 1), (25, 1)])
def test_a_saturated_limiter_reaches_its_configured_rate(cost: int, burst: int) -> None:
    rate = saturated_rate(50, burst, cost)

    assert 0.99 * 50 <= rate <= 50 + (50 + burst - 1) / 100


def test_a_saturated_limiter_reaches_the_most_whole_calls_the_bound_allows() -> None:
    # 7 does not divide 50 + 3 - 1 = 52: at most 7 calls (49) fit one period.
    rate = saturated_rate(50, 3, 7)

    assert 0.99 * 49 <= rate <= 49


# --- late wake-ups ------------------------------------------------------------------


@pytest.mark.parametrize(("cost", "burst", "late"), [(1, 1, 0.002), (1, 1, 0.01), (10, 1, 0.01), (1, 5, 0.01)])
def test_late_wake_ups_do_not_slow_a_saturated_limiter(cost: int, burst: int, late: float) -> None:
    # At 50/s calls are 20 ms apart; every sleep wakes up to ``late`` after its time.
    rate = saturated_rate(50, burst, cost, clock=LateClock(late, seed=3))

    assert rate >= 0.99 * 50


def test_late_wake_ups_never_break_the_period_bound() -> None:
    starts = saturated_starts(50, 1, 1, horizon=20.0, clock=LateClock(0.015, seed=5))

    assert max_window_cost(starts, 1.0) <= 50


def test_lateness_past_one_interval_is_not_made_up() -> None:
    # Wake-ups up to two intervals (0.2 s) late: a late call lets the next one
    # start at once, but no third call follows within the interval.
    starts = saturated_starts(10, 1, 1, horizon=30.0, clock=LateClock(0.2, seed=9))

    assert max_window_cost(starts, 0.1) <= 2
    assert max_window_cost(starts, 1.0) <= 10


@PROPERTIES
@given(limit=LIMITS, late=st.floats(0.0, 0.5), seed=st.integers(0, 2**16), data=st.data())
def test_late_wake_ups_never_break_the_bound(
    limit: tuple[int, float, int], late: float, seed: int, data: st.DataObject
) -> None:
    requests, per, burst = limit
    bound = requests + burst - 1
    arrivals = data.draw(
        st.lists(st.tuples(st.floats(0, 4 * per), st.integers(1, bound)), min_size=1, max_size=40).map(sorted)
    )
    clock = LateClock(late * per / requests, seed)

    async def main() -> list[tuple[float, int]]:
        lim = limiter(requests, per, burst, clock)
        starts: list[tuple[float, int]] = []
        async with asyncio.TaskGroup() as tg:
            for arrival, cost in arrivals:
                tg.create_task(start_at(lim, arrival, cost, starts))
                await asyncio.sleep(0)
        return starts

    starts = run_virtual(main)

    assert len(starts) == len(arrivals)
    assert max_window_cost(starts, per) <= bound
