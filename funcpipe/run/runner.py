"""The runner: binds a `CompiledPipeline` to resources and drives it.

It owns every resource through an ``AsyncExitStack`` (clients and pools close
on every path), wires stages with bounded buffers, diverts failed items to the
dead-letter file, accounts for every source item, and returns a `RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from funcpipe.adapters.config import env_fields
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
from funcpipe.run.report import ErrorCount, RunReport, StageReport, unwritable
from funcpipe.spec.sources import check_sources
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
        self._content: dict[str, tuple[str, str]] = {}  # source id -> (resume key, content hash)
        # Source sync: what each source stage feeding a mirror store listed
        # (16-byte digests of source ids, packed: 16 bytes an item), whether
        # its listing completed cleanly, and the origin of each item in flight.
        self._listed: dict[str, bytearray] = {
            src: bytearray() for sync in pipeline.syncs if sync.mode == "mirror" for src in sync.sources
        }
        self._listing_complete: dict[str, bool] = {}
        self._origin: dict[str, str] = {}
        self._adapters: LazyAdapters | None = None
        self.deleted = {"sources": 0, "chunks": 0, "ledger": 0}
        self.sync_report: list[dict[str, Any]] = []
        self.stop = asyncio.Event()  # set on the first signal
        self.signal: signal.Signals | None = None
        self.aborted: str | None = None
        self._flusher: asyncio.TimerHandle | None = None

    def _settled(self, source_id: str, outcome: str) -> None:
        key, content = self._content.pop(source_id, ("", ""))
        self._origin.pop(source_id, None)
        if self.ledger is not None and key:
            self.ledger.record(source_id, content, outcome, key)
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
                        if is_source and not self._admit(stage.id, r.value):
                            continue
                        stats.outputs += 1
                        yield r
                    else:
                        if is_source:
                            # A source that could not read something did not list completely.
                            self._listing_complete[stage.id] = False
                        self._failed(stage, r.error)
            if is_source:
                self._listing_complete.setdefault(stage.id, True)

        return run

    def _admit(self, stage_id: str, item: Item) -> bool:
        """Register a source item, or skip it if an earlier run finished it unchanged under the same key."""
        listed = self._listed.get(stage_id)
        if listed is not None:
            listed += _digest(item.source_id)
        key = self.pipeline.resume_keys[stage_id]
        content = content_hash(item)
        if self.ledger is not None and not self.options.fresh and self.ledger.is_done(item.source_id, content, key):
            self.acct.skip(item.source_id)
            return False
        self._content[item.source_id] = (key, content)
        self._origin[item.source_id] = self.pipeline.origins[stage_id]
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
        services["origin_of"] = self._origin_of(stage)
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

    def _origin_of(self, stage: CompiledStage) -> Callable[[str], str]:
        """Source id -> the origin of its rows, for the stores of ``stage``."""
        sources = self.pipeline.upstream_sources(stage.id)
        default = self.pipeline.origins[sources[0]] if len(sources) == 1 else ""
        return lambda source_id: self._origin.get(source_id, default)

    # -- running ----------------------------------------------------------

    async def _drive(self, resources: Any) -> None:
        # User callables (``use: module:fn``) live beside the spec, as in the loader.
        base = str(self.pipeline.loaded.base_dir)
        if base not in sys.path:
            sys.path.insert(0, base)
        missing = missing_credentials(
            self.pipeline, {st.adapter for st in self.pipeline.stages if st.adapter}, resources
        )
        if missing is not None:
            raise _NotStarted(missing)
        adapters = LazyAdapters(self.pipeline, resources)
        check_sources(self.pipeline.loaded)
        self._adapters = adapters
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
        self._check_outputs()
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
                self.acct.finish()
                await self._sync()
        except* _NotStarted as eg:
            # Nothing was done: there is no outcome to report, only the reason.
            raise eg.exceptions[0] from None
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
            if not drained:
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
        self._write_report(report)
        return report

    # -- source sync ------------------------------------------------------

    async def _sync(self) -> None:
        """Delete what sources that vanished left behind: ledger records first, then store rows.

        Runs only after every item settled and only for sources whose listing
        completed cleanly; a fail-fast stop, a run error or a signal never gets
        here. The order makes a crash at any point harmless: forgotten ledger
        records only mean a source that comes back is redone, and rows still
        there are deleted by the next run that lists without them.
        """
        if self.stop.is_set() or self.ledger is None or self._adapters is None:
            return
        complete = {sid for sid, ok in self._listing_complete.items() if ok and sid in self._listed}
        listings = {sid: _unpack(self._listed[sid]) for sid in complete}
        for sid in sorted(complete):
            self.deleted["ledger"] += self.ledger.forget(self.pipeline.resume_keys[sid], _member(listings[sid]))
        for sync in self.pipeline.syncs:
            for source in sync.sources:
                entry: dict[str, Any] = {
                    "stage": sync.stage,
                    "source": source,
                    "mode": sync.mode,
                    "deleted_sources": 0,
                    "deleted_chunks": 0,
                }
                if sync.mode != "mirror":
                    entry["status"] = "append: nothing deleted"
                elif source not in complete:
                    entry["status"] = "skipped: the listing was incomplete (a read error or a stop); nothing deleted"
                else:
                    sources, chunks = await self._prune_vanished(sync.stage, sync.adapter, source, listings[source])
                    entry.update(status="done", deleted_sources=sources, deleted_chunks=chunks)
                    self.deleted["sources"] += sources
                    self.deleted["chunks"] += chunks
                self.sync_report.append(entry)

    async def _prune_vanished(self, stage_id: str, adapter: str, source: str, listed: set[bytes]) -> tuple[int, int]:
        """Delete the rows of ``source``'s origin whose source id it did not list; ``(sources, chunks)``."""
        assert self._adapters is not None
        stage = self.pipeline.stage(stage_id)
        store = self._adapters[adapter]
        origin = self.pipeline.origins[source]
        runtime = PolicyRuntime(stage.policy, clock=self.options.clock, events=self.events, stage=stage_id)
        stored = await runtime.apply(store.source_ids(origin))()
        if isinstance(stored, Err):
            raise RunError(
                f"stage {stage_id}: source sync cannot list {adapter!r}: {stored.error.code}: {stored.error.msg}"
            )
        gone = [sid for sid in stored.value if _digest(sid) not in listed]
        chunks = 0
        for i in range(0, len(gone), SYNC_BATCH):
            res = await runtime.apply(store.prune(origin, gone[i : i + SYNC_BATCH]))()
            if isinstance(res, Err):
                raise RunError(
                    f"stage {stage_id}: source sync cannot delete from {adapter!r}: {res.error.code}: {res.error.msg}"
                )
            chunks += res.value
        return len(gone), chunks

    def _check_outputs(self) -> None:
        """Fail before any work if the state directory, dead-letter file or report cannot be written.

        Otherwise a run would stop at its first failed item, or lose its report
        after all the work is done (and paid for).
        """
        problems: list[str] = []
        reason = unwritable(self.state_dir, directory=True)
        if reason is not None:
            problems.append(
                f"cannot write the state directory {self.state_dir}: {reason}; make it writable, "
                "or remove what is in its way"
            )
        if reason is None or self.state_dir not in self.dead.path.parents:
            try:
                self.dead.check()
            except RunError as exc:
                problems.append(str(exc))
        report_path = self.options.report_path
        if report_path is not None and (reason := unwritable(report_path)) is not None:
            problems.append(f"cannot write the report {report_path}: {reason}; choose a writable --report path")
        if problems:
            raise RunError("; ".join(problems) + " (nothing was run)")

    def _write_report(self, report: RunReport) -> None:
        """Write the report beside the state and to ``--report``; a failure is told, never raised."""
        targets = [self.state_dir / f"{self.pipeline.name}.report.json"]
        if self.options.report_path is not None:
            targets.append(self.options.report_path)
        failed: list[str] = []
        written: list[Path] = []
        for target in targets:
            try:
                report.write(target)
                written.append(target)
            except OSError as exc:
                failed.append(f"the report could not be written to {target}: {exc.strerror or exc}")
        if not failed:
            return
        # The run's outcome stands; only the missing report is added, and a
        # run that went well still exits non-zero, since its record is lost.
        report.message = self.redact("; ".join([*([report.message] if report.message else []), *failed]))
        report.exit_code = report.exit_code or 1
        for target in written:
            with contextlib.suppress(OSError):
                report.write(target)

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
        accounting = {
            **self.acct.to_json(),
            "deleted": self.deleted["sources"],
            "deleted_chunks": self.deleted["chunks"],
        }
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
            sync=self.sync_report,
        )


SYNC_BATCH = 1000
"""Source ids per delete statement of the end-of-run sync."""


def _digest(source_id: str) -> bytes:
    return hashlib.blake2b(source_id.encode("utf-8"), digest_size=16).digest()


def _member(listed: set[bytes]) -> Callable[[str], bool]:
    return lambda source_id: _digest(source_id) in listed


def _unpack(packed: bytearray) -> set[bytes]:
    return {bytes(packed[i : i + 16]) for i in range(0, len(packed), 16)}


class _NotStarted(RunError):
    """A pre-flight check failed after resources were opened, before any work."""


def missing_credentials(pipeline: CompiledPipeline, names: Iterable[str], resources: Any) -> str | None:
    """Why the adapters ``names`` cannot authenticate, or None: a variable they read (``*_env``) is unset or empty.

    Checked before the first call: otherwise every item would be refused by
    the service, one ``AUTH`` dead letter each.

    Args:
        pipeline: the compiled pipeline.
        names: the adapters the command will use.
        resources: the run's resources (`Resources.secret` reads the variables).

    Returns:
        One message naming each adapter and variable (never a value), or None.
    """
    problems: list[str] = []
    for name in sorted(set(names)):
        adapter = pipeline.adapters.get(name)
        if adapter is None:
            continue
        for field_name, variable in env_fields(adapter.config):
            try:
                value = resources.secret(variable)
            except RunError:
                value = None
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if secret:
                continue
            kind = adapter.kind.name
            which = f"its {field_name}" if field_name in adapter.config.model_fields_set else f"the {kind} default"
            problems.append(
                f"adapter {name!r} ({kind}) reads {variable} ({which}), which is not set or empty: export "
                f"{variable}=... before the run, or set adapters.{name}.{field_name} to the variable that "
                f"holds it ({field_name}: null if the service needs none)"
            )
    return "; ".join(problems) + " (nothing was called)" if problems else None


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


__all__ = ["RunOptions", "Runner", "missing_credentials", "run_pipeline"]
