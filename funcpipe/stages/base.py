"""What a stage implementation receives and returns.

A stage kind's factory is ``(config, ctx: StageContext) -> Transform``. A
`Transform` maps the stage's input stream to its output stream; it is a pure
description. Sources receive an empty input stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, ErrInfo, Item, Result
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import Event, EventSink, null_sink
from funcpipe.policy.models import NO_POLICY, Batch, Policy
from funcpipe.policy.stream import apply_batch_policy, apply_stream_policy
from funcpipe.ports import EmbedPort

Transform: TypeAlias = Callable[[AsyncGen[Item]], AsyncGen[Item]]
U = TypeVar("U")


def no_origin(_source_id: str) -> str:
    """The origin of rows when nothing tells it: none."""
    return ""


@dataclass
class StageContext:
    """Everything a stage may use at run time; built by the runner.

    What a stage kind declares it needs (see `funcpipe.registry.StageKind`)
    is resolved by the compiler and filled in here; the rest is left at its
    default.

    Attributes:
        stage_id: the stage's id.
        adapter: the port implementation named by ``adapter:``, if any (the
            stage kind knows which port it asked for).
        policy: the stage's resolved policy.
        batch: the stage's batching: as written, else its kind's default.
        runtime: the policy interpreter holding this stage's per-run state.
        events: where to report events.
        clock: the run's clock.
        base_dir: directory relative paths are resolved against.
        state_dir: the run's ``.funcpipe/`` directory.
        adapters: every adapter of the pipeline by name (created lazily).
        embedder: the embedder feeding the stage, for kinds that declare ``embedder``.
        origin_of: source id -> the origin its rows carry, for kinds that declare ``origins``.
        prepared: True once the kind's ``prepare`` step has run for this run.
        shutdown: set by the runner on a signal: partial batches are flushed at once.
    """

    stage_id: str
    adapter: object = None
    policy: Policy = NO_POLICY
    batch: Batch | None = None
    runtime: PolicyRuntime | None = None
    events: EventSink = null_sink
    clock: Clock = REAL_CLOCK
    base_dir: Path = field(default_factory=Path.cwd)
    state_dir: Path = field(default_factory=lambda: Path.cwd() / ".funcpipe")
    adapters: Mapping[str, object] = field(default_factory=dict)
    embedder: EmbedPort | None = None
    origin_of: Callable[[str], str] = no_origin
    prepared: bool = False
    shutdown: asyncio.Event | None = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            self.runtime = PolicyRuntime(self.policy, clock=self.clock, events=self.events, stage=self.stage_id)

    def resolve(self, path: str) -> Path:
        """A spec path resolved against the spec's directory."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def fail(self, item: Item, error: ErrInfo) -> ErrInfo:
        """Tag ``error`` with the failed item and this stage, for the dead-letter file."""
        if "item" in error.meta:
            return error
        return error.with_meta(item=item, stage=self.stage_id)

    def filtered(self, item: Item, reason: str = "") -> None:
        """Report that ``item`` was dropped on purpose."""
        self.events(
            Event(
                "filtered",
                self.stage_id,
                item.id,
                at=self.clock.now(),
                data={"item": item, "reason": reason},
            )
        )

    def map(self, stream: AsyncGen[Item], f: Callable[[Item], AsyncPlan[U]], *, ordered: bool = True) -> AsyncGen[U]:
        """Map an external call over items with this stage's policy (concurrency, retry...)."""
        assert self.runtime is not None
        return apply_stream_policy(self.policy, stream, f, runtime=self.runtime, ordered=ordered, on_error=self.fail)

    def map_batches(
        self,
        stream: AsyncGen[Item],
        f: Callable[[Sequence[Item]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
        *,
        default_size: int = 1,
        max_size: int | None = None,
        ordered: bool = True,
        cost: Callable[[Sequence[Item]], int] | None = None,
        chars: Callable[[Sequence[Item]], int] | None = None,
        tokens: Callable[[Item], int] | None = None,
    ) -> AsyncGen[U]:
        """Map a batch call over items, batched by this stage's ``batch`` (or ``default_size``).

        A size still ``auto`` (a context built by hand, not by the runner)
        means ``max_size``, else ``default_size``. With ``tokens`` (an item's
        estimated tokens) and the batch's ``max_tokens``, a batch also stops
        before the item that would carry it past ``max_tokens``.

        A failed batch is split to isolate its poison items, each split part
        a call under the stage's policy, so one bad item fails alone (see
        `funcpipe.policy.stream`); every batched stage, built-in or not, gets it.
        ``chars`` tells the characters of text a batch sends: its tokens are
        estimated from them (usage where the provider reports none, budgets).
        """
        assert self.runtime is not None
        batch = self.batch or Batch(size=default_size)
        if batch.size == "auto":
            batch = batch.model_copy(update={"size": max_size or default_size})
        if max_size is not None and batch.items > max_size:
            batch = batch.model_copy(update={"size": max_size})
        return apply_batch_policy(
            self.policy,
            stream,
            f,
            batch,
            runtime=self.runtime,
            ordered=ordered,
            clock=self.clock,
            on_error=self.fail,
            cost=cost,
            shutdown=self.shutdown,
            events=self.events,
            stage=self.stage_id,
            chars=chars,
            weight=tokens,
        )
