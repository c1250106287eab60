"""Machine-readable logs: one JSON object per event, per line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO

from funcpipe.core import Item
from funcpipe.policy.events import Event
from funcpipe.run.report import RunReport


def _keep(text: str) -> str:
    return text


class JsonEventLog:
    """An event sink writing ``{"event": kind, ...}`` lines (no item payloads, no secrets).

    A `funcpipe.Display`: ``session.attach(JsonEventLog(sys.stderr, redact=session.redact))``
    sends a run's events and status lines here.

    Args:
        stream: where the lines go (the CLI gives stderr).
        redact: applied to every string written (the run's
            `funcpipe.RunSession.redact`): an event's data may quote user
            values, such as a fairness key or a filter's reason.
    """

    def __init__(self, stream: IO[str], redact: Callable[[str], str] = _keep) -> None:
        self.stream = stream
        self.redact = redact

    def __call__(self, ev: Event) -> None:
        data = {
            k: self.redact(v) if isinstance(v, str) else v
            for k, v in ev.data.items()
            if not isinstance(v, Item) and isinstance(v, str | int | float | bool)
        }
        rec = {
            "event": ev.kind,
            "stage": ev.stage,
            "item_id": ev.item_id,
            "attempt": ev.attempt,
            "duration": round(ev.duration, 6),
            "code": ev.code,
            "at": round(ev.at, 6),
            **({"data": data} if data else {}),
        }
        self.stream.write(json.dumps(rec, sort_keys=True) + "\n")

    def notice(self, message: str) -> None:
        """A status line (e.g. shutdown progress) as ``{"event": "notice", "message": ...}``."""
        self.stream.write(json.dumps({"event": "notice", "message": self.redact(message)}) + "\n")
        self.stream.flush()


def report_event(report: RunReport) -> str:
    """The JSON log's last line: ``{"event": "report", ...}`` with the whole report.

    It carries what the text summary shows, as data: the accounting, and per
    stage its ``errors`` (per code, the count and the first message).
    """
    return json.dumps({"event": "report", **report.to_json()}, sort_keys=True)
