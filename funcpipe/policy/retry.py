"""Retry as data: the wait schedule of a `Retry` value, as pure functions.

The schedule is the sequence of waits before attempts 2, 3, ... Each wait
starts from the backoff's base:

- ``exponential``: ``initial * factor**(n-1)``, capped by ``max``;
- ``fixed``: ``initial``;
- ``immediate``: ``0``;

and the jitter then randomises it with the caller's seeded RNG:

- ``none``: the base itself;
- ``full``: uniform in ``[0, base]``;
- ``equal``: ``base/2`` plus uniform in ``[0, base/2]``;
- ``decorrelated``: uniform in ``[initial, 3 * previous wait]``, capped by
  ``max`` (AWS's "decorrelated jitter"; the previous wait starts at
  ``initial``). For ``fixed`` the previous wait is always ``initial``, so
  waits vary without growing; ``immediate`` stays 0.

A ``Retry-After`` hint (``meta.retry_after``, seconds) lengthens one wait to
``max(hint, wait)``, still capped by ``max``. No wait exceeds ``max``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice

from funcpipe.core import ErrInfo
from funcpipe.policy.models import Backoff, Retry

__all__ = ["backoff_delays", "delays", "retry_after", "should_retry", "wait_before_retry"]

_DECORRELATED_GROWTH = 3.0


def backoff_delays(backoff: Backoff, jitter: str, rng: random.Random) -> Iterator[float]:
    """Yield the endless schedule of waits for ``backoff`` randomised by ``jitter``.

    Args:
        backoff: the backoff kind and its bounds.
        jitter: ``none``, ``full``, ``equal`` or ``decorrelated``.
        rng: the source of randomness (seed it for a reproducible schedule).

    Raises:
        ValueError: for an unknown jitter.
    """
    if jitter not in ("none", "full", "equal", "decorrelated"):
        raise ValueError(f"unknown jitter {jitter!r}: expected none, full, equal or decorrelated")
    cap = backoff.max
    base = 0.0 if backoff.kind == "immediate" else min(cap, backoff.initial)
    previous = backoff.initial
    while True:
        if jitter == "none":
            yield base
        elif jitter == "full":
            yield rng.uniform(0.0, base)
        elif jitter == "equal":
            yield base / 2 + rng.uniform(0.0, base / 2)
        elif backoff.kind == "immediate":
            yield 0.0
        else:
            wait = min(cap, rng.uniform(backoff.initial, _DECORRELATED_GROWTH * previous))
            if backoff.kind == "exponential":
                previous = wait
            yield wait
        if backoff.kind == "exponential":
            # Grow step by step rather than with ``factor ** n``: capped, it never overflows.
            base = min(cap, base * backoff.factor)


def delays(retry: Retry, rng: random.Random) -> Iterator[float]:
    """Yield the ``max_attempts - 1`` waits of ``retry``'s schedule, in order."""
    return islice(backoff_delays(retry.backoff, retry.jitter, rng), retry.max_attempts - 1)


def retry_after(error: ErrInfo) -> float | None:
    """The error's ``meta.retry_after`` hint in seconds, if it carries a usable one."""
    hint = error.meta.get("retry_after")
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return None
    return float(hint) if hint >= 0 else None


def should_retry(retry: Retry | None, error: ErrInfo, attempt: int) -> bool:
    """Whether attempt ``attempt`` failing with ``error`` earns another attempt.

    Only ``error.code`` is consulted: it must be listed in ``retry.on``, and
    attempts must remain.
    """
    return retry is not None and attempt < retry.max_attempts and error.code in retry.on


def wait_before_retry(retry: Retry, delay: float, error: ErrInfo) -> float:
    """The wait before the next attempt: the schedule's ``delay``, lengthened by a hint.

    Returns ``min(max(hint, delay), backoff.max)`` when ``error`` carries a
    ``retry_after`` hint, else ``delay``.
    """
    hint = retry_after(error)
    if hint is None:
        return delay
    return min(max(hint, delay), retry.backoff.max)
