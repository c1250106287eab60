"""Policy values refuse what no pipeline needs (funcpipe/policy/models.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from funcpipe.core import ErrCode
from funcpipe.policy.models import (
    MAX_CONCURRENCY,
    MAX_DURATION,
    Batch,
    CircuitBreaker,
    Fairness,
    Policy,
    RateLimit,
    Retry,
    Timeout,
    parse_duration,
)

_NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


@given(_NON_FINITE)
def test_a_non_finite_duration_is_always_refused(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@given(st.floats(min_value=0, max_value=MAX_DURATION, allow_nan=False))
def test_a_finite_duration_in_range_is_kept(value: float) -> None:
    assert parse_duration(value) == value


@given(st.floats(min_value=MAX_DURATION, exclude_min=True, allow_nan=False) | st.integers(min_value=10**5))
def test_a_duration_past_a_day_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="at most 24h"):
        parse_duration(value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999s", "nans", "infs", "1s\n2s", "١s", "-1s", ""])
def test_strings_that_are_not_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("24h", MAX_DURATION)])
def test_written_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@given(st.one_of(_NON_FINITE, st.just(0.0)))
def test_timeouts_periods_and_windows_are_positive_and_finite(value: float) -> None:
    for make in (
        lambda: Timeout(attempt=value),
        lambda: Timeout(total=value),
        lambda: RateLimit(requests=1, per=value),
        lambda: CircuitBreaker(window=value),
    ):
        with pytest.raises(ValidationError):
            make()


@given(st.one_of(_NON_FINITE, st.floats(max_value=0), st.floats(min_value=1_000_001)))
def test_fairness_weights_are_finite_and_in_range(value: float) -> None:
    with pytest.raises(ValidationError):
        Fairness(key="meta.tenant", weights={"a": value})


@given(st.floats(min_value=1.0, max_value=10.0))
def test_a_finite_backoff_factor_in_range_is_kept(value: float) -> None:
    assert Retry.model_validate({"backoff": {"factor": value}}).backoff.factor == value


@pytest.mark.parametrize("value", [True, False, 0, -1, MAX_CONCURRENCY + 1, 10**100])
def test_concurrency_is_a_whole_number_in_range(value: object) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate({"concurrency": value})


@pytest.mark.parametrize("value", [True, 0, 100_001, 10**100])
def test_batch_size_is_a_whole_number_in_range(value: object) -> None:
    with pytest.raises(ValidationError):
        Batch.model_validate({"size": value})


@pytest.mark.parametrize("key", ["", "tenant", "meta.", "meta..x", "__class__", "meta.tenant\n", "meta.a b"])
def test_an_item_field_is_a_dotted_path_from_an_item_field(key: str) -> None:
    with pytest.raises(ValidationError):
        Fairness(key=key)
    with pytest.raises(ValidationError):
        RateLimit(requests=1, key=key)


@pytest.mark.parametrize("key", ["meta.tenant", "source_id", "id", "data.user-id"])
def test_item_fields_are_accepted(key: str) -> None:
    assert Fairness(key=key).key == key


@pytest.mark.parametrize("model", [Retry, CircuitBreaker])
def test_the_codes_a_policy_names_are_exactly_the_taxonomy(model: type[Retry] | type[CircuitBreaker]) -> None:
    assert model(on=ErrCode.TAXONOMY).on == ErrCode.TAXONOMY
    assert set(model().on) <= set(ErrCode.TAXONOMY)
    for code in (ErrCode.CANCELLED, ErrCode.MAX_RETRIES, "RATE_LIMITED"):
        with pytest.raises(ValidationError):
            model(on=(code,))
