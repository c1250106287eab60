"""Per-attempt timeouts and the total deadline of `apply_policy`: expiry is a value, cancellation is not."""

from __future__ import annotations

import asyncio

import pytest

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.policy import Backoff, Policy, PolicyRuntime, RateLimit, Retry, Timeout, apply_policy
from funcpipe.testing import VirtualClock, run_virtual
from tests.policy._support import Service

NO_JITTER = Retry(max_attempts=3, backoff=Backoff(kind="fixed", initial=1.0), jitter="none")


def sleeper(seconds: float, cleaned: list[float] | None = None) -> AsyncPlan[str]:
    async def run() -> Result[str, ErrInfo]:
        try:
            await asyncio.sleep(seconds)
        finally:
            if cleaned is not None:
                cleaned.append(VirtualClock().now())
        return Ok("slept")

    return run


def test_an_attempt_that_overruns_becomes_a_timeout_error() -> None:
    async def main() -> tuple[object, float]:
        result = await apply_policy(Policy(timeout=Timeout(attempt=2.0)), sleeper(10))()
        return result, VirtualClock().now()

    result, ended = run_virtual(main)

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["timeout"], result.error.meta["attempts"]) == (
        ErrCode.TIMEOUT,
        "attempt",
        1,
    )
    assert ended == 2.0


def test_a_timed_out_attempt_is_cancelled_and_cleans_up() -> None:
    cleaned: list[float] = []

    run_virtual(apply_policy(Policy(timeout=Timeout(attempt=2.0)), sleeper(10, cleaned)))

    assert cleaned == [2.0]


def test_timed_out_attempts_are_retried() -> None:
    service = Service(latency=5.0)
    policy = Policy(timeout=Timeout(attempt=2.0), retry=NO_JITTER)

    result = run_virtual(apply_policy(policy, service.plan()))

    assert isinstance(result, Err) and result.error.meta["attempts"] == 3
    assert service.starts == [0.0, 3.0, 6.0]
    assert service.cancelled == 3


def test_the_total_deadline_cuts_an_attempt_short() -> None:
    policy = Policy(timeout=Timeout(attempt=10.0, total=5.0), retry=NO_JITTER)

    async def main() -> tuple[object, float]:
        result = await apply_policy(policy, sleeper(100))()
        return result, VirtualClock().now()

    result, ended = run_virtual(main)

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["timeout"]) == (ErrCode.TIMEOUT, "total")
    assert ended == 5.0


def test_a_plan_raising_timeout_error_itself_is_not_mistaken_for_a_timeout() -> None:
    async def run() -> Result[str, ErrInfo]:
        raise TimeoutError("the plan's own")

    result = run_virtual(apply_policy(Policy(timeout=Timeout(attempt=2.0)), run))

    assert isinstance(result, Err) and result.error.code == ErrCode.USER_CODE


def test_a_plan_raising_an_exception_becomes_a_user_code_error() -> None:
    async def run() -> Result[str, ErrInfo]:
        raise ValueError("bad")

    result = run_virtual(apply_policy(Policy(), run))

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["exception"]) == (ErrCode.USER_CODE, "ValueError")


def outer_cancel(policy: Policy, plan: AsyncPlan[object], after: float) -> type[BaseException] | None:
    async def main() -> type[BaseException] | None:
        task = asyncio.ensure_future(apply_policy(policy, plan)())
        await asyncio.sleep(after)
        task.cancel()
        try:
            await task
        except BaseException as exc:
            return type(exc)
        return None

    return run_virtual(main)


def test_an_outer_cancellation_during_a_call_propagates() -> None:
    assert outer_cancel(Policy(timeout=Timeout(attempt=5.0, total=50.0)), sleeper(10), 1.0) is asyncio.CancelledError


def test_an_outer_cancellation_during_backoff_propagates() -> None:
    service = Service(["TRANSIENT"] * 5)

    cancelled = outer_cancel(Policy(retry=NO_JITTER, timeout=Timeout(total=50.0)), service.plan(), 0.5)

    assert cancelled is asyncio.CancelledError
    assert service.calls == 1


def test_an_outer_cancellation_while_rate_limited_propagates() -> None:
    policy = Policy(rate_limit=RateLimit(requests=1, per=60.0), timeout=Timeout(total=600.0))
    service = Service()

    async def main() -> type[BaseException] | None:
        runtime = PolicyRuntime(policy)
        await runtime.apply(service.plan())()
        task = asyncio.ensure_future(runtime.apply(service.plan())())
        await asyncio.sleep(1.0)
        task.cancel()
        try:
            await task
        except BaseException as exc:
            return type(exc)
        return None

    assert run_virtual(main) is asyncio.CancelledError
    assert service.calls == 1


def test_an_outer_timeout_expiring_with_the_attempt_timeout_is_not_swallowed() -> None:
    policy = Policy(timeout=Timeout(attempt=3.0))

    async def main() -> str:
        try:
            async with asyncio.timeout(3.0):
                result = await apply_policy(policy, sleeper(10))()
        except TimeoutError:
            return "outer timeout seen"
        return f"swallowed into {result}"

    assert run_virtual(main) == "outer timeout seen"


@pytest.mark.parametrize("attempt", [None, 1.0])
def test_no_timeout_error_or_cancellation_reaches_the_caller_on_expiry(attempt: float | None) -> None:
    policy = Policy(timeout=Timeout(attempt=attempt, total=2.5), retry=NO_JITTER)

    result = run_virtual(apply_policy(policy, sleeper(100)))

    assert isinstance(result, Err) and result.error.code == ErrCode.TIMEOUT


def test_a_zero_total_deadline_makes_no_call() -> None:
    service = Service()

    result = run_virtual(apply_policy(Policy(timeout=Timeout.model_construct(total=0.0)), service.plan()))

    assert isinstance(result, Err)
    assert (result.error.code, result.error.meta["attempts"]) == (ErrCode.TIMEOUT, 0)
    assert service.calls == 0
