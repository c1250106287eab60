"""How long a provider asks us to wait: ``Retry-After`` and the providers' own reset headers."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go-style duration such as ``1s``, ``6m0s``, ``20ms`` or ``1h2m3.5s``."""
    text = value.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso_date(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _reference_time(headers: httpx.Headers, now: Callable[[], float]) -> datetime:
    # The server's own Date header, when present, makes an absolute reset time
    # immune to skew between our clock and the provider's.
    date = headers.get("date")
    parsed = _http_date(date) if date else None
    return parsed or datetime.fromtimestamp(now(), tz=UTC)


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _provider_resets(headers: httpx.Headers, ref: datetime) -> float | None:
    """The longest reset among the provider limits that are exhausted (or not stated)."""
    waits: list[float] = []
    # OpenAI: x-ratelimit-reset-requests: "1s", x-ratelimit-reset-tokens: "6m0s".
    for kind in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if reset is None or (remaining is not None and remaining.strip() != "0"):
            continue
        seconds = parse_go_duration(reset)
        if seconds is not None:
            waits.append(seconds)
    # Anthropic: anthropic-ratelimit-requests-reset: RFC 3339 time.
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining")
        if reset is None or (remaining is not None and remaining.strip() != "0"):
            continue
        at = _iso_date(reset)
        if at is not None:
            waits.append((at - ref).total_seconds())
    return max(waits) if waits else None


def parse_retry_after(
    headers: httpx.Headers | Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """How long the server asks us to wait, in seconds, or None if it does not say.

    Reads, in order of precision: ``retry-after-ms`` (OpenAI, Anthropic),
    ``Retry-After`` (seconds or an HTTP date), then the provider's reset
    headers for whichever limit is exhausted (OpenAI ``x-ratelimit-reset-*``,
    Anthropic ``anthropic-ratelimit-*-reset``). Negative waits become 0.

    Args:
        headers: the response headers.
        now: wall-clock time, used only when the response has no ``Date`` header.
    """
    h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(headers)
    wait: float | None = None
    ms = h.get("retry-after-ms")
    if ms is not None and (value := _seconds(ms)) is not None:
        wait = value / 1000.0
    if wait is None and (ra := h.get("retry-after")) is not None:
        wait = _seconds(ra)
        if wait is None and (at := _http_date(ra)) is not None:
            wait = (at - _reference_time(h, now)).total_seconds()
    if wait is None:
        wait = _provider_resets(h, _reference_time(h, now))
    return None if wait is None else max(0.0, wait)
