"""`apply_stream_policy`: bounded concurrency, order, backpressure and clean cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result, async_gen_from_iterable, collect
from funcpipe.policy import EventLog, Policy, PolicyRuntime, Retry
from funcpipe.policy.models import Backoff, RateLimit
from funcpipe.policy.stream import apply_stream_policy
from funcpipe.testing import run_virtual

from ._stream_support import ERR, Service, Source, drain, others, source, timed

latencies = st.lists(st.integers(min_value=0, max_value=5), max_size=30)
concurrencies = st.integers(min_value=1, max_value=6)


# --- laws ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(latencies, concurrencies, st.booleans())
def test_calls_in_flight_never_exceed_the_concurrency(lat: list[int], c: int, ordered: bool) -> None:
    svc = Service(latency=lambda i: lat[i])
    gen = apply_stream_policy(Policy(concurrency=c), source(range(len(lat))), svc.call, ordered=ordered)

    run_virtual(drain(gen))

    assert svc.max_in_flight <= c


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=30), concurrencies)
def test_the_concurrency_is_used_when_calls_wait(lat: list[int], c: int) -> None:
    svc = Service(latency=lambda i: lat[i])
    gen = apply_stream_policy(Policy(concurrency=c), source(range(len(lat))), svc.call)

    run_virtual(drain(gen))

    assert svc.max_in_flight == min(c, len(lat))


@settings(max_examples=60, deadline=None)
@given(latencies, concurrencies)
def test_ordered_output_is_the_input_order(lat: list[int], c: int) -> None:
    svc = Service(latency=lambda i: lat[i])
    gen = apply_stream_policy(Policy(concurrency=c), source(range(len(lat))), svc.call)

    assert run_virtual(drain(gen)) == [Ok(i) for i in range(len(lat))]


@settings(max_examples=60, deadline=None)
@given(latencies, concurrencies, st.lists(st.booleans(), max_size=30))
def test_unordered_output_accounts_for_every_input_exactly_once(lat: list[int], c: int, errs: list[bool]) -> None:
    inputs: list[Result[Any, ErrInfo]] = [
        Err(ErrInfo(ErrCode.BAD_INPUT, str(i))) if i < len(errs) and errs[i] else Ok(i) for i in range(len(lat))
    ]
    svc = Service(latency=lambda i: lat[i])
    gen = apply_stream_policy(Policy(concurrency=c), Source(inputs), svc.call, ordered=False)

    out = run_virtual(drain(gen))

    assert sorted(map(repr, out)) == sorted(map(repr, inputs))


@settings(max_examples=40, deadline=None)
@given(latencies, concurrencies)
def test_unordered_output_comes_in_completion_order(lat: list[int], c: int) -> None:
    svc = Service(latency=lambda i: lat[i])
    gen = apply_stream_policy(Policy(concurrency=c), source(range(len(lat))), svc.call, ordered=False)

    out = run_virtual(drain(gen))

    assert [r.unwrap() for r in out] == [v for _, v in svc.ends]


# --- timing on virtual time ---------------------------------------------------------


def test_calls_run_concurrently_up_to_the_bound() -> None:
    svc = Service(latency=lambda _: 1.0)
    gen = apply_stream_policy(Policy(concurrency=4), source(range(8)), svc.call)

    out = run_virtual(timed(gen))

    assert [t for t, _ in out] == [1.0] * 4 + [2.0] * 4


def test_an_unordered_fast_result_overtakes_a_slow_one() -> None:
    svc = Service(latency=lambda i: 5.0 if i == 0 else 1.0)
    gen = apply_stream_policy(Policy(concurrency=2), source(range(3)), svc.call, ordered=False)

    out = run_virtual(timed(gen))

    assert out == [(1.0, Ok(1)), (2.0, Ok(2)), (5.0, Ok(0))]


def test_an_ordered_fast_result_waits_for_the_slow_one_before_it() -> None:
    svc = Service(latency=lambda i: 5.0 if i == 0 else 1.0)
    gen = apply_stream_policy(Policy(concurrency=2), source(range(3)), svc.call)

    out = run_virtual(timed(gen))

    assert out == [(5.0, Ok(0)), (5.0, Ok(1)), (5.0, Ok(2))]


# --- input errors -------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 3])
def test_an_input_err_passes_through_untouched_in_place(c: int) -> None:
    svc = Service()
    inputs: list[Result[Any, ErrInfo]] = [Ok(0), Err(ERR), Ok(2)]
    tagged: list[Any] = []
    gen = apply_stream_policy(
        Policy(concurrency=c), Source(inputs), svc.call, on_error=lambda x, e: tagged.append(x) or e
    )

    out = run_virtual(drain(gen))

    assert out == inputs
    assert out[1].error is ERR  # type: ignore[union-attr]
    assert [v for _, v in svc.starts] == [0, 2]
    assert tagged == []


def test_input_errs_take_no_worker() -> None:
    svc = Service(latency=lambda _: 10.0)
    inputs: list[Result[Any, ErrInfo]] = [Ok("a"), Err(ERR), Err(ERR), Err(ERR), Ok("b")]
    gen = apply_stream_policy(Policy(concurrency=2), Source(inputs), svc.call, ordered=False)

    out = run_virtual(timed(gen))

    assert svc.starts == [(0.0, "a"), (0.0, "b")]
    assert [t for t, r in out if isinstance(r, Err)] == [0.0, 0.0, 0.0]


# --- failures of calls ----------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 3])
def test_on_error_enriches_a_failed_call_with_its_input(c: int) -> None:
    svc = Service(fail=lambda v: ErrInfo(ErrCode.SERVICE_SPECIFIC, "no") if v == 1 else None)
    gen = apply_stream_policy(
        Policy(concurrency=c), source(range(3)), svc.call, on_error=lambda x, e: e.with_meta(input=x)
    )

    out = run_virtual(drain(gen))

    assert out[0] == Ok(0) and out[2] == Ok(2)
    assert isinstance(out[1], Err) and out[1].error.meta["input"] == 1


@pytest.mark.parametrize("c", [1, 3])
def test_an_exception_from_the_plan_becomes_a_user_code_err(c: int) -> None:
    def f(x: int) -> AsyncPlan[int]:
        async def run() -> Result[int, ErrInfo]:
            if x == 1:
                raise ValueError("boom")
            return Ok(x)

        return run

    out = run_virtual(drain(apply_stream_policy(Policy(concurrency=c), source(range(3)), f)))

    assert out[0] == Ok(0) and out[2] == Ok(2)
    assert isinstance(out[1], Err) and out[1].error.code == ErrCode.USER_CODE
    assert "ValueError: boom" in out[1].error.msg


@pytest.mark.parametrize("c", [1, 3])
def test_an_exception_while_making_the_plan_becomes_a_user_code_err(c: int) -> None:
    def f(x: int) -> AsyncPlan[int]:
        raise KeyError(x)

    out = run_virtual(drain(apply_stream_policy(Policy(concurrency=c), source(range(2)), f)))

    assert [r.error.code for r in out if isinstance(r, Err)] == [ErrCode.USER_CODE] * 2


@pytest.mark.parametrize("c", [1, 3])
def test_a_failing_input_stream_raises_after_what_it_gave(c: int) -> None:
    svc = Service(latency=lambda _: 1.0)
    src = Source([Ok(i) for i in range(5)], fail_after=3)
    seen: list[Result[Any, ErrInfo]] = []

    async def main() -> None:
        with pytest.raises(RuntimeError, match="source broke"):
            async with contextlib.aclosing(apply_stream_policy(Policy(concurrency=c), src, svc.call)()) as it:
                async for r in it:
                    seen.append(r)
        assert others() == set()

    run_virtual(main())
    assert seen == [Ok(0), Ok(1), Ok(2)]


@pytest.mark.parametrize("c", [1, 3])
def test_a_fault_in_on_error_is_raised_by_the_stream(c: int) -> None:
    svc = Service(fail=lambda _: ErrInfo(ErrCode.SERVICE_SPECIFIC, "no"))

    def broken(x: int, e: ErrInfo) -> ErrInfo:
        raise LookupError("bug in the tagger")

    async def main() -> None:
        with pytest.raises(LookupError, match="bug in the tagger"):
            await drain(apply_stream_policy(Policy(concurrency=c), source(range(3)), svc.call, on_error=broken))
        assert others() == set()

    run_virtual(main())


# --- backpressure and the worker pool ---------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("c", [2, 5, 16])
def test_a_slow_consumer_stops_the_producer(c: int, ordered: bool) -> None:
    src = source(range(1000))
    svc = Service()

    async def main() -> int:
        async with contextlib.aclosing(
            apply_stream_policy(Policy(concurrency=c), src, svc.call, ordered=ordered)()
        ) as it:
            for _ in range(10):
                await anext(it)
            await asyncio.sleep(100.0)  # the consumer dawdles; the producer must not run ahead
            return src.pulled

    pulled = run_virtual(main())

    # Held at most: `window` = buffer (max(2, c)) + 2c, plus the one the reader has in hand.
    assert pulled - 10 <= max(2, c) + 2 * c + 1


def test_it_runs_on_a_fixed_pool_of_workers() -> None:
    svc = Service(latency=lambda _: 1.0)
    seen: list[int] = []

    async def main() -> None:
        async for _ in apply_stream_policy(Policy(concurrency=4), source(range(200)), svc.call)():
            seen.append(len(others()))

    run_virtual(main())

    assert max(seen) == 1 + 4  # the reader and four workers, whatever the stream's length


def test_concurrency_one_starts_no_task() -> None:
    svc = Service(latency=lambda _: 1.0)
    seen: list[int] = []

    async def main() -> None:
        async for _ in apply_stream_policy(Policy(), source(range(5)), svc.call)():
            seen.append(len(others()))

    run_virtual(main())

    assert seen == [0] * 5


def test_building_the_stream_starts_nothing_and_it_replays() -> None:
    src = source(range(6))
    svc = Service(latency=lambda _: 1.0)

    async def main() -> tuple[list[Any], list[Any]]:
        gen = apply_stream_policy(Policy(concurrency=3), src, svc.call)
        await asyncio.sleep(1.0)
        assert (src.pulled, svc.starts, others()) == (0, [], set())
        return await collect(gen), await collect(gen)

    first, second = run_virtual(main())

    assert first == second == [Ok(i) for i in range(6)]


# --- early close and cancellation ---------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("c", [1, 4])
def test_closing_early_cancels_every_call_and_task_and_closes_the_input(c: int, ordered: bool) -> None:
    svc = Service(latency=lambda i: 1.0 + i % 3)
    src = source(range(100))

    async def main() -> None:
        gen = apply_stream_policy(Policy(concurrency=c), src, svc.call, ordered=ordered)
        async with contextlib.aclosing(gen()) as it:
            async for r in it:
                if r.unwrap() >= 2:
                    break
        assert others() == set()

    run_virtual(main())

    assert src.closed
    assert svc.in_flight == 0
    assert svc.cancelled == len(svc.starts) - len(svc.ends)


@pytest.mark.parametrize("c", [1, 4])
def test_cancelling_the_consumer_cancels_everything(c: int) -> None:
    svc = Service(latency=lambda _: 10.0)
    src = source(range(100))

    async def consume() -> None:
        async with contextlib.aclosing(apply_stream_policy(Policy(concurrency=c), src, svc.call)()) as it:
            async for _ in it:
                pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(15.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert others() == set()

    run_virtual(main())

    assert src.closed
    assert svc.in_flight == 0 and svc.cancelled == c


def test_a_stream_dropped_without_closing_leaves_no_task_behind() -> None:
    svc = Service(latency=lambda _: 1.0)

    async def main() -> None:
        it = apply_stream_policy(Policy(concurrency=3), source(range(50)), svc.call)()
        await anext(it)
        await it.aclose()  # type: ignore[attr-defined]
        assert others() == set()

    run_virtual(main())


def test_cancelled_before_its_tasks_ever_ran_it_leaves_nothing_behind() -> None:
    async def main() -> None:
        it = apply_stream_policy(Policy(concurrency=3), source(range(5)), Service().call)()
        first = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0)  # the stream has made its tasks; they have not run yet
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await it.aclose()  # type: ignore[attr-defined]
        assert others() == set()

    run_virtual(main())


# --- the call-level policy ------------------------------------------------------------------


class RecordingRuntime(PolicyRuntime):
    """A runtime that remembers what each `apply` was asked."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.asked: list[dict[str, Any]] = []

    def apply(self, plan: AsyncPlan[Any], **kw: Any) -> AsyncPlan[Any]:
        self.asked.append(kw)
        return super().apply(plan, **kw)


def test_each_call_goes_through_the_runtime_with_its_item_and_rate_key() -> None:
    policy = Policy(concurrency=2, rate_limit=RateLimit(requests=1000, key="meta.tenant"))
    rt = RecordingRuntime(policy)
    items = [Item(f"id{i}", i, {"tenant": "ab"[i % 2]}) for i in range(4)]

    run_virtual(drain(apply_stream_policy(policy, async_gen_from_iterable(items), Service().call, runtime=rt)))

    assert sorted((a["item_id"], a["key"], a["cost"]) for a in rt.asked) == [
        ("id0", "a", 1),
        ("id1", "b", 1),
        ("id2", "a", 1),
        ("id3", "b", 1),
    ]


def test_the_cost_function_prices_each_call() -> None:
    policy = Policy(concurrency=2)
    rt = RecordingRuntime(policy)

    run_virtual(drain(apply_stream_policy(policy, source([3, 5]), Service().call, runtime=rt, cost=lambda x: x)))

    assert sorted(a["cost"] for a in rt.asked) == [3, 5]


def test_without_a_runtime_the_policy_s_retry_still_applies() -> None:
    failures = {0: 2}

    def flaky(x: int) -> AsyncPlan[int]:
        async def run() -> Result[int, ErrInfo]:
            if failures.get(x, 0):
                failures[x] -= 1
                return Err(ErrInfo(ErrCode.TRANSIENT, "503"))
            return Ok(x)

        return run

    policy = Policy(concurrency=2, retry=Retry(max_attempts=3, backoff=Backoff(kind="immediate")))

    assert run_virtual(drain(apply_stream_policy(policy, source(range(3)), flaky))) == [Ok(0), Ok(1), Ok(2)]


def test_an_item_backing_off_leaves_its_call_slot_to_the_others() -> None:
    svc = Service(latency=lambda _: 1.0)
    attempts: dict[int, int] = {}

    def first_attempt_of_0_fails(x: int) -> AsyncPlan[int]:
        call = svc.call(x)

        async def run() -> Result[int, ErrInfo]:
            res = await call()
            attempts[x] = attempts.get(x, 0) + 1
            return Err(ErrInfo(ErrCode.TRANSIENT, "503")) if x == 0 and attempts[x] == 1 else res

        return run

    retry = Retry(max_attempts=2, backoff=Backoff(kind="fixed", initial=10.0), jitter="none")
    policy = Policy(concurrency=2, retry=retry)
    gen = apply_stream_policy(policy, source(range(6)), first_attempt_of_0_fails, runtime=PolicyRuntime(policy))

    out = run_virtual(timed(gen))

    assert [r for _, r in out] == [Ok(i) for i in range(6)]
    assert svc.max_in_flight == 2
    assert max(t for t, v in svc.ends if v != 0) == 3.0  # the five others ran while 0 backed off
    assert out[0][0] == 12.0


def test_events_of_the_runtime_carry_the_stage_and_item() -> None:
    log = EventLog()
    policy = Policy(concurrency=2)
    rt = PolicyRuntime(policy, events=log, stage="embed")
    items = [Item(f"id{i}", i) for i in range(3)]

    run_virtual(drain(apply_stream_policy(policy, async_gen_from_iterable(items), Service().call, runtime=rt)))

    assert sorted(e.item_id or "" for e in log.of("success")) == ["id0", "id1", "id2"]
    assert {e.stage for e in log.events} == {"embed"}


def test_a_non_positive_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="buffer must be >= 1 item, got 0"):
        apply_stream_policy(Policy(concurrency=2), source(range(3)), Service().call, buffer=0)
