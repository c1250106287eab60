"""`apply_stream_policy` and `apply_batch_policy`: read the policy once, then build the engine.

Everything a stream needs from its policy (the runtime, the workers, the
fairness key and weights, the rate-limit key and cost) is worked out here,
when the stream is described, so nothing is re-derived per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, ErrInfo, Result
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.batching import split_codes
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import EventSink, null_sink
from funcpipe.policy.fairness import DeficitRoundRobin, field_key
from funcpipe.policy.models import Batch, Policy
from funcpipe.policy.stream._calls import call_batch, plan_for
from funcpipe.policy.stream._engine import Engine, sequential

T = TypeVar("T")
U = TypeVar("U")


def apply_stream_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[T], AsyncPlan[U]],
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
    key: Callable[[T], str] | None = None,
    cost: Callable[[T], int] | None = None,
    buffer: int | None = None,
) -> AsyncGen[U]:
    """Map the call ``f`` over ``stream`` under the policy's stream and call-level parts.

    Args:
        policy: concurrency (default 1) and fairness come from here; the
            call-level parts apply through ``runtime``.
        stream: the input; each of its ``Err`` passes through untouched.
        f: makes the plan of the external call for one input.
        runtime: the call-level interpreter; by default a fresh one, made
            only if the policy has call-level parts.
        ordered: yield results in input order (in each key's order with
            fairness); otherwise as they complete.
        on_error: enriches the error of a failed call with its input.
        key: the fairness key of an input; by default read from the field
            ``policy.fairness.key`` names. Giving one turns fairness on.
        cost: the rate-limit cost of an input (default 1).
        buffer: items waiting for a worker at most (see the module docs).

    Returns:
        The stream of results, one per input, with at most
        ``policy.concurrency`` calls in flight.
    """
    _check_buffer(buffer)
    rt = runtime if runtime is not None else _default_runtime(policy, REAL_CLOCK)
    plan = plan_for(f, rt, cost, _rate_key(policy))
    fair_key = _fair_key(policy, key)
    workers = _workers(policy, rt)
    if workers == 1 and fair_key is None:
        return sequential(stream, plan, on_error)
    weights = _weights(policy)

    def run() -> AsyncIterator[Result[U, ErrInfo]]:
        engine: Engine[T, U] = Engine(
            stream(),
            plan_for=plan,
            on_error=on_error,
            workers=workers,
            ordered=ordered,
            key=fair_key,
            weights=weights,
            buffer=buffer,
        )
        return engine.run()

    return run


def apply_batch_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[Sequence[T]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
    batch: Batch,
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    clock: Clock = REAL_CLOCK,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
    cost: Callable[[Sequence[T]], int] | None = None,
    key: Callable[[T], str] | None = None,
    shutdown: asyncio.Event | None = None,
    events: EventSink = null_sink,
    stage: str = "",
    buffer: int | None = None,
    split: bool = True,
    chars: Callable[[Sequence[T]], int] | None = None,
    weight: Callable[[T], int] | None = None,
) -> AsyncGen[U]:
    """Group ``stream`` into batches and map the batch call ``f`` over them.

    A batch is up to ``batch.size`` items (and, with ``weight``, up to
    ``batch.max_tokens`` of their weight), or those that have arrived
    ``batch.max_wait`` after its first item, whichever comes first; what is
    left is flushed at the end of the stream and as soon as ``shutdown`` is
    set. When every worker is busy a due batch keeps filling, up to its size,
    until one is free. Batches run concurrently up to ``policy.concurrency``.

    Args:
        policy: concurrency and fairness come from here; the call-level
            parts apply to each batch call through ``runtime``.
        stream: the input; each of its ``Err`` passes through untouched.
        f: makes the plan of one batch call; its value holds one result per
            item, in the batch's order.
        batch: the batch size and maximum wait.
        runtime: the call-level interpreter; by default a fresh one on
            ``clock``, made only if the policy has call-level parts.
        ordered: yield results in input order (in each key's order with
            fairness); otherwise as they complete.
        clock: times ``max_wait``.
        on_error: enriches each failed item's error with the item.
        cost: the rate-limit cost of a batch; by default its item count when
            ``rate_limit.cost`` is ``items`` or ``tokens``, else 1.
        key: the fairness key of an input, as in `apply_stream_policy`.
        shutdown: once set, waiting items leave at once in partial batches.
        events: receives a ``batch`` event for each batch sent and a
            ``split`` event for each failed batch (or part) split in two.
        stage: the stage named in those events.
        buffer: items waiting for a worker at most (see the module docs).
        split: isolate poison items by splitting failed batches (see the
            module docs); False fails every item of a failed batch alike.
        chars: the characters of text a batch sends, from which the
            runtime's meter estimates its tokens (usage and budgets).
        weight: the estimated tokens of an input; with ``batch.max_tokens``,
            a batch stops before the input that would pass it.

    Returns:
        The stream of per-item results. A batch-level ``Err`` the items may
        cause is split down to the items that fail alone, each with its own
        error; any other fails each of its items with that error. A result
        list of the wrong length fails each with ``SERVICE_SPECIFIC``.
    """
    _check_buffer(buffer)
    rt = runtime if runtime is not None else _default_runtime(policy, clock)
    rate_key = _rate_key(policy)
    if cost is None and policy.rate_limit is not None and policy.rate_limit.cost != 1:
        cost = len
    call = call_batch(
        f, rt, on_error, cost, rate_key, split_codes(policy) if split else frozenset(), events, stage, clock, chars
    )
    fair_key = _fair_key(policy, key)
    weights = _weights(policy)

    def run() -> AsyncIterator[Result[U, ErrInfo]]:
        engine: Engine[T, U] = Engine(
            stream(),
            call_batch=call,
            workers=_workers(policy, rt),
            ordered=ordered,
            key=fair_key,
            weights=weights,
            buffer=buffer,
            size=batch.items,
            max_wait=batch.max_wait,
            weight=weight if batch.max_tokens is not None else None,
            max_weight=batch.max_tokens,
            clock=clock,
            shutdown=shutdown,
            events=events,
            stage=stage,
        )
        return engine.run()

    return run


def _check_buffer(buffer: int | None) -> None:
    if buffer is not None and buffer < 1:
        raise ValueError(f"buffer must be >= 1 item, got {buffer}")


def _default_runtime(policy: Policy, clock: Clock) -> PolicyRuntime | None:
    """A runtime for the policy's call-level parts, or None when it has none to apply."""
    if policy.timeout is None and policy.retry is None and policy.rate_limit is None and policy.circuit_breaker is None:
        return None
    return PolicyRuntime(policy, clock=clock)


def _rate_key(policy: Policy) -> Callable[[object], str] | None:
    limit = policy.rate_limit
    return field_key(limit.key) if limit is not None and limit.key else None


def _fair_key(policy: Policy, key: Callable[[T], str] | None) -> Callable[[T], str] | None:
    if key is not None:
        return key
    if policy.fairness is not None:
        return field_key(policy.fairness.key)
    return None


def _workers(policy: Policy, rt: PolicyRuntime | None) -> int:
    """How many worker tasks serve the policy's concurrency (see the module docs)."""
    c = policy.concurrency or 1
    retries = policy.retry is not None and policy.retry.max_attempts > 1
    # Only a runtime bounding the slots itself lets workers outnumber them.
    return 2 * c if rt is not None and retries and policy.concurrency is not None else c


def _weights(policy: Policy) -> Mapping[str, float] | None:
    if policy.fairness is None:
        return None
    DeficitRoundRobin(policy.fairness.weights)  # refuses bad weights now, not when the stream runs
    return policy.fairness.weights
