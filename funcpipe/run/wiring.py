"""Graph wiring: the stages' streams joined by bounded buffers, and what each stage is given.

`wire` walks the compiled stages in topological order. A stage that reads
one stage takes its stream; one that reads several merges them; a stage
read by several is teed into bounded queues, one per reader, so a slow
reader holds the others back rather than letting memory grow. What leaves
the terminal stages comes out as one stream of ``(terminal id, item)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from funcpipe.adapters.resources import Resources
from funcpipe.compile import CompiledPipeline, CompiledStage
from funcpipe.core import AsyncGen, ErrInfo, Item, Ok, Result, async_gen_empty, async_gen_gather
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.budget import Meter
from funcpipe.policy.clock import Clock
from funcpipe.policy.events import EventSink
from funcpipe.policy.shared import SharedPolicy
from funcpipe.ports import EmbedPort
from funcpipe.stages.base import StageContext, no_origin


class LazyAdapters(Mapping[str, Any]):
    """The pipeline's adapters by name, each created on first use with the run's resources.

    An adapter that no stage uses (the query's generator, say) is never created.

    Args:
        pipeline: the compiled pipeline.
        resources: what adapters are lent.
        made: adapters already made, by name, shared with an earlier run or
            query; those made now are added to it.
    """

    def __init__(
        self, pipeline: CompiledPipeline, resources: Resources | Any, made: dict[str, Any] | None = None
    ) -> None:
        self._specs = pipeline.adapters
        self._resources = resources
        self._made: dict[str, Any] = {} if made is None else made

    def __getitem__(self, name: str) -> Any:
        if name not in self._made:
            ad = self._specs[name]
            self._made[name] = ad.kind.load_factory()(ad.config, self._resources)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def stage_context(
    stage: CompiledStage,
    adapters: LazyAdapters,
    *,
    clock: Clock,
    events: EventSink,
    seed: int,
    base_dir: Path,
    state_dir: Path,
    shutdown: asyncio.Event | None,
    origin_of: Callable[[str], str] = no_origin,
    prepared: bool = False,
    meter: Meter | None = None,
    shared_policy: SharedPolicy | None = None,
) -> StageContext:
    """What ``stage`` is given at run time: its adapter, policy runtime, and what its kind declared it needs.

    ``meter`` counts, prices and budgets the stage's calls (see `funcpipe.run.costs`).
    """
    kind = stage.kind
    embedder = cast(EmbedPort, adapters[stage.embedder]) if kind.embedder and stage.embedder else None
    return StageContext(
        stage_id=stage.id,
        adapter=adapters[stage.adapter] if stage.adapter else None,
        policy=stage.policy,
        batch=stage.run_batch,
        runtime=PolicyRuntime(
            stage.policy,
            clock=clock,
            events=events,
            stage=stage.id,
            seed=seed,
            meter=meter,
            shared=shared_policy,
            scope=stage.adapter or stage.id,
        ),
        events=events,
        clock=clock,
        base_dir=base_dir,
        state_dir=state_dir,
        adapters=adapters,
        embedder=embedder,
        origin_of=origin_of if kind.origins else no_origin,
        prepared=prepared,
        shutdown=shutdown,
    )


_END = object()


def tee(tg: asyncio.TaskGroup, gen: AsyncGen[Item], n: int, buffer: int) -> list[AsyncGen[Item]]:
    """``n`` copies of ``gen``, each behind a queue of ``buffer`` results, pumped by one task of ``tg``.

    The pump starts when the first copy is read; an exception in ``gen``
    reaches every copy.
    """
    queues: list[asyncio.Queue[object]] = [asyncio.Queue(buffer) for _ in range(n)]
    started = False

    async def pump() -> None:
        try:
            async with contextlib.aclosing(gen()) as it:  # type: ignore[type-var]
                async for r in it:
                    for q in queues:
                        await q.put(r)
        except Exception as exc:
            for q in queues:
                await q.put(exc)
            return
        for q in queues:
            await q.put(_END)

    def branch(q: asyncio.Queue[object]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            nonlocal started
            if not started:
                started = True
                tg.create_task(pump())
            while True:
                r = await q.get()
                if r is _END:
                    return
                if isinstance(r, Exception):
                    raise r
                yield r  # type: ignore[misc]

        return run

    return [branch(q) for q in queues]


def tag(stage_id: str, gen: AsyncGen[Item]) -> AsyncGen[tuple[str, Item]]:
    """``gen``'s items paired with ``stage_id``; errors pass unchanged."""

    async def run() -> AsyncIterator[Result[tuple[str, Item], ErrInfo]]:
        async for r in gen():
            if isinstance(r, Ok):
                yield Ok((stage_id, r.value))
            else:
                yield r

    return run


StageBuilder = Callable[[CompiledStage, AsyncGen[Item]], AsyncGen[Item]]
"""``(stage, upstream) -> the stage's output stream``: how the runner makes one stage."""


def wire(
    pipeline: CompiledPipeline, tg: asyncio.TaskGroup, build: StageBuilder, *, buffer: int
) -> AsyncGen[tuple[str, Item]]:
    """The whole graph as one stream of ``(terminal id, item)``.

    Args:
        pipeline: the compiled pipeline.
        tg: the task group the tees' pumps run in.
        build: makes one stage's output from its upstream.
        buffer: capacity of the queues between fanned-out or merged stages.
    """
    branches: dict[str, list[AsyncGen[Item]]] = {}

    def take(stage_id: str) -> AsyncGen[Item]:
        return branches[stage_id].pop()

    for st in pipeline.stages:
        if not st.inputs:
            upstream: AsyncGen[Item] = async_gen_empty()
        elif len(st.inputs) == 1:
            upstream = take(st.inputs[0])
        else:
            # A fair stage must see the items waiting: a deep merge queue would hide them from it.
            depth = 1 if st.policy.fairness is not None else buffer
            upstream = async_gen_gather([take(i) for i in st.inputs], len(st.inputs), depth)
        out = build(st, upstream)
        n = max(1, len(st.consumers))
        branches[st.id] = tee(tg, out, n, buffer) if n > 1 else [out]

    tagged = [tag(t.id, branches[t.id][0]) for t in pipeline.terminals]
    return tagged[0] if len(tagged) == 1 else async_gen_gather(tagged, len(tagged), buffer)


__all__ = ["LazyAdapters", "StageBuilder", "stage_context", "tag", "tee", "wire"]
