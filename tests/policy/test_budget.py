"""The budget interpreter: usage counted per attempt, budgets held before a call starts, on virtual time."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, Usage, metering, report_usage
from funcpipe.policy import Backoff, EventLog, Policy, PolicyRuntime, Retry
from funcpipe.policy.budget import DEFAULT_CHARS_PER_TOKEN, Hold, Meter, Spend, estimate_tokens
from funcpipe.policy.models import Budget, Price
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import Service

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True)


def billed(tokens: int, value: object = "ok") -> AsyncPlan[object]:
    """A call whose provider reports ``tokens`` input tokens."""

    async def run() -> Result[object, ErrInfo]:
        report_usage(input_tokens=tokens)
        return Ok(value)

    return run


# --- values -------------------------------------------------------------------------


def test_a_budget_needs_a_limit() -> None:
    with pytest.raises(ValidationError, match="a budget needs a limit"):
        Budget()


def test_a_price_costs_tokens_per_million_and_requests_each() -> None:
    price = Price(input=0.02, output=0.6, request=0.001)
    assert price.cost(2, 1_000_000, 500_000) == pytest.approx(0.02 + 0.3 + 0.002)


def test_report_usage_outside_a_meter_does_nothing_and_inside_collects_in_order() -> None:
    report_usage(input_tokens=5)
    with metering() as reported:
        report_usage(input_tokens=3, output_tokens=2)
        report_usage(input_tokens=1, requests=2)
    assert reported == [Usage(1, 3, 2), Usage(2, 1, 0)]


def test_usage_reported_by_tasks_the_call_starts_is_collected() -> None:
    async def main() -> list[Usage]:
        with metering() as reported:
            await asyncio.gather(*(asyncio.create_task(_report(n)) for n in (1, 2, 3)))
        return reported

    async def _report(n: int) -> None:
        report_usage(input_tokens=n)

    assert sorted(u.input_tokens for u in run_virtual(main)) == [1, 2, 3]


# --- the meter -------------------------------------------------------------------------


def test_tokens_are_estimated_at_the_stated_ratio_rounding_up() -> None:
    assert estimate_tokens(0, 3.5) == 0
    assert estimate_tokens(1, 3.5) == 1
    assert estimate_tokens(7, 3.5) == 2
    assert estimate_tokens(8, 3.5) == 3
    assert Meter().estimate(700) == 700 / DEFAULT_CHARS_PER_TOKEN


def test_the_estimate_learns_a_denser_tokenizer_but_never_drops_below_the_stated_ratio() -> None:
    dense, sparse = Meter(chars_per_token=4.0), Meter(chars_per_token=4.0)
    dense.settle(dense.admit(400), [Usage(1, 200, 0)], ok=True)  # the provider counts twice the estimate
    sparse.settle(sparse.admit(400), [Usage(1, 50, 0)], ok=True)  # and half of it
    assert dense.estimate(400) == 200
    assert sparse.estimate(400) == 100


def test_a_call_is_counted_from_the_provider_else_estimated_and_a_failed_one_costs_a_request() -> None:
    meter = Meter(price=Price(input=1.0, request=0.5), chars_per_token=4.0)
    provider = meter.settle(meter.admit(400), [Usage(1, 90, 0)], ok=True)
    estimated = meter.settle(meter.admit(400), [], ok=True)
    failed = meter.settle(meter.admit(400), [], ok=False)
    assert (provider.usage, provider.counted) == (Usage(1, 90, 0), "provider")
    assert (estimated.usage, estimated.counted) == (Usage(1, 100, 0), "estimated")
    assert (failed.usage, failed.counted) == (Usage(1, 0, 0), "none")
    assert provider.cost == pytest.approx(90 / 1e6 + 0.5)
    assert failed.cost == pytest.approx(0.5)


def test_a_request_budget_admits_n_calls_then_refuses_and_tells_its_owner_once() -> None:
    told: list[str | None] = []
    spend = Spend(Budget(requests=3), "run", lambda s: told.append(s.exhausted))
    meter = Meter(scopes=[spend])
    holds = [meter.admit(10) for _ in range(3)]  # three in flight at once
    refused = meter.admit(10)
    assert isinstance(refused, ErrInfo)
    assert refused.code == ErrCode.BUDGET_EXHAUSTED
    assert refused.meta["budget"] == "run"
    assert "the run budget of 3 request(s) is spent (3 sent)" in refused.msg
    for hold in holds:
        assert not isinstance(hold, ErrInfo)
        meter.settle(hold, [], ok=True)
    assert spend.spent.requests == 3
    assert told == ["the run budget of 3 request(s) is spent (3 sent)"]


def test_reaching_a_limit_exhausts_the_budget_before_any_call_is_refused() -> None:
    told: list[str | None] = []
    meter = Meter(scopes=[Spend(Budget(requests=1), "stage embed", lambda s: told.append(s.exhausted))])
    hold = meter.admit(10)
    assert not isinstance(hold, ErrInfo)
    meter.settle(hold, [], ok=True)
    assert told == ["the stage embed budget of 1 request(s) is spent"]


def test_a_call_that_would_cross_a_token_budget_is_refused_though_smaller_ones_fit() -> None:
    spend = Spend(Budget(tokens=100), "run")
    meter = Meter(scopes=[spend], chars_per_token=1.0)
    first = meter.admit(60)
    assert not isinstance(first, ErrInfo)
    meter.settle(first, [], ok=True)
    refused = meter.admit(50)
    assert isinstance(refused, ErrInfo)
    assert "the next call (about 50 token(s)) would cross the run budget of 100 token(s) (60 used)" in refused.msg
    # Once exhausted, the budget admits nothing more: no new calls.
    assert isinstance(meter.admit(1), ErrInfo)


def test_a_cost_budget_holds_the_price_of_the_estimate() -> None:
    spend = Spend(Budget(cost=1.0), "run")
    meter = Meter(scopes=[spend], price=Price(input=1_000_000.0), chars_per_token=1.0)  # $1 per token
    hold = meter.admit(1)
    assert not isinstance(hold, ErrInfo)
    refused = meter.admit(1)
    assert isinstance(refused, ErrInfo)
    assert "would cross the run budget of $1 ($1 spent)" in refused.msg


def test_a_stage_and_the_run_budget_both_hold_each_call() -> None:
    run, stage = Spend(Budget(requests=10), "run"), Spend(Budget(requests=2), "stage embed")
    meter = Meter(scopes=[stage, run])
    for _ in range(2):
        hold = meter.admit(5)
        assert not isinstance(hold, ErrInfo)
        meter.settle(hold, [], ok=True)
    refused = meter.admit(5)
    assert isinstance(refused, ErrInfo)
    assert refused.meta["budget"] == "stage embed"
    assert (run.spent.requests, stage.spent.requests) == (2, 2)


@st.composite
def call_plans(draw: st.DrawFn) -> tuple[int, list[tuple[int, float]], int]:
    """A token limit, then calls of (characters, provider count as a share of the estimate), and how many overlap."""
    limit = draw(st.integers(0, 2_000))
    calls = draw(st.lists(st.tuples(st.integers(0, 800), st.floats(0.0, 1.0)), max_size=40))
    return limit, calls, draw(st.integers(1, 8))


@PROPERTIES
@given(call_plans())
def test_when_the_provider_counts_no_more_than_estimated_a_token_budget_is_never_crossed(
    plan: tuple[int, list[tuple[int, float]], int],
) -> None:
    limit, calls, overlap = plan
    spend = Spend(Budget(tokens=limit), "run")
    meter = Meter(scopes=[spend])
    in_flight: list[tuple[Hold, float]] = []
    for chars, share in calls:
        hold = meter.admit(chars)
        if isinstance(hold, ErrInfo):
            # Refused only if it would really cross, or once the budget is exhausted.
            assert spend.exhausted is not None
            continue
        in_flight.append((hold, share))
        if len(in_flight) >= overlap:
            done, got = in_flight.pop(0)
            meter.settle(done, [Usage(1, int(done.tokens * got), 0)], ok=True)
        assert spend.spent.tokens <= limit
    for done, got in in_flight:
        meter.settle(done, [Usage(1, int(done.tokens * got), 0)], ok=True)
    assert spend.spent.tokens <= limit


@PROPERTIES
@given(st.integers(0, 20), st.integers(1, 8), st.lists(st.booleans(), max_size=40))
def test_a_request_budget_of_n_lets_at_most_n_calls_start_however_they_overlap_and_fail(
    limit: int, overlap: int, outcomes: list[bool]
) -> None:
    spend = Spend(Budget(requests=limit), "run")
    meter = Meter(scopes=[spend])
    started = 0
    in_flight: list[tuple[Hold, bool]] = []
    for ok in outcomes:
        hold = meter.admit(10)
        if not isinstance(hold, ErrInfo):
            started += 1
            in_flight.append((hold, ok))
        if len(in_flight) >= overlap:
            done, succeeded = in_flight.pop(0)
            meter.settle(done, [], ok=succeeded)
    assert started <= limit
    assert started == min(limit, len(outcomes)) or spend.exhausted is not None


# --- in the policy runtime ------------------------------------------------------------------


def test_retries_count_against_a_request_budget_and_the_call_past_it_never_starts() -> None:
    log = EventLog()
    policy = Policy(
        retry=Retry(max_attempts=5, backoff=Backoff(kind="fixed", initial=1.0), jitter="none"),
        budget=Budget(requests=3),
    )
    rt = PolicyRuntime(policy, clock=VirtualClock(), events=log, stage="embed")
    service = Service([ErrCode.TRANSIENT] * 10)

    result = run_virtual(rt.apply(service.plan(), item_id="i"))

    assert service.calls == 3
    assert isinstance(result, Err)
    assert result.error.code == ErrCode.BUDGET_EXHAUSTED
    assert [e.kind for e in log.events if e.kind in ("attempt", "usage", "budget")] == [
        "attempt",
        "usage",
        "attempt",
        "usage",
        "attempt",
        "usage",
        "budget",
    ]


def test_each_attempt_reports_its_usage_from_the_provider_or_estimated_from_its_characters() -> None:
    log = EventLog()
    meter = Meter(price=Price(input=2.0), chars_per_token=4.0)
    rt = PolicyRuntime(Policy(), clock=VirtualClock(), events=log, stage="embed", meter=meter)

    run_virtual(rt.apply(billed(37), chars=400))
    run_virtual(rt.apply(Service().plan(), chars=400))
    run_virtual(rt.apply(Service().plan()))

    assert [e.data for e in log.of("usage")] == [
        {"requests": 1, "input_tokens": 37, "output_tokens": 0, "counted": "provider", "cost": 37 * 2.0 / 1e6},
        {"requests": 1, "input_tokens": 100, "output_tokens": 0, "counted": "estimated", "cost": 100 * 2.0 / 1e6},
        {"requests": 1, "input_tokens": 0, "output_tokens": 0, "counted": "none", "cost": 0.0},
    ]


def test_a_cancelled_call_still_counts_its_request_and_holds_nothing_after() -> None:
    spend = Spend(Budget(requests=2), "run")
    rt = PolicyRuntime(Policy(), clock=VirtualClock(), stage="s", meter=Meter(scopes=[spend]))
    slow, quick = Service(latency=10.0), Service()

    async def main() -> list[bool]:
        task = asyncio.create_task(rt.apply(slow.plan())())
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return [isinstance(await rt.apply(quick.plan())(), Ok) for _ in range(2)]

    # The cancelled call spent one request of two; had its hold leaked, none would be left.
    assert run_virtual(main) == [True, False]
    assert spend.spent.requests == 2


def test_a_policy_budget_alone_limits_a_runtime_without_a_meter() -> None:
    rt = PolicyRuntime(Policy(budget=Budget(requests=2)), clock=VirtualClock(), stage="s")
    service = Service()

    results = [run_virtual(rt.apply(service.plan())) for _ in range(4)]

    assert service.calls == 2
    assert [isinstance(r, Ok) for r in results] == [True, True, False, False]
