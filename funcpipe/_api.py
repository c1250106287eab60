"""The root Python API: `load` a spec into a `Pipeline`, then run, query, draw or estimate it.

    import funcpipe

    pipeline = funcpipe.load("pipelines/rag.yaml")
    report = pipeline.run()
    answer = pipeline.query("how do I switch the embedding provider?")

The ``funcpipe`` command line is a thin caller of this module: whatever it
shows (progress, JSON logs, the summary) attaches through `RunSession`'s
public hooks, never through the runner's insides. The HTTP and database
clients and the terminal library are imported on first use.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, TypedDict, TypeVar, Unpack, overload

from pydantic import ValidationError

from funcpipe.compile import CompiledPipeline, compile_pipeline
from funcpipe.errors import SpecErrors
from funcpipe.policy.clock import Clock
from funcpipe.policy.events import Event, EventSink
from funcpipe.spec import LoadedSpec, SpecCheck, check_spec, load_spec
from funcpipe.spec.models import ExecutorSpec

if TYPE_CHECKING:
    import contextlib

    from opentelemetry.trace import TracerProvider

    from funcpipe.run import Runner
    from funcpipe.run.accounting import StageStats
    from funcpipe.run.estimate import StageEstimate
    from funcpipe.run.query import Answer
    from funcpipe.run.report import RunReport

T = TypeVar("T")

StrPath = str | os.PathLike[str]
"""A file path, as text or a `pathlib.Path`."""

Overrides = str | Sequence[str] | Mapping[str, object]
"""``--set`` overrides: ``"key.path=value"`` strings, or a mapping of key paths to values."""

Params = StrPath | Mapping[str, object]
"""``--params``: a YAML file of params, or a mapping merged into ``params``."""


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


class Estimate:
    """The dry run's plan and estimate (``funcpipe run --dry-run``), as a value.

    Attributes:
        pipeline: the pipeline's name.
        latency: the assumed seconds per external call.
        stages: per stage, in graph order, what it is expected to see and do.
    """

    def __init__(self, compiled: CompiledPipeline, stages: Sequence[StageEstimate], latency: float) -> None:
        self._compiled = compiled
        self.pipeline = compiled.name
        self.latency = latency
        self.stages = tuple(stages)

    def __repr__(self) -> str:
        return f"Estimate(pipeline={self.pipeline!r}, least_duration={self.least_duration:.1f}s)"

    @property
    def least_duration(self) -> float:
        """The least time the run can take, in seconds: its slowest external stage's bound."""
        from funcpipe.run.estimate import least_duration

        return least_duration(list(self.stages))

    @property
    def tokens(self) -> int:
        """The input tokens the embedding stages will send, estimated from characters."""
        return sum(s.tokens or 0 for s in self.stages)

    @property
    def cost(self) -> float | None:
        """The estimated cost in USD over the priced adapters; None when none is priced."""
        costs = [s.cost for s in self.stages if s.cost is not None]
        return sum(costs) if costs else None

    @property
    def over_budget(self) -> list[str]:
        """What the estimate exceeds, one entry per budget; a run refuses to start on it unless ``force``."""
        from funcpipe.run.estimate import over_budget

        return over_budget(self._compiled, list(self.stages))

    def to_json(self) -> dict[str, Any]:
        """The plan and estimate as ``--dry-run --log-format json`` prints them.

        ``{"pipeline", "latency_s", "least_duration_s", "stages", "tokens", "cost", "budgets"}``.
        """
        from funcpipe.run.estimate import to_json

        return to_json(self._compiled, list(self.stages), latency=self.latency)

    def print(self, file: IO[str] | None = None) -> None:
        """Print the plan and the estimate as two tables, as ``--dry-run`` does (default: stdout)."""
        from funcpipe.run.estimate import print_plan

        print_plan(self._compiled, list(self.stages), sys.stdout if file is None else file, latency=self.latency)


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


class Pipeline:
    """A loaded, validated and compiled pipeline. Nothing has run yet.

    Get one with `funcpipe.load`.
    """

    def __init__(self, loaded: LoadedSpec, compiled: CompiledPipeline) -> None:
        self._loaded = loaded
        self._compiled = compiled

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, path={str(self.path)!r}, stages={len(self.stages)})"

    @property
    def compiled(self) -> CompiledPipeline:
        """The compiled description, for tools built on `funcpipe.run` and `funcpipe.render`."""
        return self._compiled

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._compiled.name

    @property
    def description(self) -> str | None:
        """The spec's ``description:``."""
        return self._loaded.spec.description

    @property
    def path(self) -> Path:
        """The spec file."""
        return self._loaded.path

    @property
    def fingerprint(self) -> str:
        """sha256 of the fully rendered spec: two loads with the same fingerprint run the same thing."""
        return self._loaded.fingerprint

    @property
    def stages(self) -> tuple[StageInfo, ...]:
        """The stages, in graph order."""
        return tuple(StageInfo(s.id, s.kind.name, s.adapter, s.inputs) for s in self._compiled.stages)

    def redact(self, text: str) -> str:
        """``text`` with the pipeline's secrets (``*_env`` values, DSN passwords) masked."""
        from funcpipe.run.redact import Redactor

        return Redactor.for_pipeline(self._compiled)(text)

    def session(self, **options: Unpack[RunSettings]) -> RunSession:
        """A run prepared but not started, to attach displays to (see `RunSession`)."""
        return RunSession(self, **options)

    async def run_async(self, **options: Unpack[RunSettings]) -> RunReport:
        """Run the pipeline once in the running event loop; see `run`."""
        return await RunSession(self, **options).run_async()

    def run(self, **options: Unpack[RunSettings]) -> RunReport:
        """Run the pipeline once and return its report.

        Items that fail do not raise: they are dead-lettered and counted
        (``report.exit_code`` is 1, ``report.accounting["failed"]`` says how
        many). Nor does a run that fails as a whole once started: its report
        has ``status`` ``"error"`` and the reason in ``message``. Done items
        are recorded, so a second run redoes only what changed.

        Args:
            **options: ``fresh``, ``seed``, ``report_path``, ``shutdown_timeout``,
                ``handle_signals``, ``listeners``, ``on_event``, ``notify``,
                ``state_dir``, ``clock``, ``buffer``, ``resources``, ``force``, ``trace``,
                ``tracer_provider``, ``metrics_port``, ``metrics_host``, ``metrics_file``,
                ``executor``, ``address``, ``workers`` (see `RunSettings`).

        Raises:
            RunError: the run could not start, and nothing was done (an unset
                API key, an unwritable state directory or report path; or
                `funcpipe.errors.BudgetExceeded`, exit code 4, when the estimate
                exceeds a budget and ``force`` is not set).
            RuntimeError: when called inside a running event loop: use `run_async`.
        """
        _check_settings(options)
        return _sync("Pipeline.run()", "pipeline.run_async()", lambda: self.run_async(**options))

    async def query_async(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> Answer:
        """Answer ``question`` in the running event loop; see `query`."""
        from funcpipe.run.query import answer_question, check_mode

        return await answer_question(self._compiled, question, top_k=top_k, mode=check_mode(mode))

    def query(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> Answer:
        """Answer ``question`` from what the pipeline stored, with the spec's own adapters.

        ``Answer.weak`` says (None when all is well) when even the best
        passage matches the question weakly, so the answer may be noise.

        Args:
            question: the question.
            top_k: how many chunks to retrieve (default: the spec's ``query.top_k``).
            mode: ``vector``, ``keyword`` or ``hybrid`` (default: the spec's ``query.mode``).

        Raises:
            ValueError: ``mode`` is not a retrieval mode.
            SpecError: the spec has no ``query:`` section, or cannot tell its store.
            RunError: a service call failed, nothing was ingested yet, or the
                store holds another embedder's vectors.
            RuntimeError: when called inside a running event loop: use `query_async`.
        """
        return _sync(
            "Pipeline.query()", "pipeline.query_async()", lambda: self.query_async(question, top_k=top_k, mode=mode)
        )

    @overload
    def render(self, format: Literal["png"]) -> bytes: ...

    @overload
    def render(self, format: Literal["mermaid", "dot", "svg", "html"] = "mermaid") -> str: ...

    @overload
    def render(self, format: str) -> str | bytes: ...

    def render(self, format: str = "mermaid") -> str | bytes:
        """Draw the pipeline: ``mermaid``, ``dot``, ``svg`` and ``html`` as text, ``png`` as bytes.

        Raises:
            ValueError: for an unknown format.
            RunError: ``svg`` or ``png`` without Graphviz installed.
        """
        from funcpipe.render import render

        data = render(self._compiled, format)
        return data if format == "png" else data.decode("utf-8")

    def estimate(self, latency: float = 0.1, *, fresh: bool = False) -> Estimate:
        """The plan and what it will cost, calling nothing (``funcpipe run --dry-run``).

        For a pipeline with a budget, what earlier runs finished is left out
        (the files are read to tell), so the estimate is that of the next run.

        Args:
            latency: assumed seconds per external call, for the concurrency bound.
            fresh: count every source item, as ``run(fresh=True)`` would redo them.
        """
        from funcpipe.run.estimate import estimate, finished_before

        if fresh:
            return Estimate(self._compiled, estimate(self._compiled, latency=latency), latency)
        with finished_before(self._compiled) as finished:
            stages = estimate(self._compiled, latency=latency, finished=finished)
        return Estimate(self._compiled, stages, latency)


_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _yaml_value(where: str, value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: {value!r} cannot be written in a spec; use str, int, float, bool, None, list or dict"
        ) from None


def _param_overrides(params: Mapping[str, object], at: str) -> list[str]:
    out: list[str] = []
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_KEY.match(key):
            raise ValueError(f"params key {key!r} at {at}: write keys as names (letters, digits, _ and -)")
        path = f"{at}.{key}"
        if isinstance(value, Mapping) and value:
            out += _param_overrides(value, path)
        else:
            out.append(f"{path}={_yaml_value(path, value)}")
    return out


def _spec_inputs(overrides: Overrides | None, params: Params | None) -> tuple[list[str], str | None]:
    """``(override strings, params file)`` for `load_spec`: a params mapping is applied as overrides first."""
    out: list[str] = []
    params_file: str | None = None
    if isinstance(params, Mapping):
        out += _param_overrides(params, "params")
    elif params is not None:
        params_file = os.fspath(params)
    if isinstance(overrides, str):
        out.append(overrides)
    elif isinstance(overrides, Mapping):
        out += [f"{k}={_yaml_value(f'set[{k!r}]', v)}" for k, v in overrides.items()]
    elif overrides is not None:
        out += list(overrides)
    return out, params_file


def load(
    path: StrPath,
    *,
    set: Overrides | None = None,
    params: Params | None = None,
    env: Mapping[str, str] | None = None,
    check_sources: bool = True,
) -> Pipeline:
    """Load, validate and compile the spec at ``path``.

    Args:
        path: the spec file.
        set: overrides applied before validation, as ``--set`` does: strings
            ``"stages[2].with.size=400"`` (values are YAML), or a mapping
            ``{"stages[2].with.size": 400}`` (values are Python values).
        params: a YAML file merged into ``params`` (``--params``), or a
            mapping, each of whose values is set under ``params`` (nested
            mappings merge). ``set`` is applied after it.
        env: the variables ``${VAR}`` reads (default: `os.environ`).
        check_sources: check now that source paths written literally exist;
            turn it off for a pipeline only queried or drawn (a run checks
            them again when it starts).

    Raises:
        SpecErrors: every error found, each located (file, line, column, path, hint).
    """
    overrides, params_file = _spec_inputs(set, params)
    loaded = load_spec(
        os.fspath(path), overrides=overrides, params_file=params_file, env=env, check_sources=check_sources
    )
    return Pipeline(loaded, compile_pipeline(loaded))


def check(
    path: StrPath,
    *,
    set: Overrides | None = None,
    params: Params | None = None,
    env: Mapping[str, str] | None = None,
    check_env: bool = False,
) -> SpecCheck:
    """Check the spec at ``path`` and report, never raise (``funcpipe validate``).

    Unlike `load`, an unset ``${VAR}`` without default is only a note unless
    ``check_env`` requires it (and the variables adapters read, API keys).

    Args:
        path: the spec file.
        set: as for `load`.
        params: as for `load`.
        env: as for `load`.
        check_env: require the run's environment.
    """
    if os.fspath(path).endswith((".test.yaml", ".test.yml")):  # funcpipe.pipetest.SUFFIXES
        return _check_test_file(Path(path), env=env, check_env=check_env)
    overrides, params_file = _spec_inputs(set, params)
    return check_spec(os.fspath(path), overrides=overrides, params_file=params_file, env=env, check_env=check_env)


def _check_test_file(path: Path, *, env: Mapping[str, str] | None, check_env: bool) -> SpecCheck:
    """`check` for a pipeline test file (``*.test.yaml``): the file itself, then the spec it names.

    The result's ``name`` is the spec it tests and ``stages`` its number of tests.
    """
    from funcpipe.pipetest import load_test_file

    try:
        loaded = load_test_file(path)
    except SpecErrors as exc:
        return SpecCheck(tuple(exc.errors), (), None, 0)
    spec = check_spec(os.fspath(loaded.spec_path), env=env, check_env=check_env)
    return SpecCheck(spec.errors, spec.unset, loaded.model.spec, len(loaded.model.tests))
