"""Structured policy events: the single feed for progress, logs, metrics and reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal[
    "attempt", "wait", "success", "failure", "breaker", "limited", "filtered", "batch", "split", "usage", "budget"
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a policy interpreter or stage did.

    Attributes:
        kind: attempt | wait | success | failure | breaker | limited | filtered | batch | split |
            usage (one attempt's requests, tokens, ``counted`` and cost) | budget (a call a budget refused).
        stage: the stage id ("" outside a pipeline).
        item_id: the item (or first item of a batch) concerned, if any.
        attempt: the attempt number, 1-based, where relevant.
        duration: seconds: a call's latency (success/failure) or a wait's length (wait/limited).
        code: the error code (failure) or the new state (breaker).
        at: the clock's time when the event happened.
        data: anything else (e.g. ``{"items": 64}``).
    """

    kind: EventKind
    stage: str = ""
    item_id: str | None = None
    attempt: int = 0
    duration: float = 0.0
    code: str | None = None
    at: float = 0.0
    data: dict[str, object] = field(default_factory=dict)


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
