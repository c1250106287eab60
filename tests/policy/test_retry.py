"""Retry schedules (`funcpipe.policy.retry`) and the retry loop of `apply_policy`, on virtual time."""

from __future__ import annotations

import asyncio
import random
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy import (
    Backoff,
    EventLog,
    Policy,
    PolicyRuntime,
    Retry,
    Timeout,
    apply_policy,
    backoff_delays,
    delays,
    retry_after,
    should_retry,
    wait_before_retry,
)
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import Service, gaps

PROPERTIES = settings(max_examples=60, deadline=None, derandomize=True)

CODES = sorted(ErrCode.ALL - {ErrCode.CANCELLED})


def retry(kind: str = "exponential", jitter: str = "none", attempts: int = 6, **backoff: float) -> Retry:
    params = {"kind": kind, "initial": 0.2, "factor": 2.0, "max": 1.0, **backoff}
    return Retry.model_validate({"max_attempts": attempts, "backoff": params, "jitter": jitter})


def call_times(policy: Policy, script: list[str | None], *, seed: int = 0) -> tuple[object, list[float]]:
    service = Service(script)
    result = run_virtual(apply_policy(policy, service.plan(), clock=VirtualClock(), seed=seed))
    return result, service.starts


# --- the pure schedule -------------------------------------------------------


def test_exponential_backoff_doubles_up_to_max() -> None:
    assert list(delays(retry("exponential"), random.Random(0))) == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])


def test_fixed_backoff_waits_initial_every_time() -> None:
    assert list(delays(retry("fixed"), random.Random(0))) == pytest.approx([0.2] * 5)


def test_immediate_backoff_never_waits() -> None:
    assert list(delays(retry("immediate"), random.Random(0))) == [0.0] * 5


def test_full_jitter_draws_uniformly_below_each_base() -> None:
    r = random.Random(7)
    expected = [r.uniform(0, b) for b in (0.2, 0.4, 0.8, 1.0, 1.0)]

    assert list(delays(retry("exponential", "full"), random.Random(7))) == pytest.approx(expected)


def test_equal_jitter_keeps_half_of_each_base() -> None:
    r = random.Random(7)
    expected = [b / 2 + r.uniform(0, b / 2) for b in (0.2, 0.4, 0.8, 1.0, 1.0)]

    assert list(delays(retry("exponential", "equal"), random.Random(7))) == pytest.approx(expected)


def test_decorrelated_jitter_grows_from_the_previous_wait() -> None:
    r = random.Random(7)
    expected, previous = [], 0.2
    for _ in range(5):
        previous = min(1.0, r.uniform(0.2, 3 * previous))
        expected.append(previous)

    assert list(delays(retry("exponential", "decorrelated"), random.Random(7))) == pytest.approx(expected)


def test_decorrelated_jitter_on_fixed_backoff_does_not_grow() -> None:
    r = random.Random(7)
    expected = [min(1.0, r.uniform(0.2, 0.6)) for _ in range(5)]

    assert list(delays(retry("fixed", "decorrelated"), random.Random(7))) == pytest.approx(expected)


def test_decorrelated_jitter_on_immediate_backoff_never_waits() -> None:
    assert list(delays(retry("immediate", "decorrelated"), random.Random(7))) == [0.0] * 5


def test_a_huge_exponential_schedule_stays_capped_without_overflow() -> None:
    schedule = backoff_delays(Backoff(initial=1.0, factor=10.0, max=60.0), "none", random.Random(0))

    assert [next(schedule) for _ in range(2000)][-1] == 60.0


def test_unknown_jitter_is_rejected_with_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="none, full, equal or decorrelated"):
        next(backoff_delays(Backoff(), "gaussian", random.Random(0)))


@PROPERTIES
@given(
    kind=st.sampled_from(["exponential", "fixed", "immediate"]),
    jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
    initial=st.floats(0, 100),
    factor=st.floats(1, 10),
    cap=st.floats(0, 100),
    attempts=st.integers(1, 30),
    seed=st.integers(0, 2**32),
)
def test_every_delay_lies_between_zero_and_max(
    kind: str, jitter: str, initial: float, factor: float, cap: float, attempts: int, seed: int
) -> None:
    schedule = list(delays(retry(kind, jitter, attempts, initial=initial, factor=factor, max=cap), random.Random(seed)))

    assert len(schedule) == attempts - 1
    assert all(0.0 <= d <= cap for d in schedule)


# --- hints and decisions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "hint"),
    [
        ({"retry_after": 2}, 2.0),
        ({"retry_after": 0.5}, 0.5),
        ({}, None),
        ({"retry_after": "2"}, None),
        ({"retry_after": True}, None),
        ({"retry_after": -1}, None),
    ],
)
def test_retry_after_reads_only_a_non_negative_number_of_seconds(meta: dict[str, object], hint: float | None) -> None:
    assert retry_after(ErrInfo(ErrCode.RATE_LIMIT, "slow down", meta)) == hint


@pytest.mark.parametrize(("hint", "delay", "wait"), [(3.0, 0.5, 3.0), (0.1, 0.5, 0.5), (50.0, 0.5, 20.0)])
def test_a_hint_lengthens_the_wait_up_to_max(hint: float, delay: float, wait: float) -> None:
    error = ErrInfo(ErrCode.RATE_LIMIT, "slow down", {"retry_after": hint})

    assert wait_before_retry(Retry(backoff=Backoff(max=20.0)), delay, error) == wait


def test_should_retry_looks_only_at_the_code_and_the_attempts_left() -> None:
    policy = Retry(max_attempts=3, on=("TRANSIENT",))

    assert should_retry(policy, ErrInfo("TRANSIENT", "x", {"retryable": False}), 2)
    assert not should_retry(policy, ErrInfo("TRANSIENT", "x"), 3)
    assert not should_retry(policy, ErrInfo("NETWORK", "x", {"retryable": True}), 1)
    assert not should_retry(None, ErrInfo("TRANSIENT", "x"), 1)


# --- the retry loop on virtual time --------------------------------------------------


@pytest.mark.parametrize("kind", ["exponential", "fixed", "immediate"])
@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_attempts_start_exactly_on_the_seeded_schedule(kind: str, jitter: str) -> None:
    policy = Policy(retry=retry(kind, jitter))
    expected = [0.0, *accumulate(delays(policy.retry, random.Random(42)))]  # type: ignore[arg-type]

    result, starts = call_times(policy, ["TRANSIENT"] * 5, seed=42)

    assert result == Ok("ok")
    assert starts == pytest.approx(expected)


def test_the_last_error_carries_the_number_of_attempts() -> None:
    result, starts = call_times(Policy(retry=retry(attempts=3)), ["NETWORK"] * 9)

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["attempts"]) == ("NETWORK", 3)
    assert len(starts) == 3


def test_a_code_not_listed_in_on_is_returned_at_once() -> None:
    policy = Policy(retry=Retry(max_attempts=5, on=("TRANSIENT",)))

    result, starts = call_times(policy, ["AUTH", None])

    assert isinstance(result, Err)
    assert result.error.meta["attempts"] == 1
    assert starts == [0.0]


def test_no_wait_is_scheduled_past_the_deadline() -> None:
    policy = Policy(retry=retry("fixed", initial=4.0, max=4.0, attempts=10), timeout=Timeout(total=10.0))
    log = EventLog()
    service = Service(["TRANSIENT"] * 10)

    async def main() -> tuple[Result[object, ErrInfo], float]:
        result = await apply_policy(policy, service.plan(), clock=VirtualClock(), events=log)()
        return result, VirtualClock().now()

    result, ended = run_virtual(main)

    assert service.starts == [0.0, 4.0, 8.0]
    assert ended == 8.0  # the wait to 12s would cross the deadline: not started
    assert isinstance(result, Err) and result.error.meta["attempts"] == 3
    assert [e.duration for e in log.of("wait")] == [4.0, 4.0]


def test_a_retry_after_hint_delays_the_next_attempt() -> None:
    policy = Policy(retry=retry("fixed", initial=0.5, max=20.0))
    service = Service(["RATE_LIMIT"], retry_after=3.0)

    result = run_virtual(apply_policy(policy, service.plan(), clock=VirtualClock()))

    assert result == Ok("ok")
    assert service.starts == [0.0, 3.0]


def test_fifty_concurrent_runs_of_one_policy_are_independent() -> None:
    policy = Policy(retry=retry("exponential", "none", attempts=8))
    services = [Service(["TRANSIENT"] * (i % 7)) for i in range(50)]

    async def main() -> list[object]:
        plans = [apply_policy(policy, s.plan(i), clock=VirtualClock()) for i, s in enumerate(services)]
        return list(await asyncio.gather(*(p() for p in plans)))

    results = run_virtual(main)

    assert results == [Ok(i) for i in range(50)]
    for i, service in enumerate(services):
        assert service.calls == i % 7 + 1
        assert gaps(service.starts) == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0][: i % 7])


def test_concurrent_calls_through_one_runtime_keep_their_own_attempt_counts() -> None:
    runtime = PolicyRuntime(Policy(retry=retry("fixed", attempts=4)), clock=VirtualClock())
    services = [Service(["TIMEOUT"] * n) for n in (0, 1, 2, 3, 4)]

    async def main() -> list[object]:
        return list(await asyncio.gather(*(runtime.apply(s.plan())() for s in services)))

    results = run_virtual(main)

    assert results[:4] == [Ok("ok")] * 4
    assert isinstance(results[4], Err) and results[4].error.meta["attempts"] == 4
    assert [s.calls for s in services] == [1, 2, 3, 4, 4]


# --- laws ----------------------------------------------------------------------------


SCRIPTS = st.lists(st.sampled_from([None, *CODES]), max_size=12)
RETRIES = st.builds(
    Retry,
    max_attempts=st.integers(1, 8),
    backoff=st.builds(
        Backoff,
        kind=st.sampled_from(["exponential", "fixed", "immediate"]),
        initial=st.floats(0, 5),
        factor=st.floats(1, 4),
        max=st.floats(0, 10),
    ),
    jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
    on=st.lists(st.sampled_from(CODES), unique=True).map(tuple),
)


def run_logged(policy: Policy, service: Service, seed: int) -> tuple[object, EventLog, float]:
    log = EventLog()

    async def main() -> tuple[object, float]:
        result = await apply_policy(policy, service.plan(), clock=VirtualClock(), events=log, seed=seed)()
        return result, VirtualClock().now()

    result, ended = run_virtual(main)
    return result, log, ended


@PROPERTIES
@given(policy_retry=RETRIES, script=SCRIPTS, seed=st.integers(0, 1000))
def test_attempts_never_exceed_max_attempts(policy_retry: Retry, script: list[str | None], seed: int) -> None:
    service = Service(script)

    result, _, _ = run_logged(Policy(retry=policy_retry), service, seed)

    assert 1 <= service.calls <= policy_retry.max_attempts
    if isinstance(result, Err):
        assert result.error.meta["attempts"] == service.calls


@PROPERTIES
@given(policy_retry=RETRIES, script=SCRIPTS, seed=st.integers(0, 1000))
def test_only_listed_codes_are_retried_and_every_wait_is_within_max(
    policy_retry: Retry, script: list[str | None], seed: int
) -> None:
    service = Service(script)

    _, log, _ = run_logged(Policy(retry=policy_retry), service, seed)

    failed = [e.code for e in log.of("failure")]
    assert all(code in policy_retry.on for code in failed[:-1] if code is not None)
    assert all(0.0 <= e.duration <= policy_retry.backoff.max for e in log.of("wait"))


@PROPERTIES
@given(
    policy_retry=RETRIES,
    script=SCRIPTS,
    seed=st.integers(0, 1000),
    total=st.floats(0.001, 30),
    attempt=st.one_of(st.none(), st.floats(0.001, 10)),
    latency=st.floats(0, 5),
)
def test_the_total_time_never_exceeds_the_deadline(
    policy_retry: Retry, script: list[str | None], seed: int, total: float, attempt: float | None, latency: float
) -> None:
    service = Service(script, latency=latency)
    policy = Policy(retry=policy_retry, timeout=Timeout(attempt=attempt, total=total))

    result, _, ended = run_logged(policy, service, seed)

    assert ended <= total
    assert all(start < total for start in service.starts)
    assert isinstance(result, Ok | Err)


@PROPERTIES
@given(hint=st.floats(0, 60), cap=st.floats(0, 30), initial=st.floats(0, 5), seed=st.integers(0, 1000))
def test_a_retry_after_hint_is_honoured_up_to_max(hint: float, cap: float, initial: float, seed: int) -> None:
    policy = Policy(retry=Retry(max_attempts=2, backoff=Backoff(initial=initial, max=cap), jitter="full"))
    service = Service(["RATE_LIMIT"], retry_after=hint)
    backoff = next(delays(policy.retry, random.Random(seed)))  # type: ignore[arg-type]

    result, log, _ = run_logged(policy, service, seed)

    assert result == Ok("ok")
    assert log.of("wait")[0].duration == min(max(hint, backoff), cap)
    assert service.starts[1] - service.starts[0] == pytest.approx(min(max(hint, backoff), cap))
