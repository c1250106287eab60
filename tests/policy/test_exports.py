"""The public surface of `funcpipe.policy` and `funcpipe.testing` is exactly what we mean to export."""

from __future__ import annotations

import funcpipe.policy
import funcpipe.testing

POLICY = {
    # values
    "Backoff", "Batch", "CircuitBreaker", "Duration", "ErrorCode", "Fairness", "NO_POLICY", "Policy",
    "RateLimit", "RequestLimits", "Retry", "Timeout", "format_duration", "parse_duration",
    # call-level interpreters
    "Breaker", "BreakerState", "PolicyRuntime", "RateLimiter", "Ticket", "Turn", "apply_policy",
    "backoff_delays", "delays", "retry_after", "should_retry", "wait_before_retry",
    # stream-level interpreters
    "apply_batch_policy", "apply_stream_policy",
    # time and events
    "Clock", "REAL_CLOCK", "RealClock", "sleep_until",
    "Event", "EventKind", "EventLog", "EventSink", "null_sink",
}  # fmt: skip


def test_policy_exports_exactly_its_public_api() -> None:
    assert set(funcpipe.policy.__all__) == POLICY


def test_policy_all_is_sorted_and_every_name_exists() -> None:
    assert funcpipe.policy.__all__ == sorted(funcpipe.policy.__all__)
    assert all(hasattr(funcpipe.policy, name) for name in funcpipe.policy.__all__)


def test_testing_exports_the_virtual_loop_and_clock() -> None:
    assert funcpipe.testing.__all__ == ["VirtualClock", "VirtualEventLoop", "VirtualTimeStall", "run_virtual"]
