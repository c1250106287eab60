"""Running a loaded pipeline from Python: the settings a run takes, and `RunSession`, one run and its displays.

`funcpipe.Pipeline.run` and ``funcpipe run`` both go through a `RunSession`;
what the command line shows (progress, JSON logs, the summary) attaches
through its public hooks, never through the runner's insides.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, TypeVar, Unpack

from pydantic import ValidationError

from funcpipe.policy.clock import Clock
from funcpipe.policy.events import Event, EventSink
from funcpipe.spec.models import ExecutorSpec

if TYPE_CHECKING:
    import contextlib

    from opentelemetry.trace import TracerProvider

    from funcpipe._api import Pipeline
    from funcpipe.run import Runner
    from funcpipe.run.accounting import StageStats
    from funcpipe.run.report import RunReport

T = TypeVar("T")

StrPath = str | os.PathLike[str]
"""A file path, as text or a `pathlib.Path`."""


class RunSettings(TypedDict, total=False):
    """The options of a run: the keyword arguments of `Pipeline.run` and `Pipeline.session`.

    Attributes:
        fresh: ignore what earlier runs recorded as done (``--fresh``).
        seed: seed for jitter and sampling (``--seed``, default 0).
        report_path: also write the JSON report here (``--report``).
        shutdown_timeout: seconds in-flight work gets after a signal (default: the spec's).
        handle_signals: stop gracefully on SIGINT and SIGTERM, as the command
            line does (default False: a library leaves signals to its caller;
            needs the main thread).
        listeners: event sinks, each called with every `funcpipe.Event`
            (attempts, waits, failures, breaker changes...).
        on_event: one more event sink, for a single callback.
        notify: where status lines go (shutdown progress, the embedded
            server starting); default: printed to stderr.
        state_dir: where the ledger, the dead letters and the embedded
            PostgreSQL live (default: ``.funcpipe/`` beside the spec).
        clock: the clock policies use (`funcpipe.testing.VirtualClock` in tests).
        buffer: capacity of the queues between fanned-out or merged stages (default 64).
        resources: factory ``(state_dir, clock) -> async context manager`` of
            what adapters are lent (default: HTTP client, pools, embedded PostgreSQL).
        force: start even when the estimate exceeds a budget (``--force``); the
            run still stops when the budget is spent.
        trace: send OpenTelemetry traces (``--trace``; the ``otel`` extra):
            True always, False never; default: when the ``OTEL_*`` variables
            name an exporter or an OTLP endpoint (see docs/observability.md).
        tracer_provider: an OpenTelemetry ``TracerProvider`` to send the
            run's spans to instead of one made from the ``OTEL_*`` variables
            (flushed at the end, never shut down).
        metrics_port: serve Prometheus metrics on ``/metrics`` at this port
            while the run goes (``--metrics-port``; 0 picks a free one; the
            ``metrics`` extra).
        metrics_host: the address the metrics server listens on (default ``127.0.0.1``).
        metrics_file: write the metrics here when the run ends, atomically,
            in the format of node_exporter's textfile collector (``--metrics-file``).
        executor: ``"local"`` (one process) or ``"ray"`` (shards across Ray
            workers, docs/scale-out.md); default: the spec's ``executor:``.
        address: the Ray cluster to join (``ray://host:10001``, ``auto``);
            none starts a local instance. Ray only.
        workers: how many shards run at once (default: the cluster's CPUs). Ray only.
    """

    fresh: bool
    seed: int
    report_path: StrPath | None
    shutdown_timeout: float | None
    handle_signals: bool
    listeners: Sequence[EventSink]
    on_event: EventSink | None
    notify: Callable[[str], None] | None
    state_dir: StrPath | None
    clock: Clock
    buffer: int
    resources: Callable[[Path, Clock], contextlib.AbstractAsyncContextManager[Any]] | None
    force: bool
    trace: bool | None
    tracer_provider: TracerProvider | None
    metrics_port: int | None
    metrics_host: str
    metrics_file: StrPath | None
    executor: Literal["local", "ray"] | None
    address: str | None
    workers: int | None


_OBSERVE = ("trace", "tracer_provider", "metrics_port", "metrics_host", "metrics_file")
"""The settings of `funcpipe.run.observe.Observe`."""

_SETTINGS = frozenset(RunSettings.__annotations__)


class Display(Protocol):
    """What shows a run: it gets every event and every status line.

    `funcpipe.run.progress.LiveProgress` (the progress bars) and
    `funcpipe.run.logging.JsonEventLog` (JSON lines) are displays.
    """

    def __call__(self, event: Event, /) -> None:
        """Take one event."""

    def notice(self, message: str, /) -> None:
        """Take one status line (already redacted)."""


@dataclass(frozen=True)
class StageInfo:
    """One stage of a pipeline, for display.

    Attributes:
        id: the stage id.
        use: its kind (``source.files``, ``embed``...).
        adapter: the adapter it calls, if any.
        inputs: the stages it reads (empty for a source).
    """

    id: str
    use: str
    adapter: str | None
    inputs: tuple[str, ...]


def _print_status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _outside_loop(call: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{call} starts its own event loop, but one is already running in this thread: "
        f"use `await {instead}` from async code"
    )


def _sync(call: str, instead: str, coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    _outside_loop(call, instead)
    from funcpipe.run import drive

    return drive(coro)


def _check_settings(options: Mapping[str, object]) -> None:
    for name in options:
        if name not in _SETTINGS:
            close = difflib.get_close_matches(name, sorted(_SETTINGS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown run option {name!r}{hint}; the options are {', '.join(sorted(_SETTINGS))}")


def _executor(spec: ExecutorSpec, options: Mapping[str, Any]) -> ExecutorSpec | None:
    """The spec's ``executor:`` with the run's ``executor``, ``address`` and ``workers`` over it; None if unchanged.

    Raises:
        ValueError: an unknown executor, a bad worker count, or Ray options for the local executor.
    """
    given = {k: options[k] for k in ("executor", "address", "workers") if options.get(k) is not None}
    if not given:
        return None
    fields = spec.model_dump()
    if "executor" in given:
        fields["kind"] = given["executor"]
        if given["executor"] == "local":
            fields.update(address=None, workers=None)  # choosing local drops the spec's Ray settings
    fields.update({k: given[k] for k in ("address", "workers") if k in given})
    if fields["kind"] == "local" and (fields["address"] is not None or fields["workers"] is not None):
        raise ValueError(
            "address and workers apply to the ray executor: pass executor='ray' (--executor ray), "
            "or write executor: {kind: ray} in the spec"
        )
    try:
        return ExecutorSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "executor"
        name = "executor" if where == "kind" else where
        raise ValueError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


class RunSession:
    """One run of a pipeline, prepared but not started: attach displays, read live counters, run it once.

    `Pipeline.run` is ``pipeline.session(**options).run()``; a session is for
    callers that show the run while it goes, as the command line does::

        session = pipeline.session(fresh=True)
        session.attach(JsonEventLog(sys.stderr, redact=session.redact))
        report = session.run()

    Args:
        pipeline: the pipeline to run.
        **options: as for `Pipeline.run` (see `RunSettings`).
    """

    def __init__(self, pipeline: Pipeline, **options: Unpack[RunSettings]) -> None:
        _check_settings(options)
        from funcpipe.run import Runner, RunOptions
        from funcpipe.run.observe import Observe

        self.pipeline = pipeline
        self._listeners: list[EventSink] = list(options.get("listeners", ()))
        on_event = options.get("on_event")
        if on_event is not None:
            self._listeners.append(on_event)
        self._notify = options.get("notify") or _print_status
        self._displays: list[Display] = []
        self._started = False
        self._report: RunReport | None = None
        passed: Mapping[str, Any] = options
        given: dict[str, Any] = {
            k: passed[k]
            for k in ("fresh", "seed", "shutdown_timeout", "handle_signals", "clock", "buffer", "resources", "force")
            if k in passed
        }
        for key in ("report_path", "state_dir"):
            if passed.get(key) is not None:
                given[key] = Path(passed[key])
        observe = {k: passed[k] for k in _OBSERVE if passed.get(k) is not None}
        if "metrics_file" in observe:
            observe["metrics_file"] = Path(observe["metrics_file"])
        given["observe"] = Observe(**observe)
        executor = _executor(pipeline.compiled.executor, passed)
        if executor is not None:
            given["executor"] = executor
        # The runner gets one fixed sink and one fixed notifier, both ours: what
        # is attached later is reached through them.
        self._runner: Runner = Runner(
            pipeline.compiled, RunOptions(listeners=[self._event], notify=self._status, **given)
        )

    def _event(self, ev: Event) -> None:
        for listener in self._listeners:
            listener(ev)

    def _status(self, message: str) -> None:
        # A display that draws on the terminal owns it: status lines go there instead of to `notify`.
        if self._displays:
            for display in self._displays:
                display.notice(message)
        else:
            self._notify(message)

    @property
    def stats(self) -> Mapping[str, StageStats]:
        """Live per-stage counters (inputs, outputs, failed, retries...), by stage id; read-only."""
        return MappingProxyType(self._runner.stats)

    @property
    def stages(self) -> tuple[StageInfo, ...]:
        """The pipeline's stages, in graph order."""
        return self.pipeline.stages

    @property
    def run_id(self) -> str:
        """The run's id, as its report, logs, traces and metrics carry it."""
        return self._runner.run_id

    @property
    def report(self) -> RunReport | None:
        """The report, once the run has ended."""
        return self._report

    def redact(self, text: str) -> str:
        """``text`` with this run's secrets (``*_env`` values, DSN passwords) masked."""
        return self._runner.redact(text)

    def attach(self, display: Display) -> None:
        """Show the run on ``display``: it gets every event, and the status lines instead of ``notify``.

        Raises:
            RuntimeError: if the run has started.
        """
        if self._started:
            raise RuntimeError("attach displays before the run starts")
        self._displays.append(display)
        self._listeners.append(display)

    async def run_async(self) -> RunReport:
        """Run to the end in the running event loop and return the report (also written to disk).

        A run that fails as a whole once started (a service refused, a
        source path gone) returns its report, with ``status`` ``"error"``
        and the reason in ``message``; a failed item is counted in it.

        Raises:
            RunError: the run could not start, and nothing was done (an unset
                API key, an unwritable state directory or report path).
            RuntimeError: if this session has run already.
        """
        if self._started:
            raise RuntimeError("a RunSession runs once: start another with pipeline.session()")
        self._started = True
        self._report = await self._runner.run()
        return self._report

    def run(self) -> RunReport:
        """`run_async` in a new event loop; refused inside a running loop."""
        return _sync("RunSession.run()", "session.run_async()", self.run_async)
