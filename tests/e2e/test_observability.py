"""One observed run, seen from every side: scraped mid-run, its metrics file, its OTLP traces, its JSON log.

A real ``funcpipe run`` subprocess embeds through a local OpenAI-compatible
server that answers slowly (so the run lasts long enough to be scraped
while it goes) and misbehaves on cue: the first request is throttled with
``429`` and ``Retry-After: 1`` (retried, then answered), the third is
refused with ``401`` (its batch is dead-lettered, not retried). The run
serves ``/metrics`` on an ephemeral port, writes a textfile-collector
file, exports its traces over OTLP/HTTP to a local receiver, and logs JSON
lines to stderr. Each test reads one side of that single run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e._support import env
from tests.fakes import Fault, OpenAIServer
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan

KEY = "sk-observed-5b0c1d2e3f4a5b6c7d8e"
N = 40
BATCH = 4

SPEC = f"""\
version: 1
name: observed
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, base_url: "${{OPENAI_BASE_URL}}"}}
policies:
  api:
    retry: {{max_attempts: 3, backoff: {{kind: fixed, initial: 50ms}}, jitter: none}}
    rate_limit: {{requests: 50, per: 1s}}
    circuit_breaker: {{failures: 100, min_calls: 100}}
    concurrency: 1
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: api, batch: {{size: {BATCH}}}}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}}}
on_error: {{mode: continue}}
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``."""
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


@dataclass
class Observed:
    """What the run showed."""

    code: int
    log: list[dict[str, Any]]
    scrapes: list[Samples]
    scraped_text: list[str]
    metrics_file: Path
    spans: list[ReceivedSpan]
    otlp_bodies: list[bytes]
    report: dict[str, Any] = field(default_factory=dict)


def _clean_env(**variables: str) -> dict[str, str]:
    base = {k: v for k, v in env().items() if not k.startswith("OTEL_")}
    return {**base, **variables}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    root = tmp_path_factory.mktemp("observed")
    (root / "observed.yaml").write_text(SPEC, encoding="utf-8")
    with (root / "items.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(N):
            fh.write(json.dumps({"text": f"document number {i} about observability"}) + "\n")
    stderr = root / "stderr.log"
    with (
        OpenAIServer(api_key=KEY, dim=1536, latency=0.15) as server,
        OtlpReceiver() as receiver,
    ):
        server.script(Fault.rate_limit("1"), Fault.slow(0.0), Fault.auth())
        environ = _clean_env(
            OPENAI_BASE_URL=server.url,
            OPENAI_API_KEY=KEY,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        with stderr.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "funcpipe",
                    "run",
                    str(root / "observed.yaml"),
                    "--log-format",
                    "json",
                    "--metrics-port",
                    "0",
                    "--metrics-file",
                    str(root / "metrics" / "observed.prom"),
                    "--trace",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=environ,
                cwd=root,
            )
        try:
            scraped = _scrape_while_running(proc, stderr)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = [json.loads(line) for line in stderr.read_text(encoding="utf-8").splitlines()]
        yield Observed(
            code=code,
            log=log,
            scrapes=[parse(t) for t in scraped],
            scraped_text=scraped,
            metrics_file=root / "metrics" / "observed.prom",
            spans=list(receiver.spans),
            otlp_bodies=list(receiver.bodies),
            report=log[-1] if log else {},
        )


def _scrape_while_running(proc: subprocess.Popen[bytes], stderr: Path) -> list[str]:
    """Find the metrics address in the log, then scrape it every 50 ms until the run ends."""
    url = None
    deadline = time.monotonic() + 60
    while url is None:
        assert proc.poll() is None, stderr.read_text(encoding="utf-8")
        assert time.monotonic() < deadline, "no metrics address was logged"
        m = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", stderr.read_text(encoding="utf-8"))
        url = m.group(1) if m else None
        time.sleep(0.02)
    scraped = []
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                scraped.append(answer.read().decode("utf-8"))
        except OSError:
            break  # the run ended between the check and the scrape
        time.sleep(0.05)
    return scraped


# -- the run ---------------------------------------------------------------------------------


def test_the_run_ends_with_the_refused_batch_failed_and_the_rest_done(observed: Observed) -> None:
    assert observed.code == 1, observed.log[-3:]
    assert observed.report["event"] == "report"
    assert observed.report["accounting"]["done"] == N - BATCH
    assert observed.report["accounting"]["failed"] == BATCH


# -- metrics, scraped while the run goes ---------------------------------------------------------


def test_scraped_mid_run_the_per_stage_counters_rise(observed: Observed) -> None:
    out = [value(s, "funcpipe_stage_items_out_total", stage="embed") or 0.0 for s in observed.scrapes]
    during = sorted({v for v in out if 0 < v < N - BATCH})
    assert len(during) >= 2, out  # seen at several points between start and end
    assert out == sorted(out)  # counters never go down
    inputs = [value(s, "funcpipe_stage_items_in_total", stage="out") or 0.0 for s in observed.scrapes]
    assert inputs == sorted(inputs) and max(inputs) > 0


def test_scraped_mid_run_calls_are_in_flight_under_a_closed_breaker(observed: Observed) -> None:
    in_flight = [value(s, "funcpipe_in_flight_calls", stage="embed") for s in observed.scrapes]
    assert 1.0 in in_flight  # concurrency 1: one call at a time, seen under way
    assert all(v in (None, 0.0, 1.0) for v in in_flight), in_flight
    assert all(value(s, "funcpipe_breaker_state", stage="embed", state="closed") == 1.0 for s in observed.scrapes)


def test_scrapes_are_the_run_s_own_registry(observed: Observed) -> None:
    # A private registry: no process or platform collectors of a global one.
    names = {name for s in observed.scrapes for (name, _) in s}
    assert names and all(n.startswith("funcpipe_") for n in names), sorted(names)


# -- the metrics file --------------------------------------------------------------------------


def test_metrics_file_holds_the_final_counts(observed: Observed) -> None:
    text = observed.metrics_file.read_text(encoding="utf-8")
    s = parse(text)
    assert value(s, "funcpipe_stage_items_out_total", stage="embed") == N - BATCH
    assert value(s, "funcpipe_stage_items_failed_total", stage="embed") == BATCH
    assert value(s, "funcpipe_stage_items_in_total", stage="embed") == N
    assert value(s, "funcpipe_stage_items_out_total", stage="out") == N - BATCH
    assert value(s, "funcpipe_dead_letters_total", stage="embed", code="AUTH") == BATCH
    assert value(s, "funcpipe_run_exit_code") == 1
    assert value(s, "funcpipe_run_items", outcome="done") == N - BATCH
    assert value(s, "funcpipe_run_items", outcome="failed") == BATCH
    assert value(s, "funcpipe_in_flight_calls", stage="embed") == 0


def test_metrics_file_counts_requests_retries_and_limiter_pauses_by_code(observed: Observed) -> None:
    s = parse(observed.metrics_file.read_text(encoding="utf-8"))
    calls = {"stage": "embed", "adapter": "embedder", "kind": "openai"}
    batches = N // BATCH
    assert value(s, "funcpipe_requests_total", code="RATE_LIMIT", **calls) == 1
    assert value(s, "funcpipe_requests_total", code="AUTH", **calls) == 1
    assert value(s, "funcpipe_requests_total", code="OK", **calls) == batches - 1
    assert value(s, "funcpipe_retries_total", code="RATE_LIMIT", **calls) == 1
    assert value(s, "funcpipe_limiter_pauses_total", stage="embed") == 1
    assert value(s, "funcpipe_request_duration_seconds_count", **calls) == batches + 1
    # Every answer took at least the server's 150 ms: none falls in the buckets below it.
    assert value(s, "funcpipe_request_duration_seconds_bucket", le="0.1", **calls) == 0
    limiter_wait = value(s, "funcpipe_limiter_wait_seconds_total", stage="embed")
    assert limiter_wait is not None and limiter_wait >= 0.5  # the 1 s Retry-After pause held the next call


def test_metrics_file_is_written_whole_and_alone(observed: Observed) -> None:
    assert observed.metrics_file.read_text(encoding="utf-8").endswith("\n")
    assert [p.name for p in observed.metrics_file.parent.iterdir()] == ["observed.prom"]  # no temporary left


# -- traces, received over OTLP/HTTP ---------------------------------------------------------------


def _spans(observed: Observed, name: str) -> list[ReceivedSpan]:
    return [s for s in observed.spans if s.name == name]


def test_receiver_gets_one_run_span_with_the_run_s_identity_and_outcome(observed: Observed) -> None:
    (run,) = _spans(observed, "funcpipe.run")
    assert run.parent_id == ""
    assert run.attributes["funcpipe.run_id"] == observed.report["run_id"]
    assert run.attributes["funcpipe.pipeline"] == "observed"
    assert run.attributes["funcpipe.status"] == "failed"
    assert run.attributes["funcpipe.exit_code"] == 1
    assert run.attributes["funcpipe.items.done"] == N - BATCH
    assert run.resource["service.name"] == "funcpipe"
    assert {s.trace_id for s in observed.spans} == {run.trace_id}


def test_each_stage_call_is_a_span_under_the_run_with_its_stage_adapter_and_items(observed: Observed) -> None:
    (run,) = _spans(observed, "funcpipe.run")
    calls = [c for c in _spans(observed, "funcpipe.call") if c.attributes["funcpipe.stage"] == "embed"]
    assert len(calls) == N // BATCH
    for call in calls:
        assert call.parent_id == run.span_id
        assert call.attributes["funcpipe.adapter"] == "embedder"
        assert call.attributes["funcpipe.adapter.kind"] == "openai"
        assert call.attributes["funcpipe.items"] == BATCH
    codes = sorted(str(c.attributes.get("funcpipe.code", "")) for c in calls)
    assert codes == ["", "", "", "", "", "", "", "", "", "AUTH"]


def test_each_attempt_is_a_span_under_its_call_with_code_status_retry_after_and_waits(observed: Observed) -> None:
    calls = {c.span_id: c for c in _spans(observed, "funcpipe.call")}
    attempts = [a for a in _spans(observed, "funcpipe.attempt") if a.attributes["funcpipe.stage"] == "embed"]
    assert all(a.parent_id in calls for a in attempts)
    assert len(attempts) == N // BATCH + 1
    for a in attempts:
        assert a.attributes["funcpipe.adapter.kind"] == "openai"
        assert a.attributes["funcpipe.breaker.state"] == "closed"
        assert isinstance(a.attributes["funcpipe.limiter.wait_s"], float)
    (throttled,) = [a for a in attempts if a.attributes.get("funcpipe.code") == "RATE_LIMIT"]
    assert throttled.attributes["http.response.status_code"] == 429
    assert throttled.attributes["funcpipe.retry_after_s"] == 1.0
    assert throttled.status == 2 and throttled.status_message.startswith("RATE_LIMIT: ")
    retried = [a for a in attempts if a.parent_id == throttled.parent_id]
    assert sorted(a.attributes["funcpipe.attempt"] for a in retried) == [1, 2]
    (second,) = [a for a in retried if a.attributes["funcpipe.attempt"] == 2]
    # The back-off is a span event of the call; the second attempt started after the 1 s hint.
    assert "wait" in calls[throttled.parent_id].events
    assert second.start_ns - throttled.end_ns >= 0.9e9
    (refused,) = [a for a in attempts if a.attributes.get("funcpipe.code") == "AUTH"]
    assert refused.attributes["http.response.status_code"] == 401
    assert "funcpipe.retry_after_s" not in refused.attributes


def test_a_call_span_lasts_from_its_first_attempt_to_its_last(observed: Observed) -> None:
    calls = {c.span_id: c for c in _spans(observed, "funcpipe.call")}
    for a in _spans(observed, "funcpipe.attempt"):
        call = calls[a.parent_id]
        assert call.start_ns <= a.start_ns <= a.end_ns <= call.end_ns


# -- the JSON log ------------------------------------------------------------------------------------

CORE = {"time", "level", "run_id", "pipeline", "stage", "event", "message"}


def test_every_log_line_parses_and_has_the_core_fields(observed: Observed) -> None:
    run_id = observed.report["run_id"]
    for line in observed.log:
        assert set(line) >= CORE, line
        when = datetime.fromisoformat(line["time"])
        assert when.tzinfo is not None and when.utcoffset() == UTC.utcoffset(None), line["time"]
        assert line["level"] in ("debug", "info", "warning", "error")
        assert line["run_id"] == run_id
        assert line["pipeline"] == "observed"
        assert isinstance(line["message"], str) and line["message"]


def test_the_log_starts_with_run_start_and_ends_with_run_end_then_the_report(observed: Observed) -> None:
    # Status lines (the metrics address) may come first: the server is up before the run starts;
    # heartbeats come at their own pace.
    events = [line["event"] for line in observed.log if line["event"] not in ("notice", "progress")]
    assert events[0] == "run_start"
    assert events[-2:] == ["run_end", "report"]
    assert events.count("run_start") == events.count("run_end") == 1
    end = next(line for line in observed.log if line["event"] == "run_end")
    assert end["code"] == "failed" and end["level"] == "error"
    assert end["accounting"]["done"] == N - BATCH


def test_failures_in_the_log_carry_code_message_and_http_status(observed: Observed) -> None:
    (throttled,) = [x for x in observed.log if x["event"] == "failure" and x["code"] == "RATE_LIMIT"]
    assert throttled["http_status"] == 429 and throttled["level"] == "warning" and throttled["stage"] == "embed"
    assert throttled["error"] and "(HTTP 429)" in throttled["message"]
    dead = [x for x in observed.log if x["event"] == "dead_letter"]
    assert len(dead) == BATCH
    for line in dead:
        assert (line["code"], line["http_status"], line["level"], line["stage"]) == ("AUTH", 401, "error", "embed")
        assert line["error"] in line["message"]


def test_the_metrics_address_is_a_notice_line(observed: Observed) -> None:
    notices = [x for x in observed.log if x["event"] == "notice" and x["message"].startswith("metrics: ")]
    assert len(notices) == 1 and notices[0]["level"] == "info"


# -- nothing secret went out -----------------------------------------------------------------------


def test_the_key_is_in_no_log_line_scrape_metrics_file_or_span(observed: Observed) -> None:
    needle = KEY[-12:]
    assert needle not in json.dumps(observed.log)
    assert all(needle not in text for text in observed.scraped_text)
    assert needle not in observed.metrics_file.read_text(encoding="utf-8")
    assert all(needle.encode() not in body for body in observed.otlp_bodies)
    assert os.environ.get("OPENAI_API_KEY") != KEY  # the key lived only in the run's environment
