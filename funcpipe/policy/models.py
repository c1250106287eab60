"""Policy values: frozen, validated Pydantic models with exactly the schema of DESIGN.md.

These are *values*: immutable and shareable between any number of concurrent
runs. The interpreters that apply them (and hold per-run state such as
limiter buckets and breaker state) live beside them in ``funcpipe.policy``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    model_validator,
)

from funcpipe.core import ErrCode

# ASCII digits only: `str.isdigit` and `\d` also accept other scripts' digits.
_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,12})?)\s*(ms|s|m|h)\s*", re.ASCII)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_FORMS = "a duration such as 250ms, 2s, 1m or 1h"

MAX_DURATION = 86_400.0
"""Longest duration accepted anywhere (24h): no timeout, window or wait needs more."""

MAX_CONCURRENCY = 1_024
"""Calls in flight at most for one stage."""

MAX_BATCH = 100_000
"""Items per batch at most."""

MAX_ATTEMPTS = 100
"""Retry attempts at most."""


def no_bool(value: object) -> object:
    """Refuse a boolean where a number is expected (a before-validator)."""
    # YAML reads `true` as a boolean and Python's bool is an int: `concurrency: true`
    # would silently mean 1.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {'true' if value else 'false'}")
    return value


Int = Annotated[int, BeforeValidator(no_bool)]
"""A whole number that refuses booleans (bounds are given per field)."""

Float = Annotated[float, BeforeValidator(no_bool), Field(allow_inf_nan=False)]
"""A finite number that refuses booleans, NaN and infinity."""


def _short(value: object) -> str:
    # As spec errors show values: strings quoted, long values cut.
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: object) -> float:
    """Parse ``250ms``, ``2s``, ``1.5m`` or ``1h`` (or a number of seconds) into seconds.

    The result is finite, not negative and at most `MAX_DURATION`.

    Raises:
        ValueError: for anything else, with the accepted forms in the message.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_FORMS}, got {value!r}")
    seconds: float
    if isinstance(value, int):
        # float() of a huge int overflows; anything this large is refused below anyway.
        seconds = float(value) if abs(value) <= 10**18 else (math.inf if value > 0 else -math.inf)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f"expected {_FORMS}, got {_short(value)}")
    if math.isnan(seconds):
        raise ValueError("a duration must be a finite number of seconds, not NaN")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {_short(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration is at most 24h, got {_short(value)}")
    return seconds


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("this duration must be longer than zero")
    return seconds


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
"""Seconds, written in a spec as ``250ms``, ``2s``, ``1m`` or ``1h``: finite, 0 to 24h."""

PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A `Duration` longer than zero (a zero timeout or window fails every call)."""

_ITEM_FIELD = r"^(id|source_id|data|meta)(\.[A-Za-z0-9_-]{1,64}){0,8}$"


def _item_field(value: str) -> str:
    if not re.fullmatch(_ITEM_FIELD[1:-1], value):
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        raise ValueError(
            f"{shown} is not an item field: write id, source_id, data or meta, then dotted keys, e.g. meta.tenant"
        )
    return value


ItemField = Annotated[
    str,
    AfterValidator(_item_field),
    Field(json_schema_extra={"pattern": _ITEM_FIELD, "examples": ["meta.tenant", "source_id"]}),
]
"""A field of an item: ``id``, ``source_id``, ``data`` or ``meta``, then dotted keys."""

if TYPE_CHECKING:
    ErrorCode: TypeAlias = str
else:
    # Built from the taxonomy, so validation, its messages and the JSON Schema
    # (an enum, in DESIGN.md's order) follow `ErrCode` without a second list.
    ErrorCode = Literal[ErrCode.TAXONOMY]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timeout(_Value):
    """Time limits for one external call.

    A bare duration in a spec (``timeout: 10s``) means ``attempt``.
    """

    attempt: PositiveDuration | None = Field(None, description="Limit for each attempt; expiry is a TIMEOUT error.")
    total: PositiveDuration | None = Field(
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
    factor: Float = Field(2.0, ge=1.0, le=10.0, description="Growth per attempt for kind: exponential.")
    max: Duration = Field(20.0, description="No wait is longer than this, Retry-After hints included.")


class Retry(_Value):
    """Retry failed attempts whose error code is listed in ``on``."""

    max_attempts: Int = Field(3, ge=1, le=MAX_ATTEMPTS, description="Attempts in all, the first included.")
    backoff: Backoff = Field(default_factory=Backoff, description="The wait schedule between attempts.")
    jitter: Literal["none", "full", "equal", "decorrelated"] = Field(
        "full", description="Randomisation of each wait (seeded per run)."
    )
    on: tuple[ErrorCode, ...] = Field(
        tuple(sorted(ErrCode.RETRYABLE)),
        max_length=32,
        description="Error codes that are retried; any other code is returned at once.",
    )


class RateLimit(_Value):
    """A GCRA rate limit: ``requests`` per ``per``, with an explicit ``burst``."""

    requests: Int = Field(..., ge=1, le=1_000_000, description="Requests (or cost units) allowed per period.")
    per: PositiveDuration = Field(1.0, description="The period.")
    burst: Int = Field(1, ge=1, le=100_000, description="Calls that may start back to back; 1 means perfectly spaced.")
    cost: Literal[1, "items", "tokens"] = Field(
        1, description="Cost of one call: 1, the batch's item count, or its token estimate."
    )
    key: ItemField | None = Field(None, description="An item field (e.g. meta.tenant); each key gets its own bucket.")

    @model_validator(mode="after")
    def _positive_period(self) -> RateLimit:
        if self.per <= 0:
            raise ValueError("per must be a positive duration")
        return self


class CircuitBreaker(_Value):
    """Fail fast while a service is down; let a few probes test its recovery."""

    failures: Int = Field(5, ge=1, le=100_000, description="Consecutive failures that open the breaker.")
    ratio: Float = Field(0.5, gt=0, le=1, description="Failure ratio over `window` that opens it.")
    window: PositiveDuration = Field(30.0, description="Sliding window for the ratio.")
    min_calls: Int = Field(10, ge=1, le=100_000, description="Calls within the window before the ratio counts.")
    reset_after: Duration = Field(30.0, description="Time open before probes are let through.")
    probes: Int = Field(1, ge=1, le=MAX_CONCURRENCY, description="Concurrent probe calls allowed while half-open.")
    on: tuple[ErrorCode, ...] = Field(
        ("AUTH", "NETWORK", "SERVICE_SPECIFIC", "TIMEOUT", "TRANSIENT"),
        max_length=32,
        description="Error codes that count as failures (RATE_LIMIT is the limiter's business).",
    )


class Fairness(_Value):
    """Deficit round robin across the keys of waiting items."""

    key: ItemField = Field(..., description="Item field holding the key, e.g. meta.tenant or source_id.")
    weights: dict[str, Annotated[Float, Field(gt=0, le=1_000_000)]] = Field(
        default_factory=dict,
        max_length=100_000,
        description="Relative share per key (default 1); each weight must be positive, at most 1000000.",
    )


MAX_BUDGET_UNITS = 10**15
"""Requests or tokens a budget may allow at most."""

MAX_PRICE = 1_000_000.0
"""Price per unit at most (a guard against a misplaced decimal point)."""


class Budget(_Value):
    """A limit on what calls may spend: requests, tokens (input and output) and cost.

    On a stage's policy it limits that stage's calls; at the top level of a
    spec, the whole run's. A call that would cross a limit is not started,
    and the run stops as it does on SIGTERM.
    """

    requests: Int | None = Field(None, ge=0, le=MAX_BUDGET_UNITS, description="Requests sent at most.")
    tokens: Int | None = Field(None, ge=0, le=MAX_BUDGET_UNITS, description="Input and output tokens at most.")
    cost: Float | None = Field(
        None, ge=0, le=1e12, description="Cost at most, in the currency of the adapters' prices (USD by default)."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.requests is None and self.tokens is None and self.cost is None:
            raise ValueError("a budget needs a limit: requests, tokens or cost")
        return self


class Price(_Value):
    """What an adapter's calls cost, in USD: per million input and output tokens, and per request."""

    input: Float = Field(0.0, ge=0, le=MAX_PRICE, description="Price of 1M input tokens.")
    output: Float = Field(0.0, ge=0, le=MAX_PRICE, description="Price of 1M output (generated) tokens.")
    request: Float = Field(0.0, ge=0, le=MAX_PRICE, description="Price of one request.")

    def cost(self, requests: int, input_tokens: int, output_tokens: int) -> float:
        """The cost of that usage."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000 + requests * self.request


class Policy(_Value):
    """Every policy for one external call, referenced by name or written inline on a stage."""

    timeout: Timeout | None = Field(None, description="Per-attempt timeout and total deadline.")
    retry: Retry | None = Field(None, description="Retry schedule.")
    rate_limit: RateLimit | None = Field(None, description="Rate limit, applied to every attempt.")
    concurrency: Int | None = Field(None, ge=1, le=MAX_CONCURRENCY, description="Calls in flight at most.")
    circuit_breaker: CircuitBreaker | None = Field(None, description="Circuit breaker.")
    fairness: Fairness | None = Field(None, description="Fair share across keys.")
    budget: Budget | None = Field(None, description="Limits on this stage's requests, tokens and cost.")


def _size_form(value: object) -> str:
    # One form by the value's type, so a bad number reports its own error once.
    return "auto" if isinstance(value, str) else "number"


MAX_BATCH_TOKENS = 100_000_000
"""Estimated tokens per batch at most."""


class Batch(_Value):
    """Stage batching: up to ``size`` items, or what arrived ``max_wait`` after the first.

    ``size: auto`` (the default) fills each call up to what its adapter
    declares it takes per request (`RequestLimits`); a stage whose adapter
    declares nothing uses its kind's default size. The compiler resolves
    ``auto`` to a number (see `funcpipe.compile.CompiledStage.run_batch`).
    """

    size: Annotated[
        Annotated[Annotated[Int, Field(ge=1, le=MAX_BATCH)], Tag("number")] | Annotated[Literal["auto"], Tag("auto")],
        Discriminator(_size_form),
    ] = Field("auto", description="Items per batch at most, or auto: as many as the adapter takes per request.")
    max_wait: Duration | None = Field(None, description="Flush a partial batch this long after its first item.")
    max_tokens: Int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_TOKENS,
        description="Estimated tokens per batch at most, for stages that count tokens "
        "(default: the adapter's per-request limit).",
    )

    @property
    def items(self) -> int:
        """``size`` as a number.

        Raises:
            ValueError: if it is still ``auto`` (the compiler resolves it before a run).
        """
        if self.size == "auto":
            raise ValueError("batch size 'auto' must be resolved against the adapter's request limits first")
        return self.size


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request to a provider may carry: the provider's documented maxima.

    Attributes:
        inputs: texts (items) per request at most; None if unbounded.
        tokens: tokens per request at most, summed over its inputs; None if
            the API sets no such bound.
    """

    inputs: int | None = None
    tokens: int | None = None


NO_POLICY = Policy()
