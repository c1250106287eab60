"""Policy values: frozen, validated Pydantic models with exactly the schema of DESIGN.md.

These are *values*: immutable and shareable between any number of concurrent
runs. The interpreters that apply them (and hold per-run state such as
limiter buckets and breaker state) live beside them in ``funcpipe.policy``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from funcpipe.core import ErrCode

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Parse ``250ms``, ``2s``, ``1.5m`` or ``1h`` (or a number of seconds) into seconds.

    Raises:
        ValueError: for anything else, with the accepted forms in the message.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 250ms, 2s, 1m or 1h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"expected a duration such as 250ms, 2s, 1m or 1h, got {value!r}")


def format_duration(seconds: float) -> str:
    """Render seconds the way a spec would write them (``250ms``, ``2s``, ``1.5m``)."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000, 3):g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    if seconds < 3600 or seconds % 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    Field(json_schema_extra={"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)$"}),
]
"""Seconds, written in a spec as ``250ms``, ``2s``, ``1m`` or ``1h``."""

ErrorCode = Literal[
    "AUTH",
    "RATE_LIMIT",
    "TRANSIENT",
    "TIMEOUT",
    "NETWORK",
    "SERVICE_SPECIFIC",
    "DB_ERROR",
    "FATAL_DB",
    "CIRCUIT_OPEN",
    "BAD_INPUT",
    "USER_CODE",
]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timeout(_Value):
    """Time limits for one external call.

    A bare duration in a spec (``timeout: 10s``) means ``attempt``.
    """

    attempt: Duration | None = Field(None, description="Limit for each attempt; expiry is a TIMEOUT error.")
    total: Duration | None = Field(
        None, description="Deadline for all attempts and waits together; no wait is scheduled past it."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_duration(cls, data: object) -> object:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            return {"attempt": data}
        return data


class Backoff(_Value):
    """How long to wait before attempt n+1."""

    kind: Literal["exponential", "fixed", "immediate"] = Field(
        "exponential", description="exponential: initial * factor**(n-1), capped by max; fixed: initial; immediate: 0."
    )
    initial: Duration = Field(0.2, description="First wait (and every wait for kind: fixed).")
    factor: float = Field(2.0, ge=1.0, description="Growth per attempt for kind: exponential.")
    max: Duration = Field(20.0, description="No wait is longer than this, Retry-After hints included.")


class Retry(_Value):
    """Retry failed attempts whose error code is listed in ``on``."""

    max_attempts: int = Field(3, ge=1, description="Attempts in all, the first included.")
    backoff: Backoff = Field(default_factory=Backoff, description="The wait schedule between attempts.")
    jitter: Literal["none", "full", "equal", "decorrelated"] = Field(
        "full", description="Randomisation of each wait (seeded per run)."
    )
    on: tuple[ErrorCode, ...] = Field(
        tuple(sorted(ErrCode.RETRYABLE)),  # type: ignore[arg-type]
        description="Error codes that are retried; any other code is returned at once.",
    )


class RateLimit(_Value):
    """A GCRA rate limit: ``requests`` per ``per``, with an explicit ``burst``."""

    requests: int = Field(..., ge=1, description="Requests (or cost units) allowed per period.")
    per: Duration = Field(1.0, description="The period.")
    burst: int = Field(1, ge=1, description="Calls that may start back to back; 1 means perfectly spaced.")
    cost: Literal[1, "items", "tokens"] = Field(
        1, description="Cost of one call: 1, the batch's item count, or its token estimate."
    )
    key: str | None = Field(None, description="An item field (e.g. meta.tenant); each key gets its own bucket.")

    @model_validator(mode="after")
    def _positive_period(self) -> RateLimit:
        if self.per <= 0:
            raise ValueError("per must be a positive duration")
        return self


class CircuitBreaker(_Value):
    """Fail fast while a service is down; let a few probes test its recovery."""

    failures: int = Field(5, ge=1, description="Consecutive failures that open the breaker.")
    ratio: float = Field(0.5, gt=0, le=1, description="Failure ratio over `window` that opens it.")
    window: Duration = Field(30.0, description="Sliding window for the ratio.")
    min_calls: int = Field(10, ge=1, description="Calls within the window before the ratio counts.")
    reset_after: Duration = Field(30.0, description="Time open before probes are let through.")
    probes: int = Field(1, ge=1, description="Concurrent probe calls allowed while half-open.")
    on: tuple[ErrorCode, ...] = Field(
        ("AUTH", "NETWORK", "SERVICE_SPECIFIC", "TIMEOUT", "TRANSIENT"),
        description="Error codes that count as failures (RATE_LIMIT is the limiter's business).",
    )


class Fairness(_Value):
    """Deficit round robin across the keys of waiting items."""

    key: str = Field(..., description="Item field holding the key, e.g. meta.tenant or source_id.")
    weights: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Relative share per key (default 1); each weight must be positive."
    )


class Policy(_Value):
    """Every policy for one external call, referenced by name or written inline on a stage."""

    timeout: Timeout | None = Field(None, description="Per-attempt timeout and total deadline.")
    retry: Retry | None = Field(None, description="Retry schedule.")
    rate_limit: RateLimit | None = Field(None, description="Rate limit, applied to every attempt.")
    concurrency: int | None = Field(None, ge=1, description="Calls in flight at most.")
    circuit_breaker: CircuitBreaker | None = Field(None, description="Circuit breaker.")
    fairness: Fairness | None = Field(None, description="Fair share across keys.")


class Batch(_Value):
    """Stage batching: up to ``size`` items, or what arrived ``max_wait`` after the first."""

    size: int = Field(..., ge=1, description="Items per batch at most.")
    max_wait: Duration | None = Field(None, description="Flush a partial batch this long after its first item.")


NO_POLICY = Policy()
