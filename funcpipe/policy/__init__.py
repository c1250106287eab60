"""Policies as values, and the interpreters that apply them.

- Values (`funcpipe.policy.models`): `Policy` and its parts, frozen and shareable.
- Call level (`apply_policy`, `PolicyRuntime`): total deadline, retry, rate
  limit (`RateLimiter`), circuit breaker (`Breaker`), concurrency slot and
  attempt timeout, per DESIGN.md's order.
- Stream level (`apply_stream_policy`, `apply_batch_policy`): bounded
  concurrency, fairness and batching.
- Time (`Clock`, `RealClock`): every sleep and ``now()`` goes through a clock;
  ``funcpipe.testing`` runs them on virtual time.
- Events (`Event`, `EventSink`): the single feed for progress, logs and reports.
"""

from __future__ import annotations

from funcpipe.policy.apply import PolicyRuntime, apply_policy
from funcpipe.policy.breaker import Breaker, BreakerState, Ticket
from funcpipe.policy.clock import REAL_CLOCK, Clock, RealClock, sleep_until
from funcpipe.policy.events import Event, EventKind, EventLog, EventSink, null_sink
from funcpipe.policy.limiter import RateLimiter, Turn
from funcpipe.policy.models import (
    NO_POLICY,
    Backoff,
    Batch,
    CircuitBreaker,
    Duration,
    ErrorCode,
    Fairness,
    Policy,
    RateLimit,
    RequestLimits,
    Retry,
    Timeout,
    format_duration,
    parse_duration,
)
from funcpipe.policy.retry import (
    backoff_delays,
    delays,
    retry_after,
    should_retry,
    wait_before_retry,
)
from funcpipe.policy.stream import apply_batch_policy, apply_stream_policy

__all__ = [
    "Backoff",
    "Batch",
    "Breaker",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "Duration",
    "ErrorCode",
    "Event",
    "EventKind",
    "EventLog",
    "EventSink",
    "Fairness",
    "NO_POLICY",
    "Policy",
    "PolicyRuntime",
    "REAL_CLOCK",
    "RateLimit",
    "RateLimiter",
    "RealClock",
    "RequestLimits",
    "Retry",
    "Ticket",
    "Timeout",
    "Turn",
    "apply_batch_policy",
    "apply_policy",
    "apply_stream_policy",
    "backoff_delays",
    "delays",
    "format_duration",
    "null_sink",
    "parse_duration",
    "retry_after",
    "should_retry",
    "sleep_until",
    "wait_before_retry",
]
