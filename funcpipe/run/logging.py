"""Machine-readable logs: one JSON object per line, for every event, status line and error.

Every line has the same core fields, so a log pipeline (Loki, Elasticsearch,
CloudWatch) can index it without knowing the event::

    {"time": "2026-12-06T02:55:01.123Z", "level": "warning", "run_id": "...",
     "pipeline": "rag", "stage": "embed", "event": "failure",
     "message": "embed: attempt 1 failed: RATE_LIMIT: ... (HTTP 429)", ...}

- ``time``: when the line was written, ISO 8601 in UTC, to the millisecond;
- ``level``: ``debug`` (attempts, calls, batches), ``info`` (the run's start
  and end, filtered items, notices), ``warning`` (a failed attempt, a wait,
  a breaker opening), ``error`` (an item dead-lettered, a run that failed,
  a spec or run error);
- ``run_id`` and ``pipeline``: null only for an error found before the run
  existed (an invalid spec);
- ``stage``: null for what concerns the whole run;
- ``event``: the event kind (see `funcpipe.policy.events.Event`), or
  ``notice``, ``progress``, ``report``, ``error`` and ``spec_error``;
- ``message``: what happened, in words.

Failures add ``code``, ``error`` (the error's message) and ``http_status``
when the service answered one. Every text passes through the run's
redaction: an event's data may quote user values or an error that quotes
a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO

from funcpipe.core import Item
from funcpipe.errors import FuncpipeError, SpecError, SpecErrors
from funcpipe.policy.events import Event
from funcpipe.run.report import RunReport, accounting_line

__all__ = ["JsonEventLog", "error_event", "event_message", "report_event", "spec_error_events"]

Level = str  # "debug" | "info" | "warning" | "error"


def _keep(text: str) -> str:
    return text


def timestamp(now: datetime | None = None) -> str:
    """``now`` (default: this moment) as ISO 8601 in UTC, to the millisecond: ``2026-12-06T02:55:01.123Z``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _line(
    event: str,
    level: Level,
    message: str,
    *,
    run_id: str | None,
    pipeline: str | None,
    stage: str | None = None,
    fields: Mapping[str, object] | None = None,
) -> str:
    rec = {
        **(fields or {}),
        "time": timestamp(),
        "level": level,
        "run_id": run_id,
        "pipeline": pipeline,
        "stage": stage or None,
        "event": event,
        "message": message,
    }
    # ASCII only: a raw U+0085 or U+2028 in a message would split the line for readers that split on them.
    return json.dumps(rec, sort_keys=True, default=str)


def _level(ev: Event) -> Level:
    kind = ev.kind
    if kind in ("attempt", "success", "batch"):
        return "debug"
    if kind == "call_end":
        return "debug" if ev.code is None else "warning"
    if kind in ("failure", "wait", "limited", "split"):
        return "warning"
    if kind == "breaker":
        return "info" if ev.code == "closed" else "warning"
    if kind == "dead_letter":
        return "error"
    if kind == "run_end":
        return "info" if ev.code == "ok" else "error"
    return "info"


def _short(item_id: str | None) -> str:
    return f" {item_id[:12]}" if item_id else ""


def event_message(ev: Event) -> str:
    """What ``ev`` says, in words (not redacted: the caller redacts)."""
    d = ev.data
    where = f"{ev.stage}: " if ev.stage else ""
    kind = ev.kind
    if kind == "run_start":
        return f"run {d.get('run_id')} of pipeline {d.get('pipeline')!r} started ({d.get('stages')} stages)"
    if kind == "run_end":
        said = f": {d['message']}" if isinstance(d.get("message"), str) else ""
        return f"run ended {ev.code} (exit code {d.get('exit_code')}) after {ev.duration:.2f}s{said}"
    if kind == "call_end":
        n = f"of {d.get('items', 1)} item(s) after {ev.attempt} attempt(s) in {ev.duration:.3f}s"
        return f"{where}call done {n}" if ev.code is None else f"{where}call failed with {ev.code} {n}"
    if kind == "attempt":
        return f"{where}attempt {ev.attempt} of item{_short(ev.item_id)}"
    if kind == "success":
        return f"{where}attempt {ev.attempt} succeeded in {ev.duration:.3f}s"
    if kind in ("failure", "dead_letter"):
        what = f"{where}attempt {ev.attempt} failed" if kind == "failure" else f"{where}item{_short(ev.item_id)} failed"
        if d.get("gate") == "breaker":
            what = f"{where}attempt {ev.attempt} refused: the circuit breaker is open"
        said = f": {ev.code}: {d['message']}" if isinstance(d.get("message"), str) else f": {ev.code}"
        status = f" (HTTP {d['status']})" if isinstance(d.get("status"), int) else ""
        return what + said + status
    if kind == "wait":
        reason = d.get("reason", "backoff")
        return f"{where}waiting {ev.duration:.3f}s before attempt {ev.attempt + 1} ({reason})"
    if kind == "limited":
        if d.get("reason") == "retry_after":
            return f"{where}rate limiter paused {ev.duration:.3f}s as the service asked (Retry-After)"
        return f"{where}waited {ev.duration:.3f}s for the rate limiter"
    if kind == "breaker":
        return f"{where}circuit breaker {d.get('from', '?')} -> {ev.code}"
    if kind == "filtered":
        reason = d.get("reason")
        return f"{where}item{_short(ev.item_id)} filtered" + (f": {reason}" if reason else "")
    if kind == "batch":
        return f"{where}batch of {d.get('items')} item(s) left ({d.get('reason')})"
    if kind == "split":
        return f"{where}batch of {d.get('items')} item(s) failed with {d.get('code')}: split to find the bad item(s)"
    return f"{where}{kind}"


class JsonEventLog:
    """A `funcpipe.Display` writing one JSON line per event and status line (no item payloads, no secrets).

    ``session.attach(JsonEventLog(sys.stderr, redact=session.redact, run_id=session.run_id,
    pipeline=session.pipeline.name))`` sends a run's events and status lines
    here; the run id and pipeline are also taken from the ``run_start`` event
    when not given.

    Args:
        stream: where the lines go (the CLI gives stderr).
        redact: applied to every string written (the run's
            `funcpipe.RunSession.redact`): an event's data may quote user
            values, such as a fairness key or a filter's reason.
        run_id: the run's id, on every line.
        pipeline: the pipeline's name, on every line.
    """

    def __init__(
        self,
        stream: IO[str],
        redact: Callable[[str], str] = _keep,
        *,
        run_id: str | None = None,
        pipeline: str | None = None,
    ) -> None:
        self.stream = stream
        self.redact = redact
        self.run_id = run_id
        self.pipeline = pipeline

    def __call__(self, ev: Event) -> None:
        if ev.kind == "run_start":
            self.run_id = self.run_id or _text(ev.data.get("run_id"))
            self.pipeline = self.pipeline or _text(ev.data.get("pipeline"))
        data = {
            k: self.redact(v) if isinstance(v, str) else v
            for k, v in ev.data.items()
            if not isinstance(v, Item) and isinstance(v, str | int | float | bool) and k not in ("message", "status")
        }
        fields: dict[str, object] = {
            "item_id": ev.item_id,
            "attempt": ev.attempt,
            "duration": round(ev.duration, 6),
            "code": ev.code,
        }
        if ev.call:
            fields["call"] = ev.call
        message = ev.data.get("message")
        if isinstance(message, str) and ev.kind in ("failure", "dead_letter", "run_end"):
            fields["error"] = self.redact(message)
        status = ev.data.get("status")
        if isinstance(status, int):
            fields["http_status"] = status
        accounting = ev.data.get("accounting")
        if isinstance(accounting, Mapping):
            fields["accounting"] = dict(accounting)
        if data:
            fields["data"] = data
        self.stream.write(
            _line(
                ev.kind,
                _level(ev),
                self.redact(event_message(ev)),
                run_id=self.run_id,
                pipeline=self.pipeline,
                stage=ev.stage,
                fields=fields,
            )
            + "\n"
        )
        if ev.kind in ("run_end", "dead_letter"):
            self.stream.flush()

    def notice(self, message: str) -> None:
        """A status line (shutdown progress, the metrics address) as an ``info`` line of event ``notice``."""
        self.stream.write(
            _line("notice", "info", self.redact(message), run_id=self.run_id, pipeline=self.pipeline) + "\n"
        )
        self.stream.flush()

    def progress(self, message: str, stages: Mapping[str, Mapping[str, object]]) -> None:
        """A heartbeat: ``message`` in words and, per stage, its counts (event ``progress``)."""
        self.stream.write(
            _line(
                "progress",
                "info",
                self.redact(message),
                run_id=self.run_id,
                pipeline=self.pipeline,
                fields={"stages": {k: dict(v) for k, v in stages.items()}},
            )
            + "\n"
        )
        self.stream.flush()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def report_event(report: RunReport) -> str:
    """The JSON log's last line: event ``report``, with the whole report as fields.

    It carries what the text summary shows, as data: the accounting, and per
    stage its ``errors`` (per code, the count and the first message). Its
    ``message`` is the run's (why it stopped), else the accounting line.
    """
    fields = report.to_json()
    fields.pop("run_id", None)
    fields.pop("pipeline", None)
    message = report.message or accounting_line(report)
    fields.pop("message", None)
    level = "info" if report.exit_code == 0 else "error"
    return _line("report", level, message, run_id=report.run_id, pipeline=report.pipeline, fields=fields)


def error_event(
    exc: FuncpipeError, redact: Callable[[str], str] = _keep, *, run_id: str | None = None, pipeline: str | None = None
) -> str:
    """A run that could not start, or failed as a whole, as a JSON line (event ``error``, with its exit code)."""
    return _line(
        "error",
        "error",
        redact(str(exc)),
        run_id=run_id,
        pipeline=pipeline,
        fields={"exit_code": exc.exit_code},
    )


def spec_error_events(errors: Sequence[SpecError]) -> list[str]:
    """An invalid spec's located errors, one JSON line each (event ``spec_error``, exit code 2).

    Each line has the error's ``file``, ``line``, ``col``, dotted ``path`` and
    ``hint`` as fields, and the located text as its ``message``.
    """
    flat = [e for err in errors for e in (err.errors if isinstance(err, SpecErrors) else [err])]
    lines = []
    for err in flat:
        fields = err.to_json()
        fields.pop("message", None)
        lines.append(
            _line(
                "spec_error",
                "error",
                str(err),
                run_id=None,
                pipeline=None,
                fields={**fields, "exit_code": SpecError.exit_code},
            )
        )
    return lines
