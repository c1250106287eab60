"""`apply_batch_policy`: batches by size and max_wait, flushes, per-item results, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result, async_gen_from_iterable
from funcpipe.policy import Batch, EventLog, Policy, PolicyRuntime
from funcpipe.policy.batching import WaitingItems
from funcpipe.policy.models import RateLimit
from funcpipe.policy.stream import apply_batch_policy
from funcpipe.testing import run_virtual

from ._stream_support import ERR, Service, Source, drain, others, source, timed


def arrivals_of(gaps: Sequence[int]) -> list[float]:
    """Arrival times from the gaps between them (whole seconds, so never on a half-second due)."""
    t, out = 0.0, []
    for g in gaps:
        t += g
        out.append(t)
    return out


# --- WaitingItems: when a batch may leave --------------------------------------------------


def test_a_full_batch_may_leave_at_once() -> None:
    waiting: WaitingItems[int] = WaitingItems(2, max_wait=5.0)
    waiting.push(0, now=0.0)
    assert waiting.ready(0.0) is None
    waiting.push(1, now=0.0)

    assert waiting.ready(0.0) == "full"


def test_a_partial_batch_may_leave_max_wait_after_its_oldest_item() -> None:
    waiting: WaitingItems[int] = WaitingItems(10, max_wait=5.0)
    waiting.push(0, now=1.0)
    waiting.push(1, now=3.0)

    assert waiting.due_at() == 6.0
    assert [waiting.ready(t) for t in (5.9, 6.0)] == [None, "max_wait"]


def test_a_flush_lets_a_partial_batch_leave_and_nothing_leaves_an_empty_buffer() -> None:
    waiting: WaitingItems[int] = WaitingItems(10)
    assert waiting.ready(0.0, flush=True) is None
    waiting.push(0)

    assert (waiting.ready(1e9), waiting.ready(0.0, flush=True)) == (None, "flush")


def test_take_hands_out_at_most_size_items_oldest_first() -> None:
    waiting: WaitingItems[int] = WaitingItems(3)
    for i in range(5):
        waiting.push(i)

    assert (waiting.take(), waiting.take(), len(waiting)) == ([0, 1, 2], [3, 4], 0)


def test_a_fair_buffer_takes_keys_in_turn_and_times_its_oldest_item() -> None:
    waiting: WaitingItems[str] = WaitingItems(4, max_wait=1.0, fair=True)
    for i, (k, t) in enumerate([("a", 2.0), ("a", 2.0), ("a", 2.0), ("b", 3.0), ("b", 3.0)]):
        waiting.push(f"{k}{i}", k, now=t)

    assert (waiting.waiting("a"), waiting.due_at()) == (3, 3.0)
    assert waiting.take() == ["a0", "b3", "a1", "b4"]


@pytest.mark.parametrize(
    ("size", "max_wait", "message"),
    [(0, None, "a batch size must be >= 1, got 0"), (1, -1.0, "max_wait cannot be negative, got -1.0")],
)
def test_a_bad_size_or_wait_is_refused(size: int, max_wait: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        WaitingItems(size, max_wait)


# --- laws ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3), max_size=40),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([None, 0.5, 1.5, 4.5]),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=3),
)
def test_batching_partitions_the_stream_in_order(
    gaps: list[int], size: int, max_wait: float | None, c: int, latency: int
) -> None:
    svc = Service(latency=lambda _: latency)
    n = len(gaps)
    gen = apply_batch_policy(
        Policy(concurrency=c), source(range(n), arrivals_of(gaps)), svc.call_batch, Batch(size=size, max_wait=max_wait)
    )

    out = run_virtual(drain(gen))

    assert out == [Ok(i) for i in range(n)]
    assert [i for b in svc.batches for i in b] == list(range(n))
    assert all(1 <= len(b) <= size for b in svc.batches)
    assert svc.max_in_flight <= c


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
    st.integers(min_value=2, max_value=6),
    st.sampled_from([0.5, 1.5, 4.5]),
)
def test_with_a_free_worker_a_batch_leaves_when_full_or_max_wait_after_its_first_item(
    gaps: list[int], size: int, max_wait: float
) -> None:
    arrivals = arrivals_of(gaps)
    svc = Service()
    gen = apply_batch_policy(
        Policy(concurrency=8), source(range(len(gaps)), arrivals), svc.call_batch, Batch(size=size, max_wait=max_wait)
    )

    run_virtual(drain(gen))

    for k, (start, batch) in enumerate(svc.starts):
        first, last = arrivals[batch[0]], arrivals[batch[-1]]
        is_last = k == len(svc.starts) - 1
        if len(batch) == size:
            assert start == last  # full: sent the moment its last item came
        elif not is_last:
            assert start == first + max_wait  # partial: sent exactly max_wait after its first item
        else:
            assert start == min(first + max_wait, arrivals[-1])  # the end of the stream flushes it
        if not is_last:
            assert arrivals[svc.starts[k + 1][1][0]] >= start  # it took everything that had arrived


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(min_value=0, max_value=2)), max_size=40),
    st.integers(min_value=1, max_value=5),
    st.sampled_from([None, 0.5, 2.5]),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
    st.booleans(),
)
def test_every_input_comes_out_exactly_once_whatever_the_policy(
    spec: list[tuple[str, bool, int]], size: int, max_wait: float | None, c: int, fair: bool, ordered: bool
) -> None:
    inputs: list[Result[Any, ErrInfo]] = [
        Err(ErrInfo(ErrCode.BAD_INPUT, str(i))) if bad else Ok((k, i)) for i, (k, bad, _) in enumerate(spec)
    ]
    arrivals = arrivals_of([gap for _, _, gap in spec])
    svc = Service(latency=lambda b: len(b) % 3)
    gen = apply_batch_policy(
        Policy(concurrency=c),
        Source(inputs, arrivals),
        svc.call_batch,
        Batch(size=size, max_wait=max_wait),
        key=(lambda x: x[0]) if fair else None,
        ordered=ordered,
    )

    out = run_virtual(drain(gen))

    assert sorted(map(repr, out)) == sorted(map(repr, inputs))
    assert svc.max_in_flight <= c
    assert all(1 <= len(b) <= size for b in svc.batches)
    if ordered and not fair:
        assert out == inputs
    if ordered and fair:
        for k in "abc":
            assert [r for r in out if isinstance(r, Ok) and r.value[0] == k] == [
                r for r in inputs if isinstance(r, Ok) and r.value[0] == k
            ]


# --- timing on virtual time -------------------------------------------------------------


def test_a_partial_batch_takes_what_arrived_by_max_wait() -> None:
    svc = Service()
    gen = apply_batch_policy(Policy(), source(range(5), [0, 1, 2, 3, 4]), svc.call_batch, Batch(size=10, max_wait=2.5))

    run_virtual(drain(gen))

    assert svc.starts == [(2.5, (0, 1, 2)), (4.0, (3, 4))]


def test_full_batches_leave_at_once() -> None:
    svc = Service()
    gen = apply_batch_policy(Policy(), source(range(7)), svc.call_batch, Batch(size=3, max_wait=60))

    run_virtual(drain(gen))

    assert svc.starts == [(0.0, (0, 1, 2)), (0.0, (3, 4, 5)), (0.0, (6,))]


def test_without_max_wait_a_partial_batch_waits_for_the_end_of_the_stream() -> None:
    svc = Service()
    gen = apply_batch_policy(Policy(), source(range(3), [0, 10, 50]), svc.call_batch, Batch(size=5))

    run_virtual(drain(gen))

    assert svc.starts == [(50.0, (0, 1, 2))]


def test_shutdown_flushes_a_partial_batch_at_once() -> None:
    svc = Service()
    stop = asyncio.Event()
    src = source(range(3), [0, 1, 100])

    async def main() -> list[tuple[float, Result[Any, ErrInfo]]]:
        async def trip() -> None:
            await asyncio.sleep(5.0)
            stop.set()

        trigger = asyncio.create_task(trip())
        gen = apply_batch_policy(Policy(), src, svc.call_batch, Batch(size=10, max_wait=60), shutdown=stop)
        out = await timed(gen)
        await trigger
        return out

    out = run_virtual(main())

    assert svc.starts == [(5.0, (0, 1)), (100.0, (2,))]
    assert out == [(5.0, Ok(0)), (5.0, Ok(1)), (100.0, Ok(2))]


def test_a_shutdown_already_set_sends_every_item_without_waiting() -> None:
    svc = Service()
    stop = asyncio.Event()
    stop.set()
    gen = apply_batch_policy(
        Policy(), source(range(2), [0, 1]), svc.call_batch, Batch(size=10, max_wait=60), shutdown=stop
    )

    run_virtual(drain(gen))

    assert svc.starts == [(0.0, (0,)), (1.0, (1,))]


def test_while_every_worker_is_busy_a_due_batch_keeps_filling() -> None:
    svc = Service(latency=lambda b: 10.0 if b == (0,) else 0.0)
    gen = apply_batch_policy(
        Policy(), source(range(6), [0, 1.5, 2.5, 3.5, 4.5, 5.5]), svc.call_batch, Batch(size=4, max_wait=1)
    )

    run_virtual(drain(gen))

    assert svc.starts == [(1.0, (0,)), (11.0, (1, 2, 3, 4)), (11.0, (5,))]


def test_batches_run_concurrently_up_to_the_bound_and_come_out_in_order() -> None:
    svc = Service(latency=lambda b: 5.0 if b[0] == 0 else 1.0)
    gen = apply_batch_policy(Policy(concurrency=2), source(range(6)), svc.call_batch, Batch(size=2))

    out = run_virtual(timed(gen))

    assert svc.starts == [(0.0, (0, 1)), (0.0, (2, 3)), (1.0, (4, 5))]
    assert svc.max_in_flight == 2
    assert out == [(5.0, Ok(i)) for i in range(6)]


def test_unordered_batches_come_out_as_they_finish() -> None:
    svc = Service(latency=lambda b: 5.0 if b[0] == 0 else 1.0)
    gen = apply_batch_policy(Policy(concurrency=2), source(range(4)), svc.call_batch, Batch(size=2), ordered=False)

    out = run_virtual(timed(gen))

    assert out == [(1.0, Ok(2)), (1.0, Ok(3)), (5.0, Ok(0)), (5.0, Ok(1))]


# --- results per item -------------------------------------------------------------------


def test_per_item_results_map_back_to_their_items() -> None:
    svc = Service(fail=lambda v: ErrInfo(ErrCode.BAD_INPUT, "odd") if isinstance(v, int) and v % 2 else None)
    gen = apply_batch_policy(
        Policy(), source(range(4)), svc.call_batch, Batch(size=4), on_error=lambda x, e: e.with_meta(input=x)
    )

    out = run_virtual(drain(gen))

    assert out[0] == Ok(0) and out[2] == Ok(2)
    assert [r.error.meta["input"] for r in out if isinstance(r, Err)] == [1, 3]


def test_a_batch_level_err_fails_each_of_its_items_with_it() -> None:
    down = ErrInfo(ErrCode.TRANSIENT, "503")
    svc = Service(fail=lambda v: down if isinstance(v, tuple) and 0 in v else None)
    gen = apply_batch_policy(
        Policy(), source(range(4)), svc.call_batch, Batch(size=2), on_error=lambda x, e: e.with_meta(input=x)
    )

    out = run_virtual(drain(gen))

    assert [(r.error.code, r.error.msg, r.error.meta["input"]) for r in out[:2]] == [  # type: ignore[union-attr]
        ("TRANSIENT", "503", 0),
        ("TRANSIENT", "503", 1),
    ]
    assert out[2:] == [Ok(2), Ok(3)]


def test_a_result_list_of_the_wrong_length_fails_each_item() -> None:
    def short(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            return Ok([Ok(v) for v in values[1:]])

        return run

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(3)), short, Batch(size=3))))

    assert [r.error.code for r in out] == [ErrCode.SERVICE_SPECIFIC] * 3  # type: ignore[union-attr]
    assert out[0].error.msg == "the batch call returned 2 results for 3 items"  # type: ignore[union-attr]


def test_a_batch_value_that_is_no_list_fails_each_item() -> None:
    def odd(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        async def run() -> Result[Any, ErrInfo]:
            return Ok(42)

        return run

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(2)), odd, Batch(size=2))))

    assert [r.error.code for r in out] == [ErrCode.SERVICE_SPECIFIC] * 2  # type: ignore[union-attr]


def test_an_exception_from_the_batch_call_fails_each_item_as_user_code() -> None:
    def broken(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        raise ZeroDivisionError

    out = run_virtual(drain(apply_batch_policy(Policy(concurrency=2), source(range(3)), broken, Batch(size=2))))

    assert [r.error.code for r in out] == [ErrCode.USER_CODE] * 3  # type: ignore[union-attr]


@pytest.mark.parametrize("c", [1, 3])
def test_an_input_err_keeps_its_place_and_takes_no_place_in_a_batch(c: int) -> None:
    svc = Service()
    inputs: list[Result[Any, ErrInfo]] = [Ok(0), Err(ERR), Ok(1), Ok(2), Err(ERR)]
    gen = apply_batch_policy(Policy(concurrency=c), Source(inputs), svc.call_batch, Batch(size=2))

    out = run_virtual(drain(gen))

    assert out == [Ok(0), Err(ERR), Ok(1), Ok(2), Err(ERR)]
    assert svc.batches == [(0, 1), (2,)]


def test_an_unordered_input_err_comes_out_at_once() -> None:
    svc = Service(latency=lambda _: 10.0)
    inputs: list[Result[Any, ErrInfo]] = [Ok(0), Err(ERR), Ok(1)]
    gen = apply_batch_policy(Policy(), Source(inputs), svc.call_batch, Batch(size=2), ordered=False)

    out = run_virtual(timed(gen))

    assert out == [(0.0, Err(ERR)), (10.0, Ok(0)), (10.0, Ok(1))]


def test_a_flood_of_input_errs_behind_a_waiting_item_does_not_deadlock() -> None:
    inputs: list[Result[Any, ErrInfo]] = [Ok(0), *[Err(ERR)] * 500, Ok(1)]
    svc = Service()
    gen = apply_batch_policy(Policy(concurrency=2), Source(inputs), svc.call_batch, Batch(size=8))

    out = run_virtual(drain(gen))

    assert out == inputs


def test_a_fault_in_on_error_is_raised_by_the_stream() -> None:
    svc = Service(fail=lambda _: ErrInfo(ErrCode.SERVICE_SPECIFIC, "no"))

    def broken(x: int, e: ErrInfo) -> ErrInfo:
        raise LookupError("bug in the tagger")

    async def main() -> None:
        gen = apply_batch_policy(
            Policy(concurrency=2), source(range(5)), svc.call_batch, Batch(size=2), on_error=broken
        )
        with pytest.raises(LookupError, match="bug in the tagger"):
            await drain(gen)
        assert others() == set()

    run_virtual(main())


# --- the call-level policy, events, cleanup ---------------------------------------------


class RecordingRuntime(PolicyRuntime):
    """A runtime that remembers what each `apply` was asked."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.asked: list[dict[str, Any]] = []

    def apply(self, plan: AsyncPlan[Any], **kw: Any) -> AsyncPlan[Any]:
        self.asked.append(kw)
        return super().apply(plan, **kw)


def test_the_cost_function_prices_each_batch() -> None:
    rt = RecordingRuntime(Policy())
    gen = apply_batch_policy(Policy(), source(range(5)), Service().call_batch, Batch(size=2), runtime=rt, cost=sum)

    run_virtual(drain(gen))

    assert [a["cost"] for a in rt.asked] == [1, 5, 4]


def test_an_items_priced_rate_limit_charges_a_batch_its_item_count() -> None:
    policy = Policy(rate_limit=RateLimit(requests=100, cost="items", key="meta.tenant"))
    rt = RecordingRuntime(policy)
    items = [Item(f"id{i}", i, {"tenant": "t"}) for i in range(5)]
    gen = apply_batch_policy(policy, async_gen_from_iterable(items), Service().call_batch, Batch(size=2), runtime=rt)

    run_virtual(drain(gen))

    assert [(a["cost"], a["item_id"], a["key"]) for a in rt.asked] == [
        (2, "id0", "t"),
        (2, "id2", "t"),
        (1, "id4", "t"),
    ]


def test_each_batch_sent_is_an_event() -> None:
    log = EventLog()
    items = [Item(f"id{i}", i) for i in range(5)]
    gen = apply_batch_policy(
        Policy(),
        async_gen_from_iterable(items),
        Service().call_batch,
        Batch(size=2),
        events=log,
        stage="embed",
    )

    run_virtual(drain(gen))

    assert [(e.stage, e.item_id, e.data) for e in log.of("batch")] == [
        ("embed", "id0", {"items": 2, "reason": "full"}),
        ("embed", "id2", {"items": 2, "reason": "full"}),
        ("embed", "id4", {"items": 1, "reason": "flush"}),
    ]


@pytest.mark.parametrize("c", [1, 3])
def test_closing_early_leaves_no_task_and_closes_the_input(c: int) -> None:
    svc = Service(latency=lambda _: 1.0)
    src = source(range(100), [i * 0.25 for i in range(100)])

    async def main() -> None:
        gen = apply_batch_policy(Policy(concurrency=c), src, svc.call_batch, Batch(size=4, max_wait=0.6))
        async with contextlib.aclosing(gen()) as it:
            async for r in it:
                if r.unwrap() >= 9:
                    break
        assert others() == set()

    run_virtual(main())

    assert src.closed
    assert svc.in_flight == 0


def test_a_slow_consumer_stops_the_producer() -> None:
    src = source(range(1000))

    async def main() -> int:
        gen = apply_batch_policy(Policy(concurrency=2), src, Service().call_batch, Batch(size=8))
        async with contextlib.aclosing(gen()) as it:
            await anext(it)
            await asyncio.sleep(100.0)
            return src.pulled

    # window: buffer (8 * max(2, 2)) + 2 * 2 * 8, and one item in the reader's hand
    assert run_virtual(main()) - 1 <= 16 + 32 + 1


def test_a_non_positive_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="buffer must be >= 1 item, got -1"):
        apply_batch_policy(Policy(), source(range(3)), Service().call_batch, Batch(size=2), buffer=-1)


# --- WaitingItems: batches bounded by weight (an embedding request's tokens) ------------------


def test_a_batch_is_full_once_its_items_weigh_max_weight() -> None:
    waiting: WaitingItems[int] = WaitingItems(100, max_wait=5.0, weight=lambda v: v, max_weight=10)
    for v in (4, 5):
        waiting.push(v)
    assert waiting.ready(0.0) is None
    waiting.push(3)

    assert waiting.ready(0.0) == "full"
    assert waiting.take() == [4, 5]
    assert (len(waiting), waiting.ready(0.0)) == (1, None)


def test_an_item_heavier_than_max_weight_leaves_alone() -> None:
    waiting: WaitingItems[int] = WaitingItems(100, weight=lambda v: v, max_weight=10)
    for v in (2, 30, 1):
        waiting.push(v)

    assert [waiting.take(), waiting.take(), waiting.take()] == [[2], [30], [1]]


def test_the_item_held_back_keeps_its_arrival_time_for_max_wait() -> None:
    waiting: WaitingItems[int] = WaitingItems(100, max_wait=5.0, weight=lambda v: v, max_weight=10)
    waiting.push(6, now=1.0)
    waiting.push(6, now=2.0)
    assert waiting.take() == [6]

    assert waiting.due_at() == 7.0


@settings(max_examples=200, derandomize=True)
@given(
    weights=st.lists(st.integers(1, 40), max_size=60),
    size=st.integers(1, 12),
    max_weight=st.integers(1, 60),
    fair=st.booleans(),
)
def test_weighed_batches_keep_every_item_once_in_order_and_within_both_bounds(
    weights: list[int], size: int, max_weight: int, fair: bool
) -> None:
    waiting: WaitingItems[tuple[int, int]] = WaitingItems(size, fair=fair, weight=lambda v: v[1], max_weight=max_weight)
    for i, w in enumerate(weights):
        waiting.push((i, w), key="k")
    batches = []
    while len(waiting):
        assert waiting.ready(0.0, flush=True) is not None
        batches.append(waiting.take())

    assert [v for b in batches for v in b] == list(enumerate(weights))
    for b in batches:
        assert 1 <= len(b) <= size
        assert len(b) == 1 or sum(w for _, w in b) <= max_weight or size == 1
    # Greedy: a batch ends early only because the next item would not fit.
    for b, nxt in itertools.pairwise(batches):
        if len(b) < size and size > 1:
            assert sum(w for _, w in b) + nxt[0][1] > max_weight


async def test_a_weighed_batch_stream_sends_each_batch_within_max_tokens() -> None:
    sent: list[list[int]] = []

    def call(items: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            sent.append(list(items))
            return Ok([Ok(i) for i in items])

        return run

    async def main() -> list[Result[int, ErrInfo]]:
        stream = apply_batch_policy(
            Policy(),
            async_gen_from_iterable([3, 3, 3, 3, 9, 1]),
            call,
            Batch(size=4, max_tokens=7),
            weight=lambda v: v,
        )
        return await drain(stream)

    assert await main() == [Ok(v) for v in (3, 3, 3, 3, 9, 1)]
    assert sent == [[3, 3], [3, 3], [9], [1]]
