"""The shared book of starts: its window bound and pacing, as laws; and how shards are split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.policy import RateLimit
from funcpipe.run.scaleout import Book, split
from tests.policy._support import gaps, max_window_cost

LIMIT = RateLimit(requests=20, per=1.0)

# A grant request: (seconds after the previous one, the costs it asks for, the slack).
requests = st.lists(
    st.tuples(
        st.floats(0.0, 0.5, allow_nan=False),
        st.lists(st.integers(0, 3), min_size=1, max_size=8),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=40,
)


def _book_all(book: Book, asked: list[tuple[float, list[int], int]]) -> list[tuple[float, int]]:
    now, booked = 0.0, []
    for wait, costs, slack in asked:
        now += wait
        starts = book.book(costs, now, slack=slack)
        assert all(s >= now for s in starts), "a start is booked in the past"
        booked += list(zip(starts, costs, strict=True))
    return booked


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    requests=requests,
    limit=st.builds(
        RateLimit,
        requests=st.integers(1, 50),
        per=st.sampled_from([0.5, 1.0, 2.0]),
        burst=st.integers(1, 4),
    ),
    guard=st.sampled_from([0.0, 0.04, 0.1]),
)
def test_no_window_of_per_plus_guard_holds_more_than_the_capacity(
    requests: list[tuple[float, list[int], int]], limit: RateLimit, guard: float
) -> None:
    book = Book(limit, guard)
    booked = _book_all(book, requests)
    costly = [(s, c) for s, c in booked if c]
    # A single call above the capacity fits no window at all: it only has one to itself.
    if all(c <= book.capacity for _, c in costly):
        assert max_window_cost(costly, limit.per + guard) <= book.capacity


@settings(derandomize=True, max_examples=100, deadline=None)
@given(requests=requests)
def test_starts_are_booked_in_the_order_asked(requests: list[tuple[float, list[int], int]]) -> None:
    booked = _book_all(Book(LIMIT), requests)
    assert [s for s, _ in booked] == sorted(s for s, _ in booked)


def test_a_saturated_book_paces_at_requests_per_per_plus_guard() -> None:
    book = Book(LIMIT, guard=0.04)
    starts = book.book([1] * 41, 0.0)
    assert starts[0] == 0.0
    assert gaps(starts) == pytest.approx([1.04 / 20] * 40)


def test_slack_leaves_intervals_free_after_the_first_start_only() -> None:
    book = Book(LIMIT, guard=0.0)
    starts = book.book([1, 1, 1], 0.0, slack=2)
    assert starts == pytest.approx([0.0, 0.15, 0.2])


def test_a_pause_books_nothing_before_it_ends_for_that_key_only() -> None:
    book = Book(LIMIT, guard=0.0)
    book.pause(3.0, key="a")
    assert book.book([1], 1.0, key="a") == [3.0]
    assert book.book([1], 1.0, key="b") == [1.0]


def test_a_negative_cost_or_guard_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Book(LIMIT).book([-1], 0.0)
    with pytest.raises(ValueError, match="guard"):
        Book(LIMIT, guard=-0.1)


def test_idle_keys_are_forgotten() -> None:
    book = Book(LIMIT, guard=0.0)
    for k in range(200):
        book.book([1], float(k), key=k)
    assert len(book._keys) < 70


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    weights=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10_000), max_size=60),
    shards=st.integers(1, 8),
)
def test_split_puts_every_source_in_exactly_one_shard(weights: dict[str, int], shards: int) -> None:
    groups = split(weights, shards)
    flat = [sid for g in groups for sid in g]
    assert sorted(flat) == sorted(weights)
    assert len(groups) <= shards and all(groups)
    assert split(dict(reversed(list(weights.items()))), shards) == groups  # the same listing, the same shards


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    weights=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(1, 1000), min_size=1, max_size=60),
    shards=st.integers(1, 8),
)
def test_split_balances_within_the_heaviest_item(weights: dict[str, int], shards: int) -> None:
    loads = [sum(weights[s] for s in g) for g in split(weights, shards)]
    if len(loads) == shards:
        assert max(loads) - min(loads) <= max(weights.values())


def test_split_needs_a_shard() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        split({"a": 1}, 0)
