"""Every stage closes its upstream on every exit path: early close, an error downstream, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import pytest

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.core import AsyncGen, ErrInfo, Item, Ok, Result
from funcpipe.policy.models import Batch, Policy
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import CallableConfig, ChunkConfig, CleanConfig, EmbedConfig
from funcpipe.stages.text import chunk, clean
from funcpipe.stages.user import filter_stage, map_stage
from funcpipe.stages.vectors import embed


def keep(item: Item) -> bool:
    """A filter that keeps every item."""
    return True


def same(item: Item) -> object:
    """A map that changes nothing."""
    return item.data


class Upstream:
    """A source of text items that records whether its ``finally`` ran; ``hang`` waits forever after ``n``."""

    def __init__(self, n: int = 50, *, hang: bool = False) -> None:
        self.n = n
        self.hang = hang
        self.closed = False
        self.started = asyncio.Event()

    def __call__(self) -> AsyncIterator[Result[Item, ErrInfo]]:
        return self._run()

    async def _run(self) -> AsyncIterator[Result[Item, ErrInfo]]:
        try:
            for i in range(self.n):
                yield Ok(Item(f"id{i}", f"some words of text number {i}.", {}, f"src{i}"))
            self.started.set()
            if self.hang:
                await asyncio.Event().wait()
        finally:
            self.closed = True


def _ctx(**kw: object) -> StageContext:
    return StageContext(stage_id="s", **kw)  # type: ignore[arg-type]


STAGES: dict[str, Callable[[], Transform]] = {
    "text.clean": lambda: clean(CleanConfig(), _ctx()),
    "text.chunk": lambda: chunk(ChunkConfig(size=16, overlap=0), _ctx()),
    "map": lambda: map_stage(CallableConfig(fn=f"{__name__}:same"), _ctx()),
    "map, concurrent": lambda: map_stage(CallableConfig(fn=f"{__name__}:same"), _ctx(policy=Policy(concurrency=4))),
    "filter": lambda: filter_stage(CallableConfig(fn=f"{__name__}:keep"), _ctx()),
    "embed": lambda: embed(
        EmbedConfig(), _ctx(adapter=HashingEmbedder(HashingConfig(kind="hashing", dim=8)), batch=Batch(size=4))
    ),
}
stages = pytest.mark.parametrize("make", list(STAGES.values()), ids=list(STAGES))


def _run(stage: Transform, up: Upstream) -> AsyncGen[Item]:
    return stage(up)


@stages
def test_a_stage_closes_its_upstream_when_its_consumer_stops_early(make: Callable[[], Transform]) -> None:
    up = Upstream()

    async def main() -> None:
        async with aclosing(_run(make(), up)()) as it:
            async for _ in it:
                break
        # At once, not when the event loop finalises the abandoned generator.
        assert up.closed

    asyncio.run(main())


@stages
def test_a_stage_closes_its_upstream_when_its_consumer_fails(make: Callable[[], Transform]) -> None:
    up = Upstream()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="downstream failed"):
            async with aclosing(_run(make(), up)()) as it:
                async for _ in it:
                    raise RuntimeError("downstream failed")
        assert up.closed

    asyncio.run(main())


@stages
def test_a_stage_closes_its_upstream_when_its_consumer_is_cancelled(make: Callable[[], Transform]) -> None:
    up = Upstream(3, hang=True)

    async def consume() -> None:
        async with aclosing(_run(make(), up)()) as it:
            async for _ in it:
                pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(up.started.wait(), timeout=30)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert up.closed

    asyncio.run(main())
