"""Instrumented plans and streams shared by the core tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, ErrInfo, Ok, Result

T = TypeVar("T")


@dataclass
class Probe:
    """Records what descriptions did when driven: runs, pulls, concurrency, cancellations."""

    runs: int = 0
    pulls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    events: list[str] = field(default_factory=list)

    def enter(self) -> None:
        """Count one more computation in flight."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def plan(self, value: T, *, yields: int = 0) -> AsyncPlan[T]:
        """A plan that counts its runs and concurrency, gives way ``yields`` times, then succeeds."""

        async def run() -> Result[T, ErrInfo]:
            self.runs += 1
            self.enter()
            try:
                for _ in range(yields):
                    await asyncio.sleep(0)
                return Ok(value)
            finally:
                self.in_flight -= 1

        return run

    def stream(self, values: Iterable[T]) -> AsyncGen[T]:
        """A stream of ``Ok`` values that counts its runs and every item pulled from it."""

        async def run() -> AsyncIterator[Result[T, ErrInfo]]:
            self.runs += 1
            for v in values:
                self.pulls += 1
                yield Ok(v)

        return run

    def blocked(self, started: asyncio.Event, name: str) -> AsyncPlan[object]:
        """A plan that sets ``started`` and then waits forever, noting its cancellation."""

        async def run() -> Result[object, ErrInfo]:
            self.runs += 1
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                self.events.append(f"cancelled {name}")
                raise
            raise AssertionError("unreachable: nothing sets the event")

        return run


async def settle(rounds: int = 20) -> None:
    """Give every ready task a chance to run, without waiting on the clock."""
    for _ in range(rounds):
        await asyncio.sleep(0)
