"""Poison items: a failed batch is split until only the items that fail alone fail."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy import Batch, CircuitBreaker, EventLog, Policy, PolicyRuntime, RateLimit, Retry
from funcpipe.policy.batching import WHOLE_CALL, split_bound, split_codes
from funcpipe.policy.models import Backoff
from funcpipe.policy.stream import apply_batch_policy
from funcpipe.testing import VirtualClock, run_virtual

from ._stream_support import drain, source


@dataclass
class Poisoned:
    """A batch service that refuses any batch holding a poison item (with ``code``), else answers each."""

    poison: frozenset[int]
    code: str = ErrCode.DB_ERROR
    latency: float = 0.0
    calls: list[tuple[int, ...]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)

    def __call__(self, values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        batch = tuple(values)

        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            self.calls.append(batch)
            self.starts.append(asyncio.get_running_loop().time())
            if self.latency:
                await asyncio.sleep(self.latency)
            bad = [v for v in batch if v in self.poison]
            if bad:
                return Err(ErrInfo(self.code, f"item {bad[0]} is poison" if len(batch) == 1 else "a poison item"))
            return Ok([Ok(v * 10) for v in batch])

        return run

    def successes(self) -> list[int]:
        return [v for batch in self.calls if not self.poison.intersection(batch) for v in batch]


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 80),
    size=st.integers(1, 32),
    concurrency=st.integers(1, 3),
    data=st.data(),
)
def test_exactly_the_poison_items_fail_and_every_other_succeeds_once(
    n: int, size: int, concurrency: int, data: st.DataObject
) -> None:
    poison = frozenset(data.draw(st.sets(st.integers(0, n - 1), max_size=n), label="poison"))
    code = data.draw(st.sampled_from(sorted(split_codes(Policy()))), label="code")
    svc = Poisoned(poison, code, latency=data.draw(st.sampled_from([0.0, 1.0]), label="latency"))
    gen = apply_batch_policy(
        Policy(concurrency=concurrency),
        source(range(n)),
        svc,
        Batch(size=size),
        on_error=lambda v, e: e.with_meta(input=v),
    )

    out = run_virtual(drain(gen))

    assert len(out) == n
    for i, r in enumerate(out):  # in order, each result on its own item
        if i in poison:
            assert isinstance(r, Err)
            assert (r.error.code, r.error.msg, r.error.meta["input"]) == (code, f"item {i} is poison", i)
        else:
            assert r == Ok(i * 10)
    assert sorted(svc.successes()) == sorted(set(range(n)) - poison)  # exactly once each
    bound = sum(split_bound(len(c), len(poison.intersection(c))) for c in chunks(n, size))
    assert len(svc.calls) <= bound


def test_the_bound_is_about_two_calls_per_poison_item_per_level() -> None:
    assert split_bound(1, 1) == 1
    assert split_bound(16, 0) == 1
    assert split_bound(16, 1) == 1 + 2 * 4
    assert split_bound(16, 2) == 1 + 2 * 2 * 4
    assert split_bound(3, 3) == 5  # never more than the whole tree


def test_one_poison_item_in_64_costs_13_calls_and_emits_6_split_events() -> None:
    events = EventLog()
    svc = Poisoned(frozenset({37}))
    gen = apply_batch_policy(Policy(), source(range(64)), svc, Batch(size=64), events=events, stage="store")

    out = run_virtual(drain(gen))

    assert [i for i, r in enumerate(out) if isinstance(r, Err)] == [37]
    assert len(svc.calls) == 13
    splits = events.of("split")
    assert [e.data["items"] for e in splits] == [64, 32, 16, 8, 4, 2]
    assert {(e.stage, e.data["code"]) for e in splits} == {("store", ErrCode.DB_ERROR)}


def test_each_part_is_a_call_under_the_policy_rate_limit() -> None:
    svc = Poisoned(frozenset({2}))
    policy = Policy(rate_limit=RateLimit(requests=1, per=1.0))
    gen = apply_batch_policy(policy, source(range(4)), svc, Batch(size=4), clock=VirtualClock())

    out = run_virtual(drain(gen))

    assert [isinstance(r, Err) for r in out] == [False, False, True, False]
    # 4 -> [0, 1] ok, [2, 3] -> [2] poison, [3] ok: five calls, one a second.
    assert svc.calls == [(0, 1, 2, 3), (0, 1), (2, 3), (2,), (3,)]
    assert svc.starts == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_one_poison_item_does_not_open_a_default_breaker() -> None:
    events = EventLog()
    svc = Poisoned(frozenset({5}), ErrCode.SERVICE_SPECIFIC)  # counted by the breaker's default `on`
    policy = Policy(circuit_breaker=CircuitBreaker())
    runtime = PolicyRuntime(policy, events=events, stage="embed")
    gen = apply_batch_policy(policy, source(range(64)), svc, Batch(size=64), runtime=runtime)

    out = run_virtual(drain(gen))

    assert [i for i, r in enumerate(out) if isinstance(r, Err)] == [5]
    assert events.of("breaker") == []
    # The batch and the poison's own call are the failures the breaker saw.
    assert [e.code for e in events.of("failure")] == [ErrCode.SERVICE_SPECIFIC] * 2


def test_a_retried_code_is_not_split() -> None:
    svc = Poisoned(frozenset({1}), ErrCode.TRANSIENT)
    policy = Policy(retry=Retry(max_attempts=2, backoff=Backoff(kind="immediate")))

    out = run_virtual(drain(apply_batch_policy(policy, source(range(4)), svc, Batch(size=4))))

    assert [r.error.code for r in out] == [ErrCode.TRANSIENT] * 4  # type: ignore[union-attr]
    assert svc.calls == [(0, 1, 2, 3)] * 2


def test_a_code_listed_in_retry_on_is_not_split_either() -> None:
    policy = Policy(retry=Retry(on=("DB_ERROR", "TRANSIENT")))
    assert ErrCode.DB_ERROR not in split_codes(policy)
    assert ErrCode.BAD_INPUT in split_codes(policy)


def test_a_service_down_code_met_while_splitting_stops_the_search() -> None:
    calls: list[tuple[int, ...]] = []

    def fn(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        batch = tuple(values)

        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            calls.append(batch)
            if len(calls) == 1:
                return Err(ErrInfo(ErrCode.BAD_INPUT, "one bad item"))
            return Err(ErrInfo(ErrCode.AUTH, "key revoked"))  # from now on, the service refuses us

        return run

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(8)), fn, Batch(size=8))))

    assert [r.error.code for r in out] == [ErrCode.AUTH] * 8  # type: ignore[union-attr]
    assert calls == [tuple(range(8)), (0, 1, 2, 3)]


def test_an_error_marked_whole_call_is_not_split() -> None:
    calls: list[tuple[int, ...]] = []

    def fn(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        calls.append(tuple(values))

        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, "store cannot be prepared", {WHOLE_CALL: True}))

        return run

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(4)), fn, Batch(size=4))))

    assert [r.error.msg for r in out] == ["store cannot be prepared"] * 4  # type: ignore[union-attr]
    assert len(calls) == 1


def test_split_false_fails_the_batch_alike() -> None:
    svc = Poisoned(frozenset({0}))

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(4)), svc, Batch(size=4), split=False)))

    assert [r.error.msg for r in out] == ["a poison item"] * 4  # type: ignore[union-attr]
    assert len(svc.calls) == 1


def test_an_exception_in_one_part_fails_only_its_item_as_user_code() -> None:
    def fn(values: Sequence[int]) -> AsyncPlan[Sequence[Result[int, ErrInfo]]]:
        if 3 in values:
            raise ValueError("cannot encode item 3")

        async def run() -> Result[Sequence[Result[int, ErrInfo]], ErrInfo]:
            return Ok([Ok(v) for v in values])

        return run

    out = run_virtual(drain(apply_batch_policy(Policy(), source(range(6)), fn, Batch(size=6))))

    assert [r.error.code if isinstance(r, Err) else r.value for r in out] == [0, 1, 2, ErrCode.USER_CODE, 4, 5]
