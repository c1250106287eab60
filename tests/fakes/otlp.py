"""A local OTLP/HTTP trace receiver: what an OpenTelemetry collector's ``/v1/traces`` does, on 127.0.0.1.

It decodes each ``ExportTraceServiceRequest`` (protobuf, gzip or not) with
``opentelemetry-proto`` and keeps every span as a plain `ReceivedSpan`::

    with OtlpReceiver() as receiver:
        ... OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint ...
        spans = receiver.spans
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived.

    Attributes:
        name: the span's name.
        span_id: its id, hex.
        parent_id: its parent's id, hex ("" for a root).
        trace_id: its trace's id, hex.
        attributes: its attributes, as Python values.
        status: its status code (0 unset, 1 ok, 2 error).
        status_message: its status description.
        events: the names of its span events.
        resource: the resource attributes of its batch.
        start_ns: start time, Unix nanoseconds.
        end_ns: end time, Unix nanoseconds.
    """

    name: str
    span_id: str
    parent_id: str
    trace_id: str
    attributes: dict[str, object]
    status: int
    status_message: str
    events: tuple[str, ...]
    resource: dict[str, object] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [_value(v) for v in value.values]
    return value


def _attributes(kvs: object) -> dict[str, object]:
    return {kv.key: _value(kv.value) for kv in kvs}  # type: ignore[attr-defined]


class OtlpReceiver:
    """Receives OTLP/HTTP trace exports on 127.0.0.1 at an ephemeral port.

    Attributes:
        spans: every span received, in arrival order.
        bodies: every raw request body (decompressed), to search for what must not be there.
        requests: the number of export requests.
    """

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.bodies: list[bytes] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to give ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _receive(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        got = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        ReceivedSpan(
                            name=s.name,
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            trace_id=s.trace_id.hex(),
                            attributes=_attributes(s.attributes),
                            status=int(s.status.code),
                            status_message=s.status.message,
                            events=tuple(e.name for e in s.events),
                            resource=resource,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            self.spans.extend(got)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._receive(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads what was received, not the access log."""

        return Handler
