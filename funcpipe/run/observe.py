"""What a run is observed through besides its displays: traces and metrics, opened and closed with it.

`open_telemetry` reads the run's options, starts what they ask for (a
tracer, the ``/metrics`` server) and returns a `Telemetry` whose sinks the
runner adds to its event hub; `Telemetry.close` writes the metrics file,
stops the server and flushes the spans once the report is written.
Nothing here is imported, and no optional library loaded, unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from funcpipe.compile import CompiledPipeline
from funcpipe.errors import RunError
from funcpipe.policy.events import EventSink

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from funcpipe.run.accounting import StageStats
    from funcpipe.run.metrics import MetricsServer, RunMetrics
    from funcpipe.run.tracing import RunTracer

__all__ = ["Observe", "Telemetry", "open_telemetry"]


@dataclass(frozen=True)
class Observe:
    """How a run is traced and measured (the `funcpipe.run.RunOptions` fields of the same names).

    Attributes:
        trace: True to trace, False never; None as the ``OTEL_*`` variables say.
        tracer_provider: an OpenTelemetry ``TracerProvider`` to send spans to
            (the caller's: flushed at the end, never shut down); implies ``trace``.
        metrics_port: serve ``/metrics`` on this port during the run (0: any free port).
        metrics_host: the address the metrics server listens on.
        metrics_file: write the metrics here at the end (textfile-collector format).
    """

    trace: bool | None = None
    tracer_provider: TracerProvider | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_file: Path | None = None


@dataclass
class Telemetry:
    """The run's tracer and metrics, if any: their event sinks, and how to close them.

    Attributes:
        sinks: the event sinks to add to the run's event hub.
        tracer: the tracer, when tracing.
        metrics: the metrics, when measuring.
        server: the ``/metrics`` server, when serving.
        metrics_file: where to write the metrics at the end.
    """

    sinks: list[EventSink] = field(default_factory=list)
    tracer: RunTracer | None = None
    metrics: RunMetrics | None = None
    server: MetricsServer | None = None
    metrics_file: Path | None = None
    notify: Callable[[str], None] = print

    def close(self) -> None:
        """Write the metrics file, stop the server, send the last spans; each even if another fails."""
        try:
            if self.metrics is not None and self.metrics_file is not None:
                try:
                    self.metrics.write(self.metrics_file)
                except RunError as exc:
                    self.notify(str(exc))
        finally:
            try:
                if self.server is not None:
                    self.server.close()
            finally:
                if self.tracer is not None:
                    self.tracer.close()


def _adapters(pipeline: CompiledPipeline) -> dict[str, tuple[str, str]]:
    return {
        st.id: (st.adapter, pipeline.adapters[st.adapter].kind.name)
        for st in pipeline.stages
        if st.adapter is not None and st.adapter in pipeline.adapters
    }


def open_telemetry(
    pipeline: CompiledPipeline,
    observe: Observe,
    *,
    stats: Mapping[str, StageStats],
    redact: Callable[[str], str],
    notify: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> Telemetry:
    """Start what ``observe`` asks for; close the result when the run has ended.

    Raises:
        RunError: an extra is missing, the metrics port cannot be bound, or an
            ``OTEL_*`` variable asks for what funcpipe does not ship. Nothing
            is left running.
    """
    env = os.environ if environ is None else environ
    telemetry = Telemetry(notify=notify, metrics_file=observe.metrics_file)
    adapters = _adapters(pipeline)
    breakers = frozenset(st.id for st in pipeline.stages if st.policy.circuit_breaker is not None)
    try:
        if observe.metrics_port is not None or observe.metrics_file is not None:
            from funcpipe.run.metrics import MetricsServer, RunMetrics

            stages = {st.id: st.kind.name for st in pipeline.stages}
            telemetry.metrics = RunMetrics(pipeline.name, stages, adapters, stats, breakers)
            telemetry.sinks.append(telemetry.metrics)
            if observe.metrics_port is not None:
                telemetry.server = MetricsServer(telemetry.metrics.registry, observe.metrics_host, observe.metrics_port)
                notify(f"metrics: {telemetry.server.url}")
        wanted = observe.trace if observe.trace is not None else observe.tracer_provider is not None
        if observe.trace is None and not wanted:
            from funcpipe.run.tracing import tracing_wanted

            wanted = tracing_wanted(env)
        if wanted:
            from funcpipe.run.tracing import RunTracer, open_tracer_provider

            if observe.tracer_provider is not None:
                telemetry.tracer = RunTracer(observe.tracer_provider, adapters, redact, breakers=breakers)
            else:
                telemetry.tracer = RunTracer(open_tracer_provider(env), adapters, redact, owned=True, breakers=breakers)
            telemetry.sinks.append(telemetry.tracer)
    except BaseException:
        telemetry.metrics_file = None  # nothing ran: there is nothing to write
        telemetry.close()
        raise
    return telemetry
