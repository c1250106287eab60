"""Prometheus metrics of a run (the ``metrics`` extra): served while it goes, written when it ends.

Each run has its own `prometheus_client.CollectorRegistry`: nothing is
registered globally, so runs in one process (tests, a service running
pipelines) never mix their numbers. Two sources feed it:

- the events (`funcpipe.policy.events.Event`): request latencies per
  adapter, requests by outcome, retries by code, limiter wait seconds,
  breaker state and in-flight calls, updated as each event arrives;
- the live per-stage counters (`funcpipe.RunSession.stats`, public and
  read-only): items in, out, failed and filtered, read at each scrape, so
  counting an item costs nothing more than it did.

Every metric carries the ``pipeline`` label. To add one (a token counter
fed by a usage event, say): define it in `RunMetrics.__init__` and map the
event kind to a method in `RunMetrics._HANDLERS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from funcpipe.errors import RunError
from funcpipe.policy.events import Event

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["LATENCY_BUCKETS", "MetricsServer", "RunMetrics", "StageCounts"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Request latency buckets, in seconds: local models in milliseconds up to slow generations in a minute."""

BREAKER_STATES = ("closed", "half_open", "open")

RUN_OUTCOMES = ("sources", "done", "failed", "filtered", "unfinished", "skipped", "deleted")
"""The report's accounting entries ``funcpipe_run_items`` carries (see docs/runner.md)."""

_MISSING = "metrics need prometheus-client: pip install 'funcpipe-runner[metrics]' ({error})"


class StageCounts(Protocol):
    """What the metrics read of a stage's live counters (`funcpipe.run.accounting.StageStats`)."""

    inputs: int
    outputs: int
    failed: int
    filtered: int


def _prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise RunError(_MISSING.format(error=exc)) from None


class _StageItems:
    """A collector reading the per-stage item counters at scrape time."""

    def __init__(self, pipeline: str, stages: Mapping[str, str], stats: Mapping[str, StageCounts]) -> None:
        self.pipeline = pipeline
        self.stages = dict(stages)
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        families = {
            field: CounterMetricFamily(
                f"funcpipe_stage_items_{name}",
                help_text,
                labels=["pipeline", "stage", "use"],
            )
            for field, name, help_text in (
                ("inputs", "in", "Items that reached the stage."),
                ("outputs", "out", "Items the stage passed on (written, for a sink)."),
                ("failed", "failed", "Items that failed at the stage (dead-lettered)."),
                ("filtered", "filtered", "Items the stage dropped on purpose."),
            )
        }
        for stage, use in self.stages.items():
            st = self.stats.get(stage)
            if st is None:
                continue
            for field, family in families.items():
                family.add_metric([self.pipeline, stage, use], float(getattr(st, field)))
        yield from families.values()


class RunMetrics:
    """A run's metrics: an event sink, and the registry holding what it counted.

    Args:
        pipeline: the pipeline's name (the ``pipeline`` label).
        stages: per stage id, its kind (``use``).
        adapters: per stage id, ``(adapter name, adapter kind)`` for stages that call one.
        stats: the run's live per-stage counters, read at each scrape.
        breakers: the stages whose policy has a circuit breaker (their state starts ``closed``).

    Raises:
        RunError: prometheus-client is not installed.
    """

    def __init__(
        self,
        pipeline: str,
        stages: Mapping[str, str],
        adapters: Mapping[str, tuple[str, str]],
        stats: Mapping[str, StageCounts],
        breakers: frozenset[str] = frozenset(),
    ) -> None:
        _prometheus()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.pipeline = pipeline
        self.adapters = dict(adapters)
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        call = ["pipeline", "stage", "adapter", "kind"]
        self.latency = Histogram(
            "funcpipe_request_duration_seconds",
            "Latency of each attempt of an external call, per adapter.",
            call,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "funcpipe_requests",
            "Attempts of external calls, by outcome (OK or the error code).",
            [*call, "code"],
            registry=reg,
        )
        self.retries = Counter(
            "funcpipe_retries",
            "Attempts retried, by the error code that caused the retry.",
            [*call, "code"],
            registry=reg,
        )
        self.in_flight = Gauge("funcpipe_in_flight_calls", "External calls under way now.", call, registry=reg)
        self.limiter_wait = Counter(
            "funcpipe_limiter_wait_seconds",
            "Seconds calls waited for the stage's rate limiter.",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.limiter_pauses = Counter(
            "funcpipe_limiter_pauses",
            "Times a Retry-After answer paused the stage's rate limiter.",
            ["pipeline", "stage"],
            registry=reg,
        )
        self.breaker = Gauge(
            "funcpipe_breaker_state",
            "The stage's circuit breaker: 1 for its current state.",
            ["pipeline", "stage", "state"],
            registry=reg,
        )
        self.dead_letters = Counter(
            "funcpipe_dead_letters",
            "Items dead-lettered, by stage and error code.",
            ["pipeline", "stage", "code"],
            registry=reg,
        )
        self.run_info = Gauge(
            "funcpipe_run_info", "The run: 1, labelled with its id.", ["pipeline", "run_id"], registry=reg
        )
        self.run_start = Gauge(
            "funcpipe_run_start_time_seconds", "When the run started (Unix time).", ["pipeline"], registry=reg
        )
        self.run_end = Gauge(
            "funcpipe_run_end_time_seconds", "When the run ended (Unix time).", ["pipeline"], registry=reg
        )
        self.run_duration = Gauge("funcpipe_run_duration_seconds", "How long the run took.", ["pipeline"], registry=reg)
        self.exit_code = Gauge(
            "funcpipe_run_exit_code",
            "The run's exit code: 0 every item done, 1 some failed or the run failed.",
            ["pipeline"],
            registry=reg,
        )
        self.outcomes = Gauge(
            "funcpipe_run_items",
            "Source items of the run by outcome (at its end).",
            ["pipeline", "outcome"],
            registry=reg,
        )
        reg.register(_StageItems(pipeline, stages, stats))
        # Every attempt updates these: their labelled children are looked up once (each lookup takes a lock).
        self._per_call: dict[str, tuple[Any, Any]] = {}
        self._per_code: dict[tuple[str, str], Any] = {}
        for stage in sorted(breakers):
            self._breaker_state(stage, "closed")

    # -- the events -----------------------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        handler = self._HANDLERS.get(ev.kind)
        if handler is not None:
            handler(self, ev)

    def _call_labels(self, stage: str) -> tuple[str, str, str, str]:
        name, kind = self.adapters.get(stage, ("", ""))
        return self.pipeline, stage, name, kind

    def _stage_children(self, stage: str) -> tuple[Any, Any]:
        """The stage's in-flight gauge and latency histogram."""
        children = self._per_call.get(stage)
        if children is None:
            labels = self._call_labels(stage)
            children = self._per_call[stage] = (self.in_flight.labels(*labels), self.latency.labels(*labels))
        return children

    def _requests(self, stage: str, code: str) -> Any:
        child = self._per_code.get((stage, code))
        if child is None:
            child = self._per_code[stage, code] = self.requests.labels(*self._call_labels(stage), code)
        return child

    def _attempt(self, ev: Event) -> None:
        self._stage_children(ev.stage)[0].inc()

    def _outcome(self, ev: Event) -> None:
        if ev.kind == "failure" and ev.data.get("gate") == "breaker":
            # Refused by an open breaker: no request was made.
            self._requests(ev.stage, str(ev.code)).inc()
            return
        in_flight, latency = self._stage_children(ev.stage)
        in_flight.dec()
        latency.observe(ev.duration)
        self._requests(ev.stage, "OK" if ev.kind == "success" else str(ev.code)).inc()

    def _wait(self, ev: Event) -> None:
        if ev.data.get("reason") == "backoff":
            code = ev.data.get("code")
            self.retries.labels(*self._call_labels(ev.stage), str(code)).inc()

    def _limited(self, ev: Event) -> None:
        if ev.data.get("reason") == "retry_after":
            self.limiter_pauses.labels(self.pipeline, ev.stage).inc()
        else:
            self.limiter_wait.labels(self.pipeline, ev.stage).inc(ev.duration)

    def _breaker(self, ev: Event) -> None:
        self._breaker_state(ev.stage, str(ev.code))

    def _breaker_state(self, stage: str, state: str) -> None:
        for s in BREAKER_STATES:
            self.breaker.labels(self.pipeline, stage, s).set(1.0 if s == state else 0.0)

    def _dead_letter(self, ev: Event) -> None:
        self.dead_letters.labels(self.pipeline, ev.stage, str(ev.code)).inc()

    def _run_start(self, ev: Event) -> None:
        run_id = ev.data.get("run_id")
        self.run_info.labels(self.pipeline, str(run_id)).set(1)
        self.run_start.labels(self.pipeline).set(time.time())

    def _run_end(self, ev: Event) -> None:
        self.run_end.labels(self.pipeline).set(time.time())
        self.run_duration.labels(self.pipeline).set(ev.duration)
        exit_code = ev.data.get("exit_code")
        if isinstance(exit_code, int):
            self.exit_code.labels(self.pipeline).set(exit_code)
        accounting = ev.data.get("accounting")
        if isinstance(accounting, Mapping):
            for outcome in RUN_OUTCOMES:
                count = accounting.get(outcome)
                if isinstance(count, int) and not isinstance(count, bool):
                    self.outcomes.labels(self.pipeline, outcome).set(count)

    _HANDLERS: ClassVar[dict[str, Callable[[RunMetrics, Event], None]]] = {
        "attempt": _attempt,
        "success": _outcome,
        "failure": _outcome,
        "wait": _wait,
        "limited": _limited,
        "breaker": _breaker,
        "dead_letter": _dead_letter,
        "run_start": _run_start,
        "run_end": _run_end,
    }

    # -- out ------------------------------------------------------------------------------

    def text(self) -> str:
        """The metrics in Prometheus' text format, as ``/metrics`` serves them."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")

    def write(self, path: Path) -> None:
        """Write the metrics to ``path`` for node_exporter's textfile collector, atomically.

        Raises:
            RunError: the file cannot be written.
        """
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(str(path), self.registry)
        except OSError as exc:
            raise RunError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None


class MetricsServer:
    """``/metrics`` over HTTP on its own thread, for the length of a run.

    Args:
        registry: what it serves.
        host: the address to listen on (``127.0.0.1`` unless told).
        port: the port (0: any free one; see `url`).

    Raises:
        RunError: the port cannot be bound.
    """

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> None:
        _prometheus()
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise RunError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another --metrics-port (0 picks a free one)"
            ) from None
        self.host = host
        self.port: int = self._server.server_port
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """Where the metrics are: ``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
