"""The runner's lifecycle: binds a `CompiledPipeline` to resources and drives it once.

`Runner.run` refuses a run whose estimate exceeds a budget (unless forced),
checks the outputs, opens the ledger and the resources (an
``AsyncExitStack`` closes clients and pools on every path), runs the
pre-flight checks (`funcpipe.run.preflight`), wires the stages
(`funcpipe.run.wiring`), drains the graph while accounting for every source
item and diverting failed ones to the dead-letter file, syncs the stores
with their sources (`funcpipe.run.sync`), and builds and writes the report
(`funcpipe.run.reporting`). Signals are `funcpipe.run.shutdown`'s; usage,
cost and budgets `funcpipe.run.costs`' (an exhausted budget stops the run as
a signal does, and its refused items are left unfinished). The
runner names no stage kind: what a stage needs, its kind declares and the
compiler resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from funcpipe.compile import CompiledPipeline, CompiledStage
from funcpipe.core import AsyncGen, ErrCode, ErrInfo, Item, Ok, Result, stable_id
from funcpipe.errors import BUDGET_EXHAUSTED_EXIT, BudgetExceeded, FailFast, RunError, SpecError
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import Event, EventSink
from funcpipe.policy.shared import SharedPolicy
from funcpipe.run.accounting import Accounting, Failures, StageStats
from funcpipe.run.costs import RunCosts
from funcpipe.run.deadletter import DeadLetters
from funcpipe.run.estimate import budget_refusal
from funcpipe.run.events import EventHub
from funcpipe.run.ledger import FLUSH_SECONDS, Ledger
from funcpipe.run.observe import Observe, open_telemetry
from funcpipe.run.preflight import (
    check_outputs,
    check_source_stages,
    finish_stages,
    load_factories,
    missing_credentials,
    prepare_stages,
)
from funcpipe.run.redact import Redactor
from funcpipe.run.report import RunReport
from funcpipe.run.reporting import build_report, write_report
from funcpipe.run.shutdown import Shutdown
from funcpipe.run.sync import SourceSync
from funcpipe.run.wiring import LazyAdapters, stage_context, wire
from funcpipe.spec.models import ExecutorSpec
from funcpipe.stages.base import StageContext
from funcpipe.stages.imports import importable


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
        force: start even when the estimate exceeds a budget (``--force``).
        taps: called with ``(stage id, item)`` for every item a stage emits
            (``funcpipe test`` reads each stage's output through them).
        adapters: adapters already made, by name, to use instead of making
            new ones (and where new ones are kept): a run and a query that
            share it share one in-process store.
        observe: traces and metrics (default: traced only if the ``OTEL_*`` variables ask).
        shard: run only part of the source items, as one worker of a scale-out
            run whose driver owns resume, source sync and the report file.
        shared_policy: where limiters and breakers shared with other processes
            come from (default: each runtime keeps its own).
        executor: where the work runs (default: the spec's ``executor:``).
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
    force: bool = False
    taps: list[Callable[[str, Item], None]] = field(default_factory=list)
    adapters: dict[str, Any] | None = None
    observe: Observe = field(default_factory=Observe)
    shard: Shard | None = None
    shared_policy: SharedPolicy | None = None
    executor: ExecutorSpec | None = None

    def open_resources(self, state_dir: Path) -> contextlib.AbstractAsyncContextManager[Any]:
        """The resources for a run whose state lives in ``state_dir``."""
        if self.resources is not None:
            return self.resources(state_dir, self.clock)
        from funcpipe.run.resources import RunResources

        return RunResources(state_dir=state_dir, clock=self.clock, notify=self.notify)


@dataclass(frozen=True)
class Shard:
    """This run is one worker's part of a larger run (see `funcpipe.run.scaleout`).

    A shard run admits only the source items ``admit`` accepts (the others are
    read and passed over, uncounted), keeps no ledger, syncs no store and
    writes no report file: the driver that split the work does those once, for
    the whole run. Its dead letters go to ``dead_letter``, for the driver to
    gather into the run's one file.

    Attributes:
        admit: whether a source id belongs to this shard.
        dead_letter: where this shard's dead letters are written.
    """

    admit: Callable[[str], bool]
    dead_letter: Path


class Runner:
    """Drives one compiled pipeline once.

    Args:
        pipeline: the compiled description.
        options: run options.

    Attributes:
        redact: the run's `Redactor`: every string it writes passes through it.
        events: the run's event hub; append sinks to ``events.listeners``.
        stats: per-stage counters, by stage id.
        settled_hooks: called with ``(source id, outcome)`` as each source item settles.
    """

    def __init__(self, pipeline: CompiledPipeline, options: RunOptions | None = None) -> None:
        self.pipeline = pipeline
        self.options = options or RunOptions()
        self.executor = self.options.executor or pipeline.executor
        self.state_dir = self.options.state_dir or pipeline.state_dir
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.stats: dict[str, StageStats] = {s.id: StageStats() for s in pipeline.stages}
        self.acct = Accounting(
            [t.id for t in pipeline.terminals],
            ordered=pipeline.order_preserving,
            on_settled=self._settled,
        )
        self.costs = RunCosts(pipeline, self._budget_spent)
        self.events = EventHub(self.stats, self.acct, [self.costs, *self.options.listeners])
        # The one place secrets are kept out of what the run writes: dead
        # letters, the report's message, notices (and, through the CLI, logs).
        self.redact = Redactor.for_pipeline(pipeline)
        self.failures = Failures(redact=self.redact)
        shard = self.options.shard
        dl_path = pipeline.dead_letter or self.state_dir / f"{pipeline.name}.dead.jsonl"
        if shard is not None:
            dl_path = shard.dead_letter
        self.dead = DeadLetters(dl_path, self.run_id, redact=self.redact.scrub)
        self._first_failure: str | None = None
        self.settled_hooks: list[Callable[[str, str], None]] = []
        self.ledger: Ledger | None = None
        self._content: dict[str, tuple[str, str]] = {}  # source id -> (resume key, content hash)
        self._origin: dict[str, str] = {}  # source id in flight -> the origin of its rows
        self.sync = SourceSync(pipeline)
        timeout = self.options.shutdown_timeout
        self.shutdown = Shutdown(
            pipeline.shutdown_timeout if timeout is None else timeout,
            self._notify,
            lambda: self.acct.unsettled,
        )
        self._adapters: LazyAdapters | None = None
        self._contexts: dict[str, StageContext] = {}
        self.executor_report: dict[str, Any] = {"kind": self.executor.kind}
        self._flusher: asyncio.TimerHandle | None = None

    @property
    def stop(self) -> asyncio.Event:
        """Set on the first signal or an exhausted budget: sources read no more, in-flight work drains."""
        return self.shutdown.stop

    def _budget_spent(self, reason: str) -> None:
        """A budget is exhausted: stop as on SIGTERM (no new calls, in-flight work drains)."""
        if not self.stop.is_set():
            self._notify(f"funcpipe: budget: {reason}: stopped reading sources; draining in-flight work")
        self.stop.set()

    def _settled(self, source_id: str, outcome: str) -> None:
        key, content = self._content.pop(source_id, ("", ""))
        self._origin.pop(source_id, None)
        if self.ledger is not None and key:
            self.ledger.record(source_id, content, outcome, key)
        for hook in self.settled_hooks:
            hook(source_id, outcome)

    # -- one stage --------------------------------------------------------

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
        taps = self.options.taps

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
                        for tap in taps:
                            tap(stage.id, r.value)
                        yield r
                    else:
                        if is_source:
                            # A source that could not read something did not list completely.
                            self.sync.incomplete(stage.id)
                        self._failed(stage, r.error)
            if is_source:
                self.sync.finished(stage.id)

        return run

    def _admit(self, stage_id: str, item: Item) -> bool:
        """Register a source item, or skip it if an earlier run finished it unchanged under the same key."""
        if self.options.shard is not None and not self.options.shard.admit(item.source_id):
            return False  # another worker's
        self.sync.listed(stage_id, item.source_id)
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
        item = error.meta.get("item")
        if error.code == ErrCode.BUDGET_EXHAUSTED:
            # Not a failure: the call was never made. The item is left for the next run.
            if isinstance(item, Item):
                if not stage.inputs:
                    self.acct.source(item.source_id)
                self.acct.unfinished(item.source_id)
            return
        shard = self.options.shard
        if shard is not None and not stage.inputs and not (isinstance(item, Item) and shard.admit(item.source_id)):
            return  # a read failure not of this shard's items: the driver, which listed it, counts it
        # One stage id for the counts, the breakdown and the dead letter, so they agree.
        named = error.meta.get("stage")
        stage_id = named if isinstance(named, str) and named in self.stats else stage.id
        self.stats[stage_id].failed += 1
        self.failures.add(stage_id, error.code, error.msg)
        self.dead.write(error, stage_id)
        self.events(_dead_letter_event(stage_id, error, item, self.options.clock.now()))
        if isinstance(item, Item):
            if not stage.inputs:
                self.acct.source(item.source_id)  # failed as it was read: still a source item
            self.acct.failed(item.source_id)
        if self.pipeline.fail_fast:
            # Concurrent stages may dead-letter an item or two more before the stop reaches
            # them; those count too, but the run is reported as stopped by the first.
            if self._first_failure is None:
                self._first_failure = f"stage {stage_id}: {error.code}: {error.msg} (on_error: fail_fast)"
            raise FailFast(self._first_failure)

    def _context(self, stage: CompiledStage, adapters: LazyAdapters) -> StageContext:
        default = stage.origin
        return stage_context(
            stage,
            adapters,
            clock=self.options.clock,
            events=self.events,
            seed=self.options.seed,
            base_dir=self.pipeline.base_dir,
            state_dir=self.state_dir,
            shutdown=self.stop,
            origin_of=lambda source_id: self._origin.get(source_id, default),
            meter=self.costs.meter(stage),
            shared_policy=self.options.shared_policy,
        )

    # -- running ----------------------------------------------------------

    async def _drive(self, resources: Any) -> bool:
        """Run every source item through the graph; whether it drained (every item read reached an outcome)."""
        scaled = self.executor.kind == "ray" and self.options.shard is None
        if scaled:
            from funcpipe.run.scaleout import import_ray

            try:
                import_ray()
            except RunError as exc:
                raise _NotStarted(str(exc)) from None
        names = {st.adapter for st in self.pipeline.stages if st.adapter}
        missing = missing_credentials(self.pipeline, names, resources)
        if missing is not None:
            raise _NotStarted(missing)
        adapters = LazyAdapters(self.pipeline, resources, made=self.options.adapters)
        check_source_stages(self.pipeline)
        try:
            factories = load_factories(self.pipeline)
        except RunError as exc:
            raise _NotStarted(str(exc)) from None
        self._adapters = adapters
        contexts = self._contexts = {st.id: self._context(st, adapters) for st in self.pipeline.stages}
        await prepare_stages(self.pipeline, contexts, clock=self.options.clock, events=self.events)
        if self.options.shard is not None and hasattr(resources, "http_client"):
            # Opened now, not by a worker's first call: that call's start was granted by the
            # shared limiter, and opening the client (importing httpx) would make it arrive late.
            await resources.http_client()
        if scaled:
            from funcpipe.run.scaleout import drive_shards

            return await drive_shards(self, contexts)

        def build(st: CompiledStage, upstream: AsyncGen[Item]) -> AsyncGen[Item]:
            transform = factories[st.id](st.config, contexts[st.id])
            return self._instrument(st, transform(self._count_inputs(st.id, upstream)))

        async with asyncio.TaskGroup() as tg:
            final = wire(self.pipeline, tg, build, buffer=self.options.buffer)
            async with contextlib.aclosing(final()) as it:  # type: ignore[type-var]
                async for r in it:
                    if isinstance(r, Ok):
                        terminal, item = r.value
                        self.acct.committed(terminal, item.source_id)
        return True

    async def run(self) -> RunReport:
        """Run the pipeline to the end and return the report (also written to disk).

        The run is told to the event sinks between a ``run_start`` and a
        ``run_end`` event; its tracer and metrics (``options.observe``) are
        opened first and closed once the report is written.
        """
        if not self.options.force:
            over = budget_refusal(self.pipeline, self.state_dir, fresh=self.options.fresh)
            if over:
                raise BudgetExceeded(
                    "the estimate exceeds the budget, so the run was not started: "
                    + "; ".join(over)
                    + " (see `funcpipe run --dry-run`; --force runs until the budget is spent)"
                )
        check_outputs(
            self.state_dir, self.dead, self.options.report_path, metrics_file=self.options.observe.metrics_file
        )
        telemetry = open_telemetry(
            self.pipeline, self.options.observe, stats=self.stats, redact=self.redact, notify=self._notify
        )
        self.events.listeners.extend(telemetry.sinks)
        try:
            return await self._run()
        finally:
            telemetry.close()

    def _run_event(self, kind: Literal["run_start", "run_end"], code: str | None = None, **data: object) -> None:
        self.events(Event(kind, code=code, at=self.options.clock.now(), duration=0.0, data=data))

    async def _run(self) -> RunReport:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        status, exit_code, message = "ok", 0, None
        self._run_event("run_start", run_id=self.run_id, pipeline=self.pipeline.name, stages=len(self.pipeline.stages))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        shard = self.options.shard
        if shard is None:  # a shard's driver keeps the one ledger
            self.ledger = Ledger(self.state_dir / "ledger.sqlite", self.pipeline.fingerprint, self.run_id)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        if self.options.handle_signals:
            self.shutdown.install(task)
        self._flusher = loop.call_later(FLUSH_SECONDS, self._flush_ledger)
        drained = False
        try:
            # User callables (``use: module:fn``) live beside the spec, as the loader found them.
            with importable(self.pipeline.base_dir):
                async with self.options.open_resources(self.state_dir) as resources:
                    drained = await self._drive(resources)
                    if drained:
                        self.acct.finish()
                    else:
                        self.acct.stop()
                    if drained and not self.stop.is_set() and self._adapters is not None and self.ledger is not None:
                        await self.sync.run(self.ledger, self._adapters, clock=self.options.clock, events=self.events)
                        # After the sync's deletions: a deferred index is built over the rows that stay.
                        await finish_stages(self.pipeline, self._contexts, clock=self.options.clock, events=self.events)
                        for sid, key in self.pipeline.resume_keys.items():
                            self.ledger.prune_superseded(self.pipeline.origins[sid], key)
        except* _NotStarted as eg:
            # Nothing was done: there is no outcome to report, only the reason.
            reason = eg.exceptions[0]
            self.events(
                Event(
                    "run_end",
                    code="error",
                    at=self.options.clock.now(),
                    duration=time.perf_counter() - t0,
                    data={"exit_code": _NotStarted.exit_code, "message": self.redact(str(reason))},
                )
            )
            raise reason from None
        except* FailFast as eg:
            status, exit_code, message = "failed", 1, str(eg.exceptions[0])
        except* RunError as eg:
            status, exit_code, message = "error", 1, str(eg.exceptions[0])
        except* SpecError as eg:
            status, exit_code, message = "error", 2, str(eg.exceptions[0])
        except* asyncio.CancelledError:
            if self.shutdown.aborted is None:
                raise
            task.uncancel()
        finally:
            if not drained:
                # Stopped early (fail_fast, a run error, an abort): what was in flight is unfinished.
                self.acct.stop()
            self._flusher.cancel()
            if self.options.handle_signals:
                self.shutdown.remove()
            self.dead.close()
            if self.ledger is not None:
                self.ledger.close()
        if status == "ok" and (self.acct.counts["failed"] or self.dead.count):
            status, exit_code = "failed", 1
        stopped = self.shutdown.outcome(self.acct.counts["unfinished"])
        if stopped is not None:
            status, message, exit_code = stopped
        elif self.costs.exhausted is not None and status in ("ok", "failed"):
            status, exit_code = "budget_exhausted", BUDGET_EXHAUSTED_EXIT
            message = (
                f"stopped by the budget: {self.costs.exhausted}; "
                f"{self.acct.counts['unfinished']} item(s) unfinished; run again to resume "
                "(with --force while what is left exceeds the budget)"
            )
        report = build_report(
            self.pipeline,
            run_id=self.run_id,
            started=started,
            duration=time.perf_counter() - t0,
            status=status,
            exit_code=exit_code,
            message=None if message is None else self.redact(message),
            stats=self.stats,
            failures=self.failures,
            acct=self.acct,
            deleted=self.sync.deleted,
            dead_letter=self.dead.path,
            dead_lettered=self.dead.count,
            sync=self.sync.report,
            costs=self.costs,
            executor=self.executor_report,
        )
        targets = [self.state_dir / f"{self.pipeline.name}.report.json"] if shard is None else []
        if self.options.report_path is not None:
            targets.append(self.options.report_path)
        write_report(report, targets, self.redact)
        self.events(
            Event(
                "run_end",
                code=report.status,
                at=self.options.clock.now(),
                duration=report.duration_s,
                data={
                    "exit_code": report.exit_code,
                    "message": report.message,
                    "accounting": dict(report.accounting),
                },
            )
        )
        return report

    def _flush_ledger(self) -> None:
        """Commit settled items now and then, so a crash loses at most a moment's work."""
        if self.ledger is not None:
            self.ledger.flush()
        self._flusher = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush_ledger)

    def _notify(self, message: str) -> None:
        self.options.notify(self.redact(message))


class _NotStarted(RunError):
    """A pre-flight check failed after resources were opened, before any work."""


def _dead_letter_event(stage_id: str, error: ErrInfo, item: object, now: float) -> Event:
    """The ``dead_letter`` event of an item that failed for good: its code, message and HTTP status."""
    data: dict[str, object] = {"message": error.msg}
    status = error.meta.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        data["status"] = status
    attempts = error.meta.get("attempts")
    return Event(
        "dead_letter",
        stage_id,
        item.id if isinstance(item, Item) else None,
        attempts if isinstance(attempts, int) else 0,
        code=error.code,
        at=now,
        data=data,
    )


def content_hash(item: Item) -> str:
    """What identifies a source item's content: its file hash if known, else a hash of its data."""
    known = item.meta.get("sha256")
    if isinstance(known, str):
        return known
    data = item.data
    if isinstance(data, bytes | bytearray):
        return hashlib.sha256(data).hexdigest()
    return stable_id(data)


async def run_pipeline(pipeline: CompiledPipeline, options: RunOptions | None = None) -> RunReport:
    """Run ``pipeline`` once and return its report."""
    return await Runner(pipeline, options).run()


__all__ = ["RunOptions", "Runner", "Shard", "content_hash", "missing_credentials", "run_pipeline"]
