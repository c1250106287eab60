"""Machine-readable logs: one JSON object per event, per line."""

from __future__ import annotations

import json
from typing import IO

from funcpipe.core import Item
from funcpipe.policy.events import Event


class JsonEventLog:
    """An event sink writing ``{"event": kind, ...}`` lines (no item payloads, no secrets)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, ev: Event) -> None:
        data = {k: v for k, v in ev.data.items() if not isinstance(v, Item) and isinstance(v, str | int | float | bool)}
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
        self.stream.write(json.dumps({"event": "notice", "message": message}) + "\n")
        self.stream.flush()
