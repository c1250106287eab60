"""Retry and timeout as small, frozen values applied to one `AsyncPlan`.

`async_with_resilience` is the self-contained form: a plan, a `RetryPolicy`
and an optional `TimeoutPolicy` give a plan that retries with capped
exponential backoff and jitter. Sleeping and jitter go through a
`ResilienceEnv`, so a test passes a fake sleep and a seeded RNG and asserts
the exact delays. The pipeline runner does not use this: it applies a
spec's ``policies:`` with `funcpipe.policy.apply_policy`, which adds rate
limits, breakers, deadlines and events on a `funcpipe.policy.Clock`.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import Random
from typing import TypeAlias, TypeVar

from funcpipe.core._plan import AsyncPlan, user_error
from funcpipe.core._result import Err, ErrCode, ErrInfo, Ok, Result

T = TypeVar("T")
U = TypeVar("U")

Sleep: TypeAlias = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try a plan, and how long to wait in between.

    Attributes:
        max_attempts: attempts in all, the first included (>= 1).
        backoff_base_ms: the wait after the first failure; it doubles per attempt.
        max_backoff_ms: no wait is longer than this (before jitter).
        jitter_factor: each wait moves by up to this fraction either way (0 to 1).
        retriable_codes: the `ErrInfo.code` values that earn another attempt.
        idempotent: False makes a retry warn (``RuntimeWarning``) once: it may repeat a side effect.
    """

    max_attempts: int = 3
    backoff_base_ms: int = 100
    max_backoff_ms: int = 60_000
    jitter_factor: float = 0.5
    retriable_codes: frozenset[str] = field(
        default_factory=lambda: frozenset({ErrCode.TRANSIENT, ErrCode.RATE_LIMIT, ErrCode.TIMEOUT})
    )
    idempotent: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_base_ms < 0 or self.max_backoff_ms < 0:
            raise ValueError(
                f"backoff_base_ms and max_backoff_ms must be >= 0, got {self.backoff_base_ms} and {self.max_backoff_ms}"
            )
        if not 0.0 <= self.jitter_factor <= 1.0:
            raise ValueError(f"jitter_factor must be within [0, 1], got {self.jitter_factor}")

    def backoff_s(self, attempt: int) -> float:
        """The wait, before jitter, after failed attempt number ``attempt`` (from 1), in seconds."""
        capped: int = min(self.backoff_base_ms * 2 ** (attempt - 1), self.max_backoff_ms)
        return capped / 1000.0


@dataclass(frozen=True)
class TimeoutPolicy:
    """A limit on each attempt; an attempt that overruns it fails with ``TIMEOUT``."""

    timeout_ms: int = 10_000

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {self.timeout_ms}")


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class ResilienceEnv:
    """Where the randomness and the waiting of retries come from: swap both in tests."""

    rng: Random
    sleep: Sleep

    @staticmethod
    def default() -> ResilienceEnv:
        """A fresh unseeded RNG and ``asyncio.sleep``."""
        return ResilienceEnv(Random(), _real_sleep)


def async_with_resilience(
    step: AsyncPlan[T],
    retry: RetryPolicy,
    timeout: TimeoutPolicy | None = None,
    env: ResilienceEnv | None = None,
) -> AsyncPlan[T]:
    """``step`` retried per ``retry``, each attempt limited by ``timeout``.

    - ``Ok`` is returned at once; an ``Err`` whose code is not in
      ``retry.retriable_codes`` is returned as it is.
    - An attempt that overruns ``timeout`` is cancelled and counts as
      ``TIMEOUT``; an exception from the step counts as ``USER_CODE``.
    - The wait after attempt ``n`` is ``min(base * 2**(n-1), max)`` moved by
      jitter, through ``env.sleep``.
    - When the attempts run out the result is ``Err(MAX_RETRIES)`` with
      ``meta["attempts"]`` and the last failure in ``meta["cause"]``.
    - With one attempt, no timeout and no env, ``step`` itself is returned.

    Cancellation of the caller is never swallowed.
    """
    if retry.max_attempts == 1 and timeout is None and env is None:
        return step

    async def attempt_once() -> Result[T, ErrInfo]:
        try:
            if timeout is None:
                return await step()
            async with asyncio.timeout(timeout.timeout_ms / 1000.0):
                return await step()
        except TimeoutError:
            if timeout is None:
                return Err(user_error(TimeoutError("the step raised TimeoutError")))
            return Err(ErrInfo(ErrCode.TIMEOUT, f"attempt timed out after {timeout.timeout_ms}ms"))
        except Exception as exc:
            return Err(user_error(exc))

    async def run() -> Result[T, ErrInfo]:
        local = env or ResilienceEnv.default()
        warned = False
        last: Err[ErrInfo] | None = None
        for attempt in range(1, retry.max_attempts + 1):
            if attempt > 1 and not retry.idempotent and not warned:
                warnings.warn(
                    "retrying a step marked non-idempotent: its side effects may happen twice",
                    RuntimeWarning,
                    stacklevel=2,
                )
                warned = True
            res = await attempt_once()
            if isinstance(res, Ok) or res.error.code not in retry.retriable_codes:
                return res
            last = res
            if attempt < retry.max_attempts:
                base = retry.backoff_s(attempt)
                jitter = base * retry.jitter_factor * (2.0 * local.rng.random() - 1.0)
                await local.sleep(max(0.0, base + jitter))
        assert last is not None  # the loop ran at least once and did not return
        meta: dict[str, object] = {"attempts": retry.max_attempts, "cause": last.error}
        if not retry.idempotent:
            meta["warning"] = "retried a non-idempotent step"
        return Err(
            ErrInfo(
                ErrCode.MAX_RETRIES,
                f"failed after {retry.max_attempts} attempts; last: {last.error.code}: {last.error.msg}",
                meta,
            )
        )

    return run


def resilient_mapper(
    f: Callable[[T], AsyncPlan[U]],
    retry: RetryPolicy,
    timeout: TimeoutPolicy | None = None,
    env: ResilienceEnv | None = None,
) -> Callable[[T], AsyncPlan[U]]:
    """``f`` with `async_with_resilience` applied to every plan it makes."""

    def wrapped(item: T) -> AsyncPlan[U]:
        return async_with_resilience(f(item), retry, timeout, env)

    return wrapped
