"""Traces from the Python API: ``pipeline.run(tracer_provider=...)`` into the SDK's in-memory exporter.

The runs call a local OpenAI-compatible server that fails on cue, so the
spans hold real codes, HTTP statuses and breaker states. The environment
rules (when a run traces unasked, which exporters and protocols) are
checked on `tracing_wanted` and `open_tracer_provider` directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import funcpipe
from funcpipe.errors import RunError
from funcpipe.run.tracing import open_tracer_provider, tracing_wanted
from tests.fakes import Fault, OpenAIServer

KEY = "sk-trace-00112233445566778899"
N = 12

SPEC = """\
version: 1
name: traced
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, base_url: "{url}"}}
policies:
  api:
    circuit_breaker: {{failures: 2, min_calls: 2, reset_after: 1m}}
    concurrency: 1
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: api, batch: {{size: 2}}}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}}}
on_error: {{mode: continue}}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=1536) as s:
        yield s


def project(root: Path, server: OpenAIServer) -> Path:
    (root / "traced.yaml").write_text(SPEC.format(url=server.url), encoding="utf-8")
    (root / "items.jsonl").write_text("".join(f'{{"text": "item {i}"}}\n' for i in range(N)), encoding="utf-8")
    return root / "traced.yaml"


def traced_run(tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> list[ReadableSpan]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    report = funcpipe.load(project(tmp_path, server)).run(tracer_provider=provider, fresh=True)
    assert report.accounting["sources"] == N
    return list(exporter.get_finished_spans())


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_run_traces_into_the_callers_provider_run_call_and_attempt(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reset()
    spans = traced_run(tmp_path, server, monkeypatch)
    (run,) = named(spans, "funcpipe.run")
    calls = [c for c in named(spans, "funcpipe.call") if c.attributes and c.attributes["funcpipe.stage"] == "embed"]
    attempts = [
        a for a in named(spans, "funcpipe.attempt") if a.attributes and a.attributes["funcpipe.stage"] == "embed"
    ]
    assert len(calls) == N // 2 and len(attempts) == N // 2
    by_id = {c.context.span_id: c for c in calls}
    for call in calls:
        assert call.parent is not None and call.parent.span_id == run.context.span_id
        assert call.attributes is not None and call.attributes["funcpipe.items"] == 2
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id in by_id
        assert attempt.attributes is not None and attempt.attributes["funcpipe.breaker.state"] == "closed"
    assert run.status.status_code is StatusCode.UNSET
    assert run.attributes is not None and run.attributes["funcpipe.status"] == "ok"


def test_an_open_breaker_is_a_run_event_and_its_refusals_are_attempts_that_call_nothing(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reset()
    server.script(Fault.server_error(), Fault.server_error())
    spans = traced_run(tmp_path, server, monkeypatch)
    (run,) = named(spans, "funcpipe.run")
    assert [e.name for e in run.events] == ["breaker"]
    assert run.events[0].attributes == {
        "funcpipe.stage": "embed",
        "funcpipe.breaker.from": "closed",
        "funcpipe.breaker.to": "open",
    }
    attempts = [
        a for a in named(spans, "funcpipe.attempt") if a.attributes and a.attributes["funcpipe.stage"] == "embed"
    ]
    codes = [a.attributes["funcpipe.code"] for a in attempts if a.attributes and "funcpipe.code" in a.attributes]
    assert codes.count("TRANSIENT") == 2
    refused = [a for a in attempts if a.attributes and a.attributes.get("funcpipe.code") == "CIRCUIT_OPEN"]
    assert len(refused) == N // 2 - 2
    assert server.count() == 2  # refused attempts called nothing
    for a in refused:
        assert a.attributes is not None and a.attributes["funcpipe.breaker.state"] == "open"
        assert a.status.status_code is StatusCode.ERROR
        assert "http.response.status_code" not in a.attributes
    for a in attempts:
        if a.attributes and a.attributes.get("funcpipe.code") == "TRANSIENT":
            assert a.attributes["http.response.status_code"] == 500
    assert run.status.status_code is StatusCode.ERROR


def test_a_callers_provider_is_flushed_but_left_running(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spec = project(tmp_path, server)
    funcpipe.load(spec).run(tracer_provider=provider, fresh=True)
    funcpipe.load(spec).run(tracer_provider=provider, fresh=True)
    # Two runs, two traces, both received: the provider still works after the first.
    runs = named(list(exporter.get_finished_spans()), "funcpipe.run")
    assert len(runs) == 2 and runs[0].context.trace_id != runs[1].context.trace_id


def test_trace_false_sends_nothing_even_with_a_provider_given(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    funcpipe.load(project(tmp_path, server)).run(tracer_provider=provider, trace=False, fresh=True)
    assert exporter.get_finished_spans() == ()


# -- when and how a run traces ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SERVICE_NAME": "ingest"}, False),
    ],
)
def test_a_run_traces_unasked_only_when_the_environment_names_an_exporter(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing_wanted(environ) is wanted


def test_an_unsupported_exporter_is_a_clear_run_error() -> None:
    with pytest.raises(RunError, match=r"OTEL_TRACES_EXPORTER='zipkin' is not supported: use otlp .* or console"):
        open_tracer_provider({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otlp_over_grpc_is_a_clear_run_error_naming_the_http_port() -> None:
    with pytest.raises(RunError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf .*4318"):
        open_tracer_provider({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_service_name_defaults_to_funcpipe_and_follows_otel_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = open_tracer_provider({"OTEL_TRACES_EXPORTER": "none"})
    assert provider.resource.attributes["service.name"] == "funcpipe"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly-ingest")
    provider = open_tracer_provider({"OTEL_TRACES_EXPORTER": "none"})
    assert provider.resource.attributes["service.name"] == "nightly-ingest"
    provider.shutdown()


def test_without_the_otel_extra_tracing_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(RunError, match=r"pip install 'funcpipe-runner\[otel\]'"):
        open_tracer_provider({"OTEL_TRACES_EXPORTER": "otlp"})
