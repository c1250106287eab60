"""OpenTelemetry traces of a run, built from its events (the ``otel`` extra).

One span for the run, one per policy-wrapped call of a stage (a batch, or
one item), and one per attempt of that call::

    funcpipe.run                      run id, pipeline, status, exit code, accounting
      └ funcpipe.call                 stage, adapter, adapter kind, items, attempts, code
          └ funcpipe.attempt          attempt, code, HTTP status, Retry-After,
                                      limiter wait, breaker state

The spans are made from the events the policy interpreter and the runner
emit (`funcpipe.policy.events.Event`), never from the runner's insides: the
``call`` number every event of a call carries ties an attempt to its call,
so concurrent calls of one stage stay apart. Back-off waits, batch splits
and breaker transitions are span events. Every text written to a span
passes through the run's redaction.

Export follows the standard OpenTelemetry variables, read by the SDK:
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_TRACES_EXPORTER`` picks ``otlp``
(OTLP over HTTP/protobuf, the default) or ``console`` (JSON to stderr).
`tracing_wanted` says when a run traces without being told.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from funcpipe.errors import RunError
from funcpipe.policy.events import Event

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["RunTracer", "open_tracer_provider", "tracing_wanted"]

INSTRUMENTATION = "funcpipe"
"""The instrumentation scope name of funcpipe's spans."""

_MISSING = "tracing needs the OpenTelemetry SDK and its OTLP exporter: pip install 'funcpipe-runner[otel]' ({error})"


def _otel_error(exc: ImportError) -> RunError:
    return RunError(_MISSING.format(error=exc))


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint or a traces exporter is set.

    ``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` say no.
    Without any of these variables a run does not trace unless told
    (``--trace``, ``trace=True``): the SDK's default exporter would send
    to ``localhost:4318`` on every run.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def open_tracer_provider(environ: Mapping[str, str] | None = None) -> SdkTracerProvider:
    """A tracer provider of the run's own, exporting as the ``OTEL_*`` variables say.

    It is never installed as the global provider: a run's spans go where
    its settings say, whatever the process around it does.

    Raises:
        RunError: the ``otel`` extra is missing, or a variable asks for
            what funcpipe does not ship (an exporter other than ``otlp`` or
            ``console``, OTLP over gRPC).
    """
    env = os.environ if environ is None else environ
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise _otel_error(exc) from None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names or ["otlp"]:
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        elif name != "none":
            raise RunError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp (OTLP over HTTP) or console")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "funcpipe"}))
    provider = SdkTracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol and protocol.strip().lower() != "http/protobuf":
        raise RunError(
            f"OTLP protocol {protocol!r} is not supported: funcpipe exports OTLP over HTTP; "
            "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point the endpoint at the collector's HTTP port (4318)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise _otel_error(exc) from None
    return OTLPSpanExporter()


@dataclass
class _Call:
    """A call's span and what its attempts need: the attempt span open now, the limiter wait before it."""

    span: Span
    stage: str
    attempt: Span | None = None
    limiter_wait: float = 0.0
    attrs: dict[str, object] = field(default_factory=dict)


class RunTracer:
    """An event sink that turns a run's events into spans.

    Args:
        provider: where the spans go (`open_tracer_provider`'s, or the caller's).
        adapters: per stage id, ``(adapter name, adapter kind)`` for stages that call one.
        redact: applied to every text written to a span.
        owned: shut the provider down in `close` (it is the run's own).
        breakers: the stages whose policy has a circuit breaker: their
            attempts carry its state (``closed`` until a ``breaker`` event says otherwise).
    """

    def __init__(
        self,
        provider: TracerProvider,
        adapters: Mapping[str, tuple[str, str]],
        redact: Callable[[str], str],
        *,
        owned: bool = False,
        breakers: frozenset[str] = frozenset(),
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise _otel_error(exc) from None
        self._trace = trace
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(INSTRUMENTATION)
        self.adapters = dict(adapters)
        self.redact = redact
        self.owned = owned
        self._run: Span | None = None
        self._calls: dict[int, _Call] = {}
        self._breakers: dict[str, str] = dict.fromkeys(breakers, "closed")

    # -- the events -----------------------------------------------------------------------

    def __call__(self, ev: Event) -> None:
        handler = self._HANDLERS.get(ev.kind)
        if handler is not None:
            handler(self, ev)

    def _run_start(self, ev: Event) -> None:
        attrs = {f"funcpipe.{k}": v for k, v in ev.data.items() if isinstance(v, str | int | float | bool)}
        self._run = self.tracer.start_span("funcpipe.run", attributes=attrs, start_time=time.time_ns())

    def _run_end(self, ev: Event) -> None:
        now = time.time_ns()
        for call in list(self._calls.values()):  # calls cut short (fail-fast, a signal): close them as such
            self._end_attempt(call, "CANCELLED", now)
            call.span.set_attribute("funcpipe.code", "CANCELLED")
            call.span.end(end_time=now)
        self._calls.clear()
        run = self._run
        if run is None:
            return
        run.set_attribute("funcpipe.status", str(ev.code))
        exit_code = ev.data.get("exit_code")
        if isinstance(exit_code, int):
            run.set_attribute("funcpipe.exit_code", exit_code)
        accounting = ev.data.get("accounting")
        if isinstance(accounting, Mapping):
            for outcome, count in accounting.items():
                if isinstance(count, int):
                    run.set_attribute(f"funcpipe.items.{outcome}", count)
        message = ev.data.get("message")
        if ev.code not in ("ok", None):
            desc = self.redact(message) if isinstance(message, str) else str(ev.code)
            run.set_status(self._trace.Status(self._trace.StatusCode.ERROR, desc))
        run.end(end_time=now)
        self._run = None

    def _call_of(self, ev: Event, began: float = 0.0) -> _Call | None:
        """The span of ``ev``'s call, opened at its first event (``began`` seconds before it)."""
        if not ev.call:
            return None
        call = self._calls.get(ev.call)
        if call is not None:
            return call
        attrs: dict[str, object] = {"funcpipe.stage": ev.stage, "funcpipe.call": ev.call}
        named = self.adapters.get(ev.stage)
        if named is not None:
            attrs["funcpipe.adapter"], attrs["funcpipe.adapter.kind"] = named
        if ev.item_id is not None:
            attrs["funcpipe.item_id"] = ev.item_id
        parent = self._trace.set_span_in_context(self._run) if self._run is not None else None
        span = self.tracer.start_span(
            "funcpipe.call",
            context=parent,
            attributes=attrs,  # type: ignore[arg-type]
            start_time=time.time_ns() - int(began * 1e9),
        )
        call = self._calls[ev.call] = _Call(span, ev.stage)
        return call

    def _call_end(self, ev: Event) -> None:
        call = self._call_of(ev, ev.duration)  # a call that never started (its deadline passed) is one too
        if call is None:
            return
        del self._calls[ev.call]
        now = time.time_ns()
        self._end_attempt(call, "CANCELLED", now)
        call.span.set_attribute("funcpipe.attempts", ev.attempt)
        items = ev.data.get("items")
        if isinstance(items, int):
            call.span.set_attribute("funcpipe.items", items)
        if ev.code is not None:
            call.span.set_attribute("funcpipe.code", ev.code)
            call.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, ev.code))
        call.span.end(end_time=now)

    def _limited(self, ev: Event) -> None:
        if ev.data.get("reason") == "retry_after":
            # A throttled answer pausing the limiter for everyone: a moment of the call, not a wait of its own.
            call = self._call_of(ev)
            if call is not None:
                call.span.add_event("limiter paused", {"funcpipe.pause_s": ev.duration})
            return
        call = self._call_of(ev, ev.duration)
        if call is not None:
            call.limiter_wait += ev.duration

    def _attempt(self, ev: Event) -> None:
        call = self._call_of(ev)
        if call is None:
            return
        now = time.time_ns()
        self._end_attempt(call, "CANCELLED", now)
        attrs: dict[str, object] = {
            "funcpipe.stage": ev.stage,
            "funcpipe.attempt": ev.attempt,
            "funcpipe.limiter.wait_s": call.limiter_wait,
        }
        named = self.adapters.get(ev.stage)
        if named is not None:
            attrs["funcpipe.adapter.kind"] = named[1]
        state = self._breakers.get(ev.stage)
        if state is not None:
            attrs["funcpipe.breaker.state"] = state
        call.limiter_wait = 0.0
        parent = self._trace.set_span_in_context(call.span)
        call.attempt = self.tracer.start_span(
            "funcpipe.attempt",
            context=parent,
            attributes=attrs,  # type: ignore[arg-type]
            start_time=now,
        )

    def _outcome(self, ev: Event) -> None:
        call = self._call_of(ev)
        if call is None:
            return
        now = time.time_ns()
        if call.attempt is None:
            # Refused before it started (an open breaker): an attempt of no length, still one of the call's.
            self._attempt(ev)
        span = call.attempt
        if span is None:
            return
        if ev.kind == "failure":
            span.set_attribute("funcpipe.code", str(ev.code))
            span.set_attribute("error.type", str(ev.code))
            status = ev.data.get("status")
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            hint = ev.data.get("retry_after")
            if isinstance(hint, int | float):
                span.set_attribute("funcpipe.retry_after_s", float(hint))
            if ev.data.get("gate") == "breaker":
                span.set_attribute("funcpipe.breaker.state", "open")
            message = ev.data.get("message")
            desc = f"{ev.code}: {self.redact(message)}" if isinstance(message, str) else str(ev.code)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, desc))
        span.end(end_time=now)
        call.attempt = None

    def _wait(self, ev: Event) -> None:
        call = self._call_of(ev)
        if call is not None:
            attrs: dict[str, str | float] = {"funcpipe.wait_s": ev.duration}
            reason = ev.data.get("reason")
            if isinstance(reason, str):
                attrs["funcpipe.reason"] = reason
            code = ev.data.get("code")
            if isinstance(code, str):
                attrs["funcpipe.code"] = code
            call.span.add_event("wait", attrs)

    def _breaker(self, ev: Event) -> None:
        old = self._breakers.get(ev.stage, "closed")
        self._breakers[ev.stage] = str(ev.code)
        if self._run is not None:
            self._run.add_event(
                "breaker",
                {"funcpipe.stage": ev.stage, "funcpipe.breaker.from": old, "funcpipe.breaker.to": str(ev.code)},
            )

    def _split(self, ev: Event) -> None:
        if self._run is not None:
            items = ev.data.get("items")
            self._run.add_event(
                "batch split",
                {"funcpipe.stage": ev.stage, "funcpipe.items": items if isinstance(items, int) else 0},
            )

    def _end_attempt(self, call: _Call, code: str, now: int) -> None:
        if call.attempt is not None:
            call.attempt.set_attribute("funcpipe.code", code)
            call.attempt.end(end_time=now)
            call.attempt = None

    _HANDLERS: ClassVar[dict[str, Callable[[RunTracer, Event], None]]] = {
        "run_start": _run_start,
        "run_end": _run_end,
        "call_end": _call_end,
        "limited": _limited,
        "attempt": _attempt,
        "success": _outcome,
        "failure": _outcome,
        "wait": _wait,
        "breaker": _breaker,
        "split": _split,
    }

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is left: flush the spans, and shut the provider down if it is the run's own."""
        flush = getattr(self.provider, "force_flush", None)
        if callable(flush):
            flush()
        if self.owned:
            shutdown = getattr(self.provider, "shutdown", None)
            if callable(shutdown):
                shutdown()
