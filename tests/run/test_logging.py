"""JSON logs: every line one object with time, level, run id, pipeline, stage, event and message.

Lines are checked as a log pipeline reads them: parsed, their fields
present and typed, their timestamps ISO 8601 in UTC. A property test
holds every event kind to it, with secrets in any text redacted. Spec
and run errors under ``--log-format json`` are checked on real
subprocesses.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.errors import RunError
from funcpipe.policy.events import Event, EventKind
from funcpipe.run.logging import JsonEventLog, error_event, event_message, timestamp
from funcpipe.run.redact import Redactor
from tests.e2e._support import env

CORE = {"time", "level", "run_id", "pipeline", "stage", "event", "message"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
SECRET = "sk-logged-9f8e7d6c5b4a"
KINDS: tuple[str, ...] = get_args(EventKind)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


def assert_core(line: dict[str, Any]) -> None:
    assert set(line) >= CORE, line
    assert TIME.match(line["time"]), line["time"]
    assert datetime.fromisoformat(line["time"]).utcoffset() == UTC.utcoffset(None)
    assert line["level"] in ("debug", "info", "warning", "error")
    assert isinstance(line["message"], str) and line["message"]


def test_timestamps_are_utc_to_the_millisecond() -> None:
    assert timestamp(datetime(2026, 12, 6, 2, 55, 1, 123456, tzinfo=UTC)) == "2026-12-06T02:55:01.123Z"


texts = st.text(min_size=0, max_size=20) | st.just(SECRET) | st.just(f"token {SECRET} refused")
values = st.one_of(texts, st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(KINDS),
    stage=st.sampled_from(["", "embed", "store"]),
    code=st.none() | st.sampled_from(["RATE_LIMIT", "AUTH", "open", "ok", "failed"]),
    data=st.dictionaries(
        st.sampled_from(["message", "status", "reason", "items", "key", "from", "gate", "retry_after", "run_id"]),
        values,
        max_size=5,
    ),
)
def test_every_event_is_one_json_line_with_the_core_fields_and_no_secret(
    kind: str, stage: str, code: str | None, data: dict[str, object]
) -> None:
    out = io.StringIO()
    log = JsonEventLog(out, redact=Redactor([SECRET]), run_id="r-1", pipeline="p")
    log(Event(kind, stage, "item-1", 2, 0.5, code, data=data))  # type: ignore[arg-type]
    (line,) = lines(out)
    assert_core(line)
    assert (line["run_id"], line["pipeline"], line["event"]) == ("r-1", "p", kind)
    assert line["stage"] == (stage or None)
    assert SECRET not in out.getvalue()


def test_a_failure_line_carries_code_error_and_http_status_with_the_secret_redacted() -> None:
    out = io.StringIO()
    log = JsonEventLog(out, redact=Redactor([SECRET]), run_id="r-1", pipeline="p")
    log(
        Event(
            "failure",
            "embed",
            "i",
            1,
            0.2,
            "AUTH",
            data={"message": f"openai answered 401: key {SECRET} rejected", "status": 401},
        )
    )
    (line,) = lines(out)
    assert line["level"] == "warning"
    assert (line["code"], line["http_status"]) == ("AUTH", 401)
    assert line["error"] == "openai answered 401: key [REDACTED] rejected"
    assert line["message"] == "embed: attempt 1 failed: AUTH: openai answered 401: key [REDACTED] rejected (HTTP 401)"


def test_the_run_id_and_pipeline_come_from_run_start_when_not_given() -> None:
    out = io.StringIO()
    log = JsonEventLog(out)
    log.notice("before the run")
    log(Event("run_start", data={"run_id": "r-9", "pipeline": "rag", "stages": 3}))
    log(Event("attempt", "embed", attempt=1))
    first, start, attempt = lines(out)
    assert (first["run_id"], first["pipeline"], first["event"]) == (None, None, "notice")
    assert (start["run_id"], start["pipeline"], start["message"]) == (
        "r-9",
        "rag",
        "run r-9 of pipeline 'rag' started (3 stages)",
    )
    assert (attempt["run_id"], attempt["pipeline"], attempt["level"]) == ("r-9", "rag", "debug")


def test_levels_say_how_much_an_event_matters() -> None:
    out = io.StringIO()
    log = JsonEventLog(out)
    for ev in (
        Event("success", "s", attempt=1),
        Event("breaker", "s", code="closed"),
        Event("breaker", "s", code="open"),
        Event("wait", "s", attempt=1, duration=0.2),
        Event("dead_letter", "s", code="AUTH", data={"message": "no"}),
        Event("run_end", code="ok", data={"exit_code": 0}),
        Event("run_end", code="failed", data={"exit_code": 1}),
    ):
        log(ev)
    assert [x["level"] for x in lines(out)] == ["debug", "info", "warning", "warning", "error", "info", "error"]


def test_messages_say_what_happened_in_words() -> None:
    assert event_message(Event("wait", "embed", attempt=2, duration=1.5, data={"reason": "backoff"})) == (
        "embed: waiting 1.500s before attempt 3 (backoff)"
    )
    assert event_message(Event("limited", "embed", duration=2.0, data={"reason": "retry_after"})) == (
        "embed: rate limiter paused 2.000s as the service asked (Retry-After)"
    )
    assert event_message(Event("call_end", "embed", attempt=3, duration=0.25, code="TIMEOUT", data={"items": 8})) == (
        "embed: call failed with TIMEOUT of 8 item(s) after 3 attempt(s) in 0.250s"
    )
    assert event_message(Event("failure", "embed", attempt=1, code="CIRCUIT_OPEN", data={"gate": "breaker"})) == (
        "embed: attempt 1 refused: the circuit breaker is open: CIRCUIT_OPEN"
    )


def test_a_run_error_is_one_json_line_with_its_exit_code() -> None:
    (line,) = [json.loads(error_event(RunError(f"refused {SECRET}"), Redactor([SECRET]), run_id="r", pipeline="p"))]
    assert_core(line)
    assert (line["event"], line["level"], line["exit_code"]) == ("error", "error", 1)
    assert line["message"] == "refused [REDACTED]"


# -- as the command line writes them -------------------------------------------------------------


def funcpipe_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=cwd,
        check=False,
    )


def test_an_invalid_spec_under_json_logs_is_one_json_line_per_error_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "version: 1\nname: bad\nstages:\n"
        "  - {id: load, use: source.jsonl, with: {path: items.jsonl}}\n"
        "  - {id: out, use: sink.jsonl, with: {pth: out.jsonl}}\n"
        "  - {id: more, use: sink.jsonl, with: {path: more.jsonl}, batch: {size: 0}}\n",
        encoding="utf-8",
    )
    (tmp_path / "items.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    proc = funcpipe_run(str(tmp_path / "bad.yaml"), "--log-format", "json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    errors = [json.loads(x) for x in proc.stderr.splitlines()]
    assert len(errors) >= 2
    for line in errors:
        assert_core(line)
        assert (line["event"], line["level"], line["exit_code"], line["run_id"]) == ("spec_error", "error", 2, None)
        assert line["file"].endswith("bad.yaml") and isinstance(line["line"], int) and isinstance(line["col"], int)
        assert line["message"].startswith(f"{line['file']}:{line['line']}:{line['col']}: ")
    assert {x["line"] for x in errors} >= {5, 6}
    assert any("path" in (x["hint"] or "") or "path" in x["message"] for x in errors if x["line"] == 5)


def test_a_run_that_cannot_start_under_json_logs_is_a_json_error_line_and_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / "keyless.yaml").write_text(
        "version: 1\nname: keyless\n"
        "adapters:\n  embedder: {kind: openai, model: text-embedding-3-small}\n"
        "stages:\n"
        "  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}\n"
        "  - {id: embed, use: embed, adapter: embedder}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n",
        encoding="utf-8",
    )
    (tmp_path / "items.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    proc = funcpipe_run(str(tmp_path / "keyless.yaml"), "--log-format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    parsed = [json.loads(x) for x in proc.stderr.splitlines()]  # every line JSON
    for line in parsed:
        assert_core(line)
    error = parsed[-1]
    assert (error["event"], error["exit_code"], error["pipeline"]) == ("error", 1, "keyless")
    assert "OPENAI_API_KEY" in error["message"]
    # The run started and ended as events, though nothing was done.
    assert [x["event"] for x in parsed[:-1]] == ["run_start", "run_end"]
    assert parsed[1]["code"] == "error" and parsed[1]["run_id"] == error["run_id"]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_session_s_run_id_is_the_one_its_log_lines_and_report_carry(tmp_path: Path) -> None:
    import funcpipe

    (tmp_path / "ids.yaml").write_text(
        "version: 1\nname: ids\nstages:\n"
        "  - {id: load, use: source.jsonl, with: {path: items.jsonl, text_field: text}}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n",
        encoding="utf-8",
    )
    (tmp_path / "items.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    pipeline = funcpipe.load(tmp_path / "ids.yaml")
    session = pipeline.session()
    out = io.StringIO()
    session.attach(JsonEventLog(out, redact=session.redact, run_id=session.run_id, pipeline=pipeline.name))
    report = session.run()
    logged = lines(out)
    assert report.run_id == session.run_id
    assert {x["run_id"] for x in logged} == {session.run_id}
    events = [x["event"] for x in logged]
    assert (events[0], events[-1]) == ("run_start", "run_end")
