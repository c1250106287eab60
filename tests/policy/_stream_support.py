"""Instrumented services and sources for the stream-policy tests, on virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result

ERR = ErrInfo(ErrCode.BAD_INPUT, "undecodable")


def now() -> float:
    """The running loop's (virtual) time."""
    return asyncio.get_running_loop().time()


@dataclass
class Service:
    """A fake external service: each call takes ``latency(value)`` and records itself.

    Attributes:
        starts: (time, value) of every call, in start order.
        ends: (time, value) of every call that finished.
        in_flight / max_in_flight: calls running now / at most.
        cancelled: calls cancelled while running.
    """

    latency: Callable[[Any], float] = lambda _: 0.0
    fail: Callable[[Any], ErrInfo | None] = lambda _: None
    starts: list[tuple[float, Any]] = field(default_factory=list)
    ends: list[tuple[float, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0

    def call(self, value: Any) -> AsyncPlan[Any]:
        """The plan of one call for ``value``; its result is ``value`` (or the scripted error)."""

        async def run() -> Result[Any, ErrInfo]:
            self.starts.append((now(), value))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                delay = self.latency(value)
                if delay:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1
            self.ends.append((now(), value))
            error = self.fail(value)
            return Ok(value) if error is None else Err(error)

        return run

    def call_batch(self, values: Sequence[Any]) -> AsyncPlan[Sequence[Result[Any, ErrInfo]]]:
        """The plan of one batch call: one call whose value is the per-item results."""
        batch = list(values)
        one = self.call(tuple(batch))

        async def run() -> Result[Sequence[Result[Any, ErrInfo]], ErrInfo]:
            res = await one()
            if isinstance(res, Err):
                return res
            return Ok([Ok(v) if self.fail(v) is None else Err(self.fail(v)) for v in batch])  # type: ignore[arg-type]

        return run

    @property
    def batches(self) -> list[tuple[Any, ...]]:
        """The batches called, in start order (for `call_batch`)."""
        return [v for _, v in self.starts]


@dataclass
class Source:
    """A stream that records how far it was read and whether it was closed.

    Each element is ``Ok(v)``, or the given ``Err``; ``arrivals`` (if given)
    are the virtual times at which the elements become available.
    """

    results: Sequence[Result[Any, ErrInfo]]
    arrivals: Sequence[float] | None = None
    pulled: int = 0
    closed: bool = False
    fail_after: int | None = None

    def __call__(self) -> AsyncIterator[Result[Any, ErrInfo]]:
        return self._run()

    async def _run(self) -> AsyncIterator[Result[Any, ErrInfo]]:
        try:
            for i, r in enumerate(self.results):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("source broke")
                if self.arrivals is not None:
                    await asyncio.sleep(max(0.0, self.arrivals[i] - now()))
                self.pulled += 1
                yield r
        finally:
            self.closed = True


def source(values: Iterable[Any], arrivals: Sequence[float] | None = None) -> Source:
    """A `Source` of ``Ok(v)`` for each value."""
    return Source([Ok(v) for v in values], arrivals)


async def drain(gen: AsyncGen[Any]) -> list[Result[Any, ErrInfo]]:
    """Collect a stream, closing it properly."""
    out: list[Result[Any, ErrInfo]] = []
    it = gen()
    try:
        async for r in it:
            out.append(r)
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    return out


async def timed(gen: AsyncGen[Any]) -> list[tuple[float, Result[Any, ErrInfo]]]:
    """Collect a stream with the virtual time each result came out."""
    out: list[tuple[float, Result[Any, ErrInfo]]] = []
    it = gen()
    try:
        async for r in it:
            out.append((now(), r))
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    return out


def others() -> set[asyncio.Task[Any]]:
    """Every task but the current one."""
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))
