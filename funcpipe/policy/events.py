"""Structured policy events: the single feed for progress, logs, metrics and reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal[
    "attempt",
    "wait",
    "success",
    "failure",
    "breaker",
    "limited",
    "filtered",
    "batch",
    "split",
    "call_end",
    "dead_letter",
    "run_start",
    "run_end",
    "usage",
    "budget",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a policy interpreter, a stage or the runner did.

    Kinds, by who emits them:

    - one policy-wrapped call (`funcpipe.policy.apply.PolicyRuntime`): per
      attempt ``limited`` (a wait at the rate limiter), ``attempt``,
      ``success`` or ``failure`` (``data.message``, and ``data.status`` /
      ``data.retry_after`` when the service gave them), ``wait`` (a back-off
      before the next attempt), and last ``call_end`` (``attempt``: the
      attempts made; ``code``: None on success; ``duration``: the whole
      call; ``data.items``: the items it carried). All of them carry the
      same ``call`` number; the first of them marks the call's start;
    - ``breaker`` (a state change), ``batch`` (a batch left), ``split`` (a
      failed batch split in halves), ``filtered`` (an item dropped on purpose);
    - the runner: ``run_start`` (``data``: ``run_id``, ``pipeline``,
      ``stages``), ``dead_letter`` (an item failed for good: ``code``,
      ``data.message``, ``data.status``), and ``run_end`` (``code``: the
      status, ``duration``: the run's, ``data``: ``exit_code``, ``message``
      and the ``accounting``).

    Attributes:
        kind: what happened (see above); also ``usage`` (one attempt's requests,
            tokens, ``counted`` and cost) and ``budget`` (a call a budget refused).
        stage: the stage id ("" outside a pipeline, and for run events).
        item_id: the item (or first item of a batch) concerned, if any.
        attempt: the attempt number, 1-based, where relevant.
        duration: seconds: a call's latency (success/failure) or a wait's length (wait/limited).
        code: the error code (failure) or the new state (breaker).
        at: the clock's time when the event happened.
        data: anything else (e.g. ``{"items": 64}``).
        call: the policy-wrapped call the event belongs to (0: none); unique in a process.
    """

    kind: EventKind
    stage: str = ""
    item_id: str | None = None
    attempt: int = 0
    duration: float = 0.0
    code: str | None = None
    at: float = 0.0
    data: dict[str, object] = field(default_factory=dict)
    call: int = 0


EventSink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """Discard events."""


class EventLog:
    """An `EventSink` that keeps every event (for tests)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]
