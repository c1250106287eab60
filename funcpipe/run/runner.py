"""The runner: binds a `CompiledPipeline` to resources and drives it.

It owns every resource through an ``AsyncExitStack`` (clients and pools close
on every path), wires stages with bounded buffers, diverts failed items to the
dead-letter file, accounts for every source item, and returns a `RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from funcpipe.compile import CompiledPipeline, CompiledStage
from funcpipe.core import (
    AsyncGen,
    Err,
    ErrInfo,
    Item,
    Ok,
    Result,
    async_gen_empty,
    async_gen_gather,
    stable_id,
)
from funcpipe.errors import FailFast, RunError, SpecError
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import Event, EventSink
from funcpipe.run.accounting import Accounting, Failures, StageStats
from funcpipe.run.deadletter import DeadLetters
from funcpipe.run.ledger import FLUSH_SECONDS, Ledger
from funcpipe.run.redact import Redactor
from funcpipe.run.report import ErrorCount, RunReport, StageReport
from funcpipe.stages.base import StageContext


@dataclass
class RunOptions:
    """How to run.

    Attributes:
        report_path: where to write the JSON report (besides the state directory).
        fresh: ignore what earlier runs recorded as done.
        seed: seed for every random source (jitter, sampling).
        clock: the clock policies use (a virtual one in tests).
        listeners: extra event sinks (progress, JSON logs).
        buffer: capacity of the queues between fanned-out or merged stages.
        state_dir: override of ``.funcpipe/`` beside the spec.
        handle_signals: stop gracefully on SIGINT/SIGTERM (the CLI sets it).
        shutdown_timeout: time in-flight work gets after a signal (default: the spec's).
        notify: where status lines (shutdown progress) go.
        resources: factory ``(state_dir, clock) -> async context manager`` of the
            resources lent to adapters (default: `RunResources`).
    """

    report_path: Path | None = None
    fresh: bool = False
    seed: int = 0
    clock: Clock = REAL_CLOCK
    listeners: list[EventSink] = field(default_factory=list)
    buffer: int = 64
    state_dir: Path | None = None
    resources: Callable[[Path, Clock], contextlib.AbstractAsyncContextManager[Any]] | None = None
    handle_signals: bool = False
    shutdown_timeout: float | None = None
    notify: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def open_resources(self, state_dir: Path) -> contextlib.AbstractAsyncContextManager[Any]:
        """The resources for a run whose state lives in ``state_dir``."""
        if self.resources is not None:
            return self.resources(state_dir, self.clock)
        from funcpipe.run.resources import RunResources

        return RunResources(state_dir=state_dir, clock=self.clock, notify=self.notify)


class LazyAdapters(Mapping[str, Any]):
    """The pipeline's adapters by name, each created on first use with the run's resources.

    An adapter that no stage uses (the query's generator, say) is never created.
    """

    def __init__(self, pipeline: CompiledPipeline, resources: Any) -> None:
        self._specs = pipeline.adapters
        self._resources = resources
        self._made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._made:
            ad = self._specs[name]
            self._made[name] = ad.kind.load_factory()(ad.config, self._resources)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class _EventHub:
    """Feeds stage counters and accounting from events, then forwards them."""

    def __init__(self, stats: dict[str, StageStats], acct: Accounting, listeners: list[EventSink]) -> None:
        self.stats = stats
        self.acct = acct
        self.listeners = listeners

    def __call__(self, ev: Event) -> None:
        st = self.stats.get(ev.stage)
        if st is not None:
            if ev.kind == "attempt":
                st.calls += 1
                if ev.attempt > 1:
                    st.retries += 1
            elif ev.kind in ("success", "failure"):
                st.latency(ev.duration)
            elif ev.kind == "wait":
                st.waits += 1
            elif ev.kind == "limited":
                st.limited += 1
            elif ev.kind == "filtered":
                st.filtered += 1
                item = ev.data.get("item")
                if isinstance(item, Item):
                    self.acct.filtered(item.source_id)
        for listener in self.listeners:
            listener(ev)


_END = object()


class Runner:
    """Drives one compiled pipeline once.

    Args:
        pipeline: the compiled description.
        options: run options.
    """

    def __init__(self, pipeline: CompiledPipeline, options: RunOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or RunOptions()
        loaded = pipeline.loaded
        self.state_dir = self.options.state_dir or loaded.state_dir
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.stats: dict[str, StageStats] = {s.id: StageStats() for s in pipeline.stages}
        self.acct = Accounting(
            [t.id for t in pipeline.terminals],
            ordered=pipeline.order_preserving,
            on_settled=self._settled,
        )
        self.events = _EventHub(self.stats, self.acct, list(self.options.listeners))
        # The one place secrets are kept out of what the run writes: dead
        # letters, the report's message, notices (and, through the CLI, logs).
        self.redact = Redactor.for_pipeline(pipeline)
        self.failures = Failures(redact=self.redact)
        dl = loaded.spec.on_error.dead_letter
        dl_path = (loaded.base_dir / dl) if dl else self.state_dir / f"{pipeline.name}.dead.jsonl"
        self.dead = DeadLetters(dl_path, self.run_id, redact=self.redact.scrub)
        self.fail_fast = loaded.spec.on_error.mode == "fail_fast"
        self._first_failure: str | None = None
        self.settled_hooks: list[Callable[[str, str], None]] = []
        self.ledger: Ledger | None = None
        self._content: dict[str, str] = {}
        self.stop = asyncio.Event()  # set on the first signal
        self.signal: signal.Signals | None = None
        self.aborted: str | None = None
        self._flusher: asyncio.TimerHandle | None = None

    def _settled(self, source_id: str, outcome: str) -> None:
        content = self._content.pop(source_id, "")
        if self.ledger is not None:
            self.ledger.record(source_id, content, outcome)
        for hook in self.settled_hooks:
            hook(source_id, outcome)

    # -- wiring -----------------------------------------------------------

    def _count_inputs(self, stage_id: str, gen: AsyncGen[Item]) -> AsyncGen[Item]:
        stats = self.stats[stage_id]

        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in gen():
                stats.inputs += 1
                yield r

        return run

    def _instrument(self, stage: CompiledStage, gen: AsyncGen[Item]) -> AsyncGen[Item]:
        stats = self.stats[stage.id]
        is_source = not stage.inputs
        clock = self.options.clock

        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async with contextlib.aclosing(gen()) as it:  # type: ignore[type-var]
                async for r in it:
                    if is_source and self.stop.is_set():
                        return  # a signal: read no more source items, let the rest drain
                    stats.touch(clock.now())
                    if isinstance(r, Ok):
                        if is_source and not self._admit(r.value):
                            continue
                        stats.outputs += 1
                        yield r
                    else:
                        self._failed(stage, r.error)

        return run

    def _admit(self, item: Item) -> bool:
        """Register a source item, or skip it if an earlier run finished it unchanged."""
        content = content_hash(item)
        if self.ledger is not None and not self.options.fresh and self.ledger.is_done(item.source_id, content):
            self.acct.skip(item.source_id)
            return False
        self._content[item.source_id] = content
        self.acct.source(item.source_id)
        return True

    def _failed(self, stage: CompiledStage, error: ErrInfo) -> None:
        # One stage id for the counts, the breakdown and the dead letter, so they agree.
        named = error.meta.get("stage")
        stage_id = named if isinstance(named, str) and named in self.stats else stage.id
        self.stats[stage_id].failed += 1
        self.failures.add(stage_id, error.code, error.msg)
        self.dead.write(error, stage_id)
        item = error.meta.get("item")
        if isinstance(item, Item):
            if not stage.inputs:
                self.acct.source(item.source_id)  # failed as it was read: still a source item
            self.acct.failed(item.source_id)
        if self.fail_fast:
            # Concurrent stages may dead-letter an item or two more before the stop reaches
            # them; those count too, but the run is reported as stopped by the first.
            if self._first_failure is None:
                self._first_failure = f"stage {stage_id}: {error.code}: {error.msg} (on_error: fail_fast)"
            raise FailFast(self._first_failure)

    def _tee(self, tg: asyncio.TaskGroup, gen: AsyncGen[Item], n: int) -> list[AsyncGen[Item]]:
        queues: list[asyncio.Queue[object]] = [asyncio.Queue(self.options.buffer) for _ in range(n)]
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

    def _context(self, stage: CompiledStage, adapters: LazyAdapters) -> StageContext:
        runtime = PolicyRuntime(
            stage.policy,
            clock=self.options.clock,
            events=self.events,
            stage=stage.id,
            seed=self.options.seed,
        )
        services: dict[str, Any] = {}
        embed_stage = self.pipeline.upstream(stage.id, "embed")
        if embed_stage is not None and embed_stage.adapter:
            services["embedder"] = adapters[embed_stage.adapter]
        return StageContext(
            stage_id=stage.id,
            adapter=adapters[stage.adapter] if stage.adapter else None,
            policy=stage.policy,
            batch=stage.batch,
            runtime=runtime,
            events=self.events,
            clock=self.options.clock,
            base_dir=self.pipeline.loaded.base_dir,
            state_dir=self.state_dir,
            adapters=adapters,
            services=services,
            shutdown=self.stop,
        )

    def _build(self, tg: asyncio.TaskGroup, adapters: LazyAdapters) -> AsyncGen[tuple[str, Item]]:
        branches: dict[str, list[AsyncGen[Item]]] = {}

        def take(stage_id: str) -> AsyncGen[Item]:
            return branches[stage_id].pop()

        for st in self.pipeline.stages:
            if not st.inputs:
                upstream: AsyncGen[Item] = async_gen_empty()
            elif len(st.inputs) == 1:
                upstream = take(st.inputs[0])
            else:
                # A fair stage must see the items waiting: a deep merge queue would hide them from it.
                buffer = 1 if st.policy.fairness is not None else self.options.buffer
                upstream = async_gen_gather([take(i) for i in st.inputs], len(st.inputs), buffer)
            transform = st.kind.load_factory()(st.config, self._context(st, adapters))
            out = self._instrument(st, transform(self._count_inputs(st.id, upstream)))
            n = max(1, len(st.consumers))
            branches[st.id] = self._tee(tg, out, n) if n > 1 else [out]

        tagged = [_tag(t.id, branches[t.id][0]) for t in self.pipeline.terminals]
        return tagged[0] if len(tagged) == 1 else async_gen_gather(tagged, len(tagged), self.options.buffer)

    # -- running ----------------------------------------------------------

    async def _drive(self, resources: Any) -> None:
        # User callables (``use: module:fn``) live beside the spec, as in the loader.
        base = str(self.pipeline.loaded.base_dir)
        if base not in sys.path:
            sys.path.insert(0, base)
        adapters = LazyAdapters(self.pipeline, resources)
        await self._preflight(adapters)
        async with asyncio.TaskGroup() as tg:
            final = self._build(tg, adapters)
            async with contextlib.aclosing(final()) as it:  # type: ignore[type-var]
                async for r in it:
                    if isinstance(r, Ok):
                        terminal, item = r.value
                        self.acct.committed(terminal, item.source_id)

    async def _preflight(self, adapters: LazyAdapters) -> None:
        """Prepare every vector store for its embedder before any source is read.

        A table filled by another embedder is then a run error up front, before
        a corpus is embedded (and paid for) only to be refused at the first write.
        """
        for st in self.pipeline.stages:
            embed = self.pipeline.upstream(st.id, "embed")
            if st.kind.name != "vector.upsert" or not st.adapter or embed is None or not embed.adapter:
                continue
            fingerprint = adapters[embed.adapter].fingerprint
            runtime = PolicyRuntime(st.policy, clock=self.options.clock, events=self.events, stage=st.id)
            res = await runtime.apply(adapters[st.adapter].ensure(fingerprint))()
            if isinstance(res, Err):
                raise RunError(f"stage {st.id}: cannot prepare store {st.adapter!r}: {res.error.code}: {res.error.msg}")

    async def run(self) -> RunReport:
        """Run the pipeline to the end and return the report (also written to disk)."""
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        status, exit_code, message = "ok", 0, None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.state_dir / "ledger.sqlite", self.pipeline.loaded.fingerprint, self.run_id)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = (signal.SIGINT, signal.SIGTERM) if self.options.handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig, task)
        self._flusher = loop.call_later(FLUSH_SECONDS, self._flush_ledger)
        drained = False
        try:
            async with self.options.open_resources(self.state_dir) as resources:
                await self._drive(resources)
                drained = True
        except* FailFast as eg:
            status, exit_code, message = "failed", 1, str(eg.exceptions[0])
        except* RunError as eg:
            status, exit_code, message = "error", 1, str(eg.exceptions[0])
        except* SpecError as eg:
            status, exit_code, message = "error", 2, str(eg.exceptions[0])
        except* asyncio.CancelledError:
            if self.aborted is None:
                raise
            task.uncancel()
        finally:
            if drained:
                self.acct.finish()
            else:
                # Stopped early (fail_fast, a run error, an abort): what was in flight is unfinished.
                self.acct.stop()
            self._flusher.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            self.dead.close()
            self.ledger.close()
        if status == "ok" and (self.acct.counts["failed"] or self.dead.count):
            status, exit_code = "failed", 1
        if self.signal is not None:
            name = self.signal.name
            exit_code = 128 + int(self.signal)
            if self.aborted is not None:
                status, message = (
                    "aborted",
                    (f"aborted by {self.aborted}: {self.acct.counts['unfinished']} item(s) unfinished"),
                )
            else:
                status, message = "interrupted", f"stopped by {name} after draining in-flight work"
            message += "; run again to resume"
        report = self._report(started, time.perf_counter() - t0, status, exit_code, message)
        report.write(self.state_dir / f"{self.pipeline.name}.report.json")
        if self.options.report_path is not None:
            report.write(self.options.report_path)
        return report

    def _flush_ledger(self) -> None:
        """Commit settled items now and then, so a crash loses at most a moment's work."""
        if self.ledger is not None:
            self.ledger.flush()
        self._flusher = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush_ledger)

    def _on_signal(self, sig: signal.Signals, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        if self.signal is not None:
            self._notify(f"funcpipe: second {sig.name}: aborting now")
            self._abort(task, f"a second {sig.name}")
            return
        self.signal = sig
        self.stop.set()
        timeout = self.options.shutdown_timeout
        if timeout is None:
            timeout = self.pipeline.loaded.spec.shutdown_timeout
        deadline = loop.time() + timeout

        def tell() -> None:
            if self.aborted is not None or task.done():
                return
            left = max(0.0, deadline - loop.time())
            self._notify(
                f"funcpipe: {sig.name}: stopped reading sources; draining {self.acct.unsettled} in-flight "
                f"item(s), {left:.0f}s left (send it again to abort)"
            )
            loop.call_later(min(2.0, max(0.1, left)), tell)

        tell()
        loop.call_later(timeout, self._abort, task, f"shutdown_timeout ({timeout:g}s)")

    def _notify(self, message: str) -> None:
        self.options.notify(self.redact(message))

    def _abort(self, task: asyncio.Task[Any], reason: str) -> None:
        if self.aborted is None and not task.done():
            self.aborted = reason
            task.cancel()

    def _report(
        self, started: datetime, duration: float, status: str, exit_code: int, message: str | None
    ) -> RunReport:
        stages = []
        for st in self.pipeline.stages:
            s = self.stats[st.id]
            p50, p95 = s.percentile(0.5), s.percentile(0.95)
            stages.append(
                StageReport(
                    id=st.id,
                    use=st.kind.name,
                    inputs=s.inputs,
                    outputs=s.outputs,
                    failed=s.failed,
                    filtered=s.filtered,
                    retries=s.retries,
                    calls=s.calls,
                    p50_ms=None if p50 is None else round(p50 * 1000, 3),
                    p95_ms=None if p95 is None else round(p95 * 1000, 3),
                    items_per_s=round(s.outputs / duration, 1) if duration > 0 else None,
                    fan_out=round(s.outputs / s.inputs, 3) if s.inputs else None,
                    errors=[ErrorCount(g.code, g.count, g.first_message) for g in self.failures.of(st.id)],
                )
            )
        accounting = self.acct.to_json()
        return RunReport(
            pipeline=self.pipeline.name,
            fingerprint=self.pipeline.loaded.fingerprint,
            run_id=self.run_id,
            status=status,
            exit_code=exit_code,
            started_at=started.isoformat(),
            duration_s=round(duration, 3),
            stages=stages,
            accounting=accounting,
            dead_letter=str(self.dead.path) if self.dead.count else None,
            dead_lettered=self.dead.count,
            message=None if message is None else self.redact(message),
        )


def content_hash(item: Item) -> str:
    """What identifies a source item's content: its file hash if known, else a hash of its data."""
    known = item.meta.get("sha256")
    if isinstance(known, str):
        return known
    data = item.data
    if isinstance(data, bytes | bytearray):
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return stable_id(data)


def _tag(stage_id: str, gen: AsyncGen[Item]) -> AsyncGen[tuple[str, Item]]:
    async def run() -> AsyncIterator[Result[tuple[str, Item], ErrInfo]]:
        async for r in gen():
            if isinstance(r, Ok):
                yield Ok((stage_id, r.value))
            else:
                yield r

    return run


async def run_pipeline(pipeline: CompiledPipeline, options: RunOptions | None = None) -> RunReport:
    """Run ``pipeline`` once and return its report."""
    return await Runner(pipeline, options).run()


__all__ = ["RunOptions", "Runner", "run_pipeline"]
