"""Fairness: deficit round robin across keys, on its own and in front of a stage's workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from random import Random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import Item, Ok, async_gen_from_iterable, async_gen_gather
from funcpipe.policy import Batch, Fairness, Policy
from funcpipe.policy.fairness import DeficitRoundRobin, field_key, resolve_field
from funcpipe.policy.stream import apply_batch_policy, apply_stream_policy
from funcpipe.testing import run_virtual

from ._stream_support import Service, drain, jain, source, timed

keyed = st.lists(st.tuples(st.sampled_from("abcd"), st.integers()), max_size=60)


def tenant(x: tuple[str, int]) -> str:
    return x[0]


# --- DeficitRoundRobin -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(keyed, st.dictionaries(st.sampled_from("abcd"), st.floats(min_value=0.1, max_value=10)))
def test_every_item_pushed_is_popped_once_in_its_key_s_order(
    pushes: list[tuple[str, int]], weights: dict[str, float]
) -> None:
    drr: DeficitRoundRobin[int] = DeficitRoundRobin(weights)
    for k, v in pushes:
        drr.push(k, v)

    popped = [drr.pop() for _ in range(len(drr))]

    assert sorted(popped) == sorted(pushes)
    for k in "abcd":
        assert [v for kk, v in popped if kk == k] == [v for kk, v in pushes if kk == k]
    assert len(drr) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.25, max_value=8), min_size=2, max_size=5))
def test_backlogged_keys_share_pops_by_weight_within_one_quantum(ws: list[float]) -> None:
    weights = {f"k{i}": w for i, w in enumerate(ws)}
    drr: DeficitRoundRobin[int] = DeficitRoundRobin(weights)
    for k in weights:
        for i in range(2000):
            drr.push(k, i)
    n = 1000  # no key can run dry: none gets more than 1000 of 1000 pops

    counts = Counter(drr.pop()[0] for _ in range(n))

    total = sum(ws)
    for k, w in weights.items():
        assert abs(counts[k] - n * w / total) <= drr.quantum(k) + 1


def test_keys_take_turns_in_the_order_they_first_arrived() -> None:
    drr: DeficitRoundRobin[int] = DeficitRoundRobin()
    for k, v in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("c", 2)]:
        drr.push(k, v)

    assert [drr.pop() for _ in range(6)] == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("c", 2), ("a", 3)]


def test_a_heavier_key_is_served_its_weight_per_turn() -> None:
    drr: DeficitRoundRobin[int] = DeficitRoundRobin({"a": 3})
    for i in range(8):
        drr.push("a", i)
        drr.push("b", i)

    assert "".join(drr.pop()[0] for _ in range(8)) == "aaabaaab"


def test_an_emptied_key_forfeits_its_credit() -> None:
    drr: DeficitRoundRobin[int] = DeficitRoundRobin({"a": 4})
    drr.push("a", 0)
    drr.push("b", 0)
    assert drr.pop() == ("a", 0)  # a leaves the round with 3 unused
    for i in range(1, 9):
        drr.push("a", i)
        drr.push("b", i)

    assert "".join(drr.pop()[0] for _ in range(6)) == "baaaab"  # 4 a's on its turn, not 7


def test_popping_an_empty_scheduler_raises() -> None:
    with pytest.raises(IndexError):
        DeficitRoundRobin[int]().pop()


@pytest.mark.parametrize("w", [0.0, -1.0, float("inf"), float("nan")])
def test_a_weight_must_be_a_positive_number(w: float) -> None:
    with pytest.raises(ValueError, match="fairness weight for 'a' must be a positive number"):
        DeficitRoundRobin({"a": w})


@pytest.mark.parametrize("w", [0.0, -1.0, float("inf"), float("nan")])
def test_a_policy_with_a_bad_weight_is_refused_when_validated(w: float) -> None:
    with pytest.raises(ValueError, match=r"weights\.a"):
        Policy(concurrency=2, fairness=Fairness(key="meta.tenant", weights={"a": w}))


# --- keys from item fields -------------------------------------------------------------------


def test_a_field_path_reads_meta_and_attributes() -> None:
    item = Item("i1", {"lang": "fr"}, {"tenant": "acme", "org": {"id": 7}}, source_id="s1")

    assert [field_key(p)(item) for p in ("meta.tenant", "meta.org.id", "source_id", "data.lang")] == [
        "acme",
        "7",
        "s1",
        "fr",
    ]


def test_items_without_the_field_share_the_empty_key() -> None:
    assert field_key("meta.tenant")(Item("i1", None)) == ""
    assert resolve_field(Item("i1", None), "meta.tenant.name") is None


@pytest.mark.parametrize("path", ["", "meta.", ".tenant", "meta..tenant"])
def test_a_malformed_field_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="a field path is dotted names"):
        field_key(path)


# --- in front of the workers, on virtual time ------------------------------------------------------


def _backlogged_prefix(starts: list[tuple[float, Any]], sizes: Counter[str]) -> Counter[str]:
    """Starts per key up to the first moment some key has nothing left waiting."""
    seen: Counter[str] = Counter()
    for _, (k, _i) in starts:
        seen[k] += 1
        if seen[k] == sizes[k]:
            break
    return seen


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcd"), st.integers(min_value=10, max_value=40), min_size=2),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=3),
)
def test_equal_keys_get_equal_service_while_backlogged(sizes: dict[str, int], rng: Random, c: int) -> None:
    keys = [k for k, n in sizes.items() for _ in range(n)]
    rng.shuffle(keys)  # any arrival order
    items = [(k, i) for i, k in enumerate(keys)]
    svc = Service(latency=lambda _: 1.0)
    gen = apply_stream_policy(Policy(concurrency=c), source(items), svc.call, key=tenant, buffer=2 * len(items))

    run_virtual(drain(gen))

    served = _backlogged_prefix(svc.starts, Counter(keys))
    assert jain(list(served.values())) >= 0.95


def test_a_skewed_burst_is_served_in_equal_shares() -> None:
    items = [("a", i) for i in range(100)] + [("b", i) for i in range(30)] + [("c", i) for i in range(10)]
    svc = Service(latency=lambda _: 1.0)
    gen = apply_stream_policy(Policy(), source(items), svc.call, key=tenant, buffer=256)

    run_virtual(drain(gen))

    assert Counter(k for t, (k, _) in svc.starts if t < 30) == {"a": 10, "b": 10, "c": 10}


def test_weights_are_honoured_within_five_percent() -> None:
    items = [Item(f"{k}{i}", i, {"tenant": k}) for i in range(600) for k in "ab"]
    svc = Service(latency=lambda _: 1.0)
    policy = Policy(concurrency=2, fairness=Fairness(key="meta.tenant", weights={"a": 3, "b": 1}))
    gen = apply_stream_policy(policy, async_gen_from_iterable(items), svc.call, buffer=2048)

    run_virtual(drain(gen))

    share = Counter(v.meta["tenant"] for _, v in svc.starts[:600])["a"] / 600
    assert abs(share - 0.75) <= 0.05 * 0.75


def test_a_small_source_finishes_early_instead_of_waiting_behind_a_big_one() -> None:
    big = source([("big", i) for i in range(200)])
    small = source([("small", i) for i in range(20)], arrivals=[0.5] * 20)
    svc = Service(latency=lambda _: 1.0)
    # `from: [big, small]`, merged with no queue of its own: the items wait in the fair buffer.
    merged = async_gen_gather([big, small], concurrency=2, max_buffer=1)
    gen = apply_stream_policy(Policy(), merged, svc.call, key=tenant)

    out = run_virtual(timed(gen))

    finished = {k: max(t for t, r in out if r.unwrap()[0] == k) for k in ("big", "small")}
    assert finished["big"] == 220.0
    assert finished["small"] <= 45.0  # one call in two from t=0.5 would end at 40.5; FIFO ends it at 75


@settings(max_examples=40, deadline=None)
@given(keyed, st.integers(min_value=1, max_value=4), st.lists(st.integers(min_value=0, max_value=4), max_size=60))
def test_ordered_fair_output_keeps_each_key_s_order(items: list[tuple[str, int]], c: int, lat: list[int]) -> None:
    labelled = [(k, i) for i, (k, _) in enumerate(items)]
    svc = Service(latency=lambda x: lat[x[1]] if x[1] < len(lat) else 1)
    gen = apply_stream_policy(Policy(concurrency=c), source(labelled), svc.call, key=tenant)

    out = [r.unwrap() for r in run_virtual(drain(gen))]

    assert sorted(out) == sorted(labelled)
    for k in "abcd":
        assert [x for x in out if x[0] == k] == [x for x in labelled if x[0] == k]


def test_the_key_comes_from_the_policy_s_field() -> None:
    items = [Item(f"a{i}", i, {"tenant": "a"}) for i in range(6)] + [
        Item(f"b{i}", i, {"tenant": "b"}) for i in range(2)
    ]
    svc = Service(latency=lambda _: 1.0)
    policy = Policy(fairness=Fairness(key="meta.tenant"))

    run_virtual(drain(apply_stream_policy(policy, async_gen_from_iterable(items), svc.call)))

    assert [v.id for _, v in svc.starts] == ["a0", "b0", "a1", "b1", "a2", "a3", "a4", "a5"]


def test_batches_are_filled_fairly() -> None:
    items = [("a", i) for i in range(30)] + [("b", i) for i in range(6)]
    svc = Service(latency=lambda _: 1.0)
    gen = apply_batch_policy(Policy(), source(items), svc.call_batch, Batch(size=4), key=tenant)

    run_virtual(drain(gen))

    assert svc.batches[0] == (("a", 0), ("b", 0), ("a", 1), ("b", 1))


def test_one_key_holds_at_most_half_the_buffer() -> None:
    src = source([("a", i) for i in range(1000)])
    svc = Service(latency=lambda _: 100.0)

    async def main() -> int:
        gen = apply_stream_policy(Policy(), src, svc.call, key=tenant, buffer=64)
        async with contextlib.aclosing(gen()) as it:
            task = asyncio.ensure_future(anext(it))
            await asyncio.sleep(50.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return src.pulled

    # one in flight, 32 waiting, one in the reader's hand
    assert run_virtual(main()) == 1 + 32 + 1


def test_a_slow_consumer_stops_the_producer_with_fairness() -> None:
    src = source([("ab"[i % 2], i) for i in range(1000)])

    async def main() -> int:
        gen = apply_stream_policy(Policy(concurrency=3), src, Service().call, key=tenant, ordered=False)
        async with contextlib.aclosing(gen()) as it:
            await anext(it)
            await asyncio.sleep(100.0)
            return src.pulled

    # window: the fairness buffer (64) + 2 * 3, and one item in the reader's hand
    assert run_virtual(main()) - 1 <= 64 + 6 + 1


def test_fair_results_are_the_call_results() -> None:
    svc = Service()
    items = [("ab"[i % 2], i) for i in range(10)]

    out = run_virtual(drain(apply_stream_policy(Policy(concurrency=2), source(items), svc.call, key=tenant)))

    assert sorted(out, key=lambda r: r.unwrap()[1]) == [Ok(x) for x in items]
