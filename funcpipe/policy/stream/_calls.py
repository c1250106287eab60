"""The calls a stream's workers make: one plan per item, or one batch call with its poison split out.

`call_batch` spreads a batch call's result back over the batch's items. A
batch that fails with a code that may blame its items and that the policy
does not retry (`funcpipe.policy.batching.split_codes`) is split in halves,
each a call of its own under the policy, recursively, until the items that
fail alone are found; see `funcpipe.policy.stream` for the whole rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result, user_error
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.batching import WHOLE_CALL, may_split
from funcpipe.policy.clock import Clock
from funcpipe.policy.events import Event, EventSink
from funcpipe.policy.stream._engine import CallBatch

T = TypeVar("T")
U = TypeVar("U")


def item_id(value: object) -> str | None:
    """The id of ``value`` if it is an `Item`."""
    return value.id if isinstance(value, Item) else None


def plan_for(
    f: Callable[[T], AsyncPlan[U]],
    rt: PolicyRuntime | None,
    cost: Callable[[T], int] | None,
    rate_key: Callable[[object], str] | None,
) -> Callable[[T], AsyncPlan[U]]:
    """The plan of the call for one input: ``f``'s, under the runtime if there is one."""
    if rt is None:
        return f
    apply = rt.apply
    if cost is None and rate_key is None:
        # The usual stage: every call costs 1 in one bucket. It runs once per item, so it is kept lean.
        def plain_plan_for(value: T) -> AsyncPlan[U]:
            return apply(f(value), item_id=value.id if isinstance(value, Item) else None)

        return plain_plan_for

    def plan_for(value: T) -> AsyncPlan[U]:
        return apply(
            f(value),
            item_id=item_id(value),
            cost=cost(value) if cost is not None else 1,
            key=rate_key(value) if rate_key is not None else None,
        )

    return plan_for


def call_batch(
    f: Callable[[Sequence[T]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
    rt: PolicyRuntime | None,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None,
    cost: Callable[[Sequence[T]], int] | None,
    rate_key: Callable[[object], str] | None,
    split_on: frozenset[str],
    events: EventSink,
    stage: str,
    clock: Clock,
    chars: Callable[[Sequence[T]], int] | None = None,
) -> CallBatch[T, U]:
    """The call for one batch, its result spread back over the batch's items.

    A batch that fails with a code in ``split_on`` is split in halves, and
    each half is a call of its own under the policy, recursively, until the
    items that fail alone are found (see the module docs). ``chars`` gives
    the characters of text a batch sends, for the runtime's meter.
    """

    async def attempt(values: list[T], part: bool) -> list[Result[U, ErrInfo]] | ErrInfo:
        """One call: its per-item results, or the error of the call as a whole."""

        async def guarded() -> Result[Sequence[Result[U, ErrInfo]] | _PartFailed, ErrInfo]:
            try:
                res = await f(values)()
            except Exception as exc:
                res = Err(user_error(exc))
            # A part failing because of its items is an answer, not an outage:
            # the breaker should count the poison once (alone), not once per level.
            if isinstance(res, Err) and len(values) > 1 and may_split(res.error, split_on):
                return Ok(_PartFailed(res.error))
            return res

        try:
            plan: AsyncPlan[Sequence[Result[U, ErrInfo]] | _PartFailed] = guarded if part else f(values)
            if rt is not None:
                # A keyed limit charges a mixed batch to its first item's key.
                plan = rt.apply(
                    plan,
                    item_id=item_id(values[0]),
                    cost=cost(values) if cost is not None else 1,
                    key=rate_key(values[0]) if rate_key is not None else None,
                    chars=chars(values) if chars is not None else None,
                    items=len(values),
                )
            res = await plan()
        except Exception as exc:
            res = Err(user_error(exc))
        if isinstance(res, Err):
            return res.error
        value = res.value
        if isinstance(value, _PartFailed):
            return value.error
        try:
            results = list(value)
        except TypeError:  # a malformed answer, like a wrong count: the service's fault
            results = []
        if len(results) == len(values):
            return results
        return ErrInfo(
            ErrCode.SERVICE_SPECIFIC,
            f"the batch call returned {len(results)} results for {len(values)} items",
            # The service miscounts whatever the items: halving the batch would not help.
            {"expected": len(values), "got": len(results), WHOLE_CALL: True},
        )

    async def isolate(values: list[T], error: ErrInfo, out: list[Result[U, ErrInfo]]) -> ErrInfo | None:
        """Split the failed ``values`` in halves and call each; append one result per item to ``out``.

        Returns the error that stopped the splitting (the service is unwell),
        or None when every item has its own result.
        """
        mid = len(values) // 2
        halves = (values[:mid], values[mid:])
        events(
            Event(
                "split",
                stage,
                item_id(values[0]),
                at=clock.now(),
                data={"items": len(values), "into": [len(h) for h in halves], "code": error.code},
            )
        )
        for half in halves:
            got = await attempt(half, True)
            if isinstance(got, list):
                out.extend(got)
            elif len(half) > 1 and may_split(got, split_on):
                stopped = await isolate(half, got, out)
                if stopped is not None:
                    return stopped
            elif may_split(got, split_on):
                out.append(Err(got))  # the poison: its own call's error
            else:
                return got
        return None

    async def call(values: list[T]) -> list[Result[U, ErrInfo]]:
        got = await attempt(values, False)
        if isinstance(got, list):
            results = got
        elif len(values) > 1 and may_split(got, split_on):
            results = []
            stopped = await isolate(values, got, results)
            if stopped is not None:
                # Every item not yet answered shares the error that stopped the search.
                results.extend([Err(stopped)] * (len(values) - len(results)))
        else:
            results = [Err(got)] * len(values)
        if on_error is None:
            return results
        return [Err(on_error(v, r.error)) if isinstance(r, Err) else r for v, r in zip(values, results, strict=True)]

    return call


@dataclass(frozen=True, slots=True)
class _PartFailed:
    """A split part's call failed because of its items: carried as a value past the breaker."""

    error: ErrInfo
