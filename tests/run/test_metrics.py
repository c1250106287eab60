"""Prometheus metrics of a run: fed from events, read from the live counters, served and written.

The scrape of a real run mid-flight is in tests/e2e/test_observability.py;
here `RunMetrics` is fed events one by one and the exposition is parsed,
the server is scraped over a real socket, and runs from the Python API
write their files.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import funcpipe
from funcpipe.errors import RunError
from funcpipe.policy.events import Event
from funcpipe.run.accounting import StageStats
from funcpipe.run.metrics import MetricsServer, RunMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float | None:
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def metrics(stats: dict[str, StageStats] | None = None) -> RunMetrics:
    return RunMetrics(
        "p",
        {"load": "source.files", "embed": "embed"},
        {"embed": ("embedder", "openai")},
        stats if stats is not None else {"load": StageStats(), "embed": StageStats()},
        frozenset({"embed"}),
    )


def test_latency_requests_and_in_flight_follow_the_attempt_events() -> None:
    m = metrics()
    m(Event("attempt", "embed", attempt=1, call=1))
    m(Event("attempt", "embed", attempt=1, call=2))
    during = parse(m.text())
    assert get(during, "funcpipe_in_flight_calls", stage="embed", adapter="embedder", kind="openai") == 2
    m(Event("success", "embed", attempt=1, duration=0.3, call=1))
    m(Event("failure", "embed", attempt=1, duration=0.02, code="RATE_LIMIT", call=2))
    after = parse(m.text())
    assert get(after, "funcpipe_in_flight_calls", stage="embed") == 0
    assert get(after, "funcpipe_requests_total", stage="embed", code="OK") == 1
    assert get(after, "funcpipe_requests_total", stage="embed", code="RATE_LIMIT") == 1
    assert get(after, "funcpipe_request_duration_seconds_count", stage="embed") == 2
    assert get(after, "funcpipe_request_duration_seconds_bucket", stage="embed", le="0.025") == 1
    assert get(after, "funcpipe_request_duration_seconds_bucket", stage="embed", le="0.25") == 1
    assert get(after, "funcpipe_request_duration_seconds_bucket", stage="embed", le="0.5") == 2


def test_a_breaker_refusal_counts_a_request_outcome_but_no_latency_or_in_flight() -> None:
    m = metrics()
    m(Event("failure", "embed", attempt=1, code="CIRCUIT_OPEN", data={"gate": "breaker"}))
    s = parse(m.text())
    assert get(s, "funcpipe_requests_total", stage="embed", code="CIRCUIT_OPEN") == 1
    assert get(s, "funcpipe_request_duration_seconds_count", stage="embed") is None
    assert get(s, "funcpipe_in_flight_calls", stage="embed") is None


def test_retries_are_counted_by_the_code_that_caused_them() -> None:
    m = metrics()
    for code in ("RATE_LIMIT", "RATE_LIMIT", "TRANSIENT"):
        m(Event("wait", "embed", attempt=1, duration=0.5, data={"reason": "backoff", "code": code}))
    m(Event("wait", "embed", attempt=1, duration=3.0, data={"reason": "circuit_open"}))  # not a retry
    s = parse(m.text())
    assert get(s, "funcpipe_retries_total", stage="embed", code="RATE_LIMIT") == 2
    assert get(s, "funcpipe_retries_total", stage="embed", code="TRANSIENT") == 1
    assert sum(v for (n, _), v in s.items() if n == "funcpipe_retries_total") == 3


def test_limiter_waits_add_up_and_retry_after_pauses_are_counted_apart() -> None:
    m = metrics()
    m(Event("limited", "embed", duration=0.25))
    m(Event("limited", "embed", duration=0.5))
    m(Event("limited", "embed", duration=2.0, data={"reason": "retry_after"}))
    s = parse(m.text())
    assert get(s, "funcpipe_limiter_wait_seconds_total", stage="embed") == 0.75
    assert get(s, "funcpipe_limiter_pauses_total", stage="embed") == 1


def test_breaker_state_is_one_hot_and_starts_closed() -> None:
    m = metrics()
    states = {st: get(parse(m.text()), "funcpipe_breaker_state", stage="embed", state=st) for st in ("closed", "open")}
    assert states == {"closed": 1, "open": 0}
    m(Event("breaker", "embed", code="open", data={"from": "closed"}))
    s = parse(m.text())
    assert [get(s, "funcpipe_breaker_state", stage="embed", state=st) for st in ("closed", "half_open", "open")] == [
        0,
        0,
        1,
    ]


def test_stage_item_counters_are_read_from_the_live_counters_at_each_scrape() -> None:
    stats = {"load": StageStats(outputs=3), "embed": StageStats(inputs=3, outputs=1, failed=1, filtered=1)}
    m = metrics(stats)
    first = parse(m.text())
    assert get(first, "funcpipe_stage_items_out_total", stage="load", use="source.files") == 3
    assert get(first, "funcpipe_stage_items_failed_total", stage="embed") == 1
    stats["embed"].outputs += 5
    assert get(parse(m.text()), "funcpipe_stage_items_out_total", stage="embed") == 6


def test_the_run_end_sets_exit_code_duration_and_outcomes() -> None:
    m = metrics()
    m(Event("run_start", data={"run_id": "r1", "pipeline": "p", "stages": 2}))
    m(
        Event(
            "run_end",
            code="failed",
            duration=12.5,
            data={"exit_code": 1, "accounting": {"done": 7, "failed": 2, "invariant_holds": True, "invariant": "x"}},
        )
    )
    s = parse(m.text())
    assert get(s, "funcpipe_run_info", run_id="r1") == 1
    assert get(s, "funcpipe_run_exit_code") == 1
    assert get(s, "funcpipe_run_duration_seconds") == 12.5
    assert get(s, "funcpipe_run_items", outcome="done") == 7
    assert get(s, "funcpipe_run_items", outcome="invariant_holds") is None  # outcomes only


def test_each_run_has_its_own_registry() -> None:
    a, b = metrics(), metrics()
    a(Event("attempt", "embed", attempt=1))
    assert get(parse(a.text()), "funcpipe_in_flight_calls", stage="embed") == 1
    assert get(parse(b.text()), "funcpipe_in_flight_calls", stage="embed") is None
    every = {n for (n, _) in parse(a.text())}
    assert all(n.startswith("funcpipe_") for n in every)  # no process or platform collectors


# -- the server ----------------------------------------------------------------------------------


def test_the_server_serves_metrics_on_loopback_at_an_ephemeral_port_until_closed() -> None:
    m = metrics()
    server = MetricsServer(m.registry)
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as answer:
            assert get(parse(answer.read().decode()), "funcpipe_breaker_state", state="closed") == 1
    finally:
        server.close()
    server.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_a_port_in_use_is_a_run_error_that_says_how_to_choose_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RunError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: .*--metrics-port"):
            MetricsServer(metrics().registry, "127.0.0.1", port)


def test_without_the_metrics_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(RunError, match=r"pip install 'funcpipe-runner\[metrics\]'"):
        metrics()


# -- from the Python API ---------------------------------------------------------------------------

SPEC = """\
version: 1
name: counted
stages:
  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}
  - {id: keep, use: filter, with: {fn: "tests.run.user_fns:even_number"}}
  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}
"""


def test_a_run_writes_its_metrics_file_atomically_with_the_final_counts(tmp_path: Path) -> None:
    (tmp_path / "counted.yaml").write_text(SPEC, encoding="utf-8")
    rows = "".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(10))
    (tmp_path / "items.jsonl").write_text(rows, encoding="utf-8")
    target = tmp_path / "textfiles" / "counted.prom"
    report = funcpipe.load(tmp_path / "counted.yaml").run(metrics_file=target)
    assert report.exit_code == 0
    s = parse(target.read_text(encoding="utf-8"))
    assert get(s, "funcpipe_stage_items_out_total", stage="load") == 10
    assert get(s, "funcpipe_stage_items_filtered_total", stage="keep") == 5
    assert get(s, "funcpipe_stage_items_out_total", stage="out") == 5
    assert get(s, "funcpipe_run_items", outcome="filtered") == 5
    assert get(s, "funcpipe_run_exit_code") == 0
    assert [p.name for p in target.parent.iterdir()] == ["counted.prom"]


def test_an_unwritable_metrics_file_stops_the_run_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "counted.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "items.jsonl").write_text('{"id": 0, "text": "t"}\n', encoding="utf-8")
    (tmp_path / "blocker").write_text("a file in the way\n")
    with pytest.raises(RunError, match=r"cannot write the metrics file .*--metrics-file"):
        funcpipe.load(tmp_path / "counted.yaml").run(metrics_file=tmp_path / "blocker" / "m.prom")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_run_from_the_api_serves_metrics_while_it_goes_and_stops_after(tmp_path: Path) -> None:
    (tmp_path / "counted.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "items.jsonl").write_text('{"id": 0, "text": "t0"}\n', encoding="utf-8")
    said: list[str] = []
    report = funcpipe.load(tmp_path / "counted.yaml").run(metrics_port=0, notify=said.append)
    assert report.exit_code == 0
    (url,) = [line.removeprefix("metrics: ") for line in said if line.startswith("metrics: http://127.0.0.1:")]
    with pytest.raises(OSError):  # the server lived as long as the run
        urllib.request.urlopen(url, timeout=2)
