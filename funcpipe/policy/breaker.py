"""A circuit breaker that lets only ``probes`` calls test a recovering service.

States:

- **closed**: calls pass. It opens after ``failures`` consecutive failures, or
  when, over the sliding ``window``, at least ``min_calls`` calls were made
  and the failure ratio reaches ``ratio``.
- **open**: calls fail fast with ``CIRCUIT_OPEN`` (``meta.retry_after`` says
  when probing starts) until ``reset_after`` has passed.
- **half-open**: at most ``probes`` calls are in flight at once; the others
  still fail fast. A probe's success closes the breaker, its failure reopens it.

A failure is an error whose code is listed in the breaker's ``on``; any other
outcome, including errors such as ``RATE_LIMIT`` or ``BAD_INPUT``, shows the
service answering and counts as a success. A cancelled call counts as
nothing. Outcomes of calls admitted before the latest transition are
ignored, so a slow call cannot undo a newer state.

The window is kept as `WINDOW_BUCKETS` counters of ``window / WINDOW_BUCKETS``
seconds each, so its memory is fixed whatever the call rate. A call counts
from the moment it is recorded until its bucket leaves the window: for at
most ``window``, and for more than ``window - window / WINDOW_BUCKETS``.

Admission and recording are synchronous: nothing is held across the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.models import CircuitBreaker

__all__ = ["WINDOW_BUCKETS", "Breaker", "BreakerState", "Ticket", "TransitionListener"]

WINDOW_BUCKETS = 20
"""How many counters the sliding window is kept in (its resolution is ``window / WINDOW_BUCKETS``)."""

BreakerState = Literal["closed", "open", "half_open"]

TransitionListener = Callable[[BreakerState, BreakerState, str | None], None]
"""Called with ``(old state, new state, item id)`` on every transition."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one call, to hand back to `Breaker.record` or `Breaker.release`.

    Attributes:
        generation: the breaker's generation when the call was admitted.
        probe: whether the call is a half-open probe.
    """

    generation: int
    probe: bool


def _ignore(old: BreakerState, new: BreakerState, item_id: str | None) -> None:
    """Discard a transition."""


class Breaker:
    """Per-run state of one `CircuitBreaker` value.

    Args:
        config: the breaker's thresholds.
        clock: the clock it reads.
        on_transition: told about every state change.
    """

    def __init__(
        self,
        config: CircuitBreaker,
        clock: Clock = REAL_CLOCK,
        on_transition: TransitionListener = _ignore,
    ) -> None:
        self.config = config
        self.clock = clock
        self._on_transition = on_transition
        self._state: BreakerState = "closed"
        self._generation = 0
        self._on = frozenset(config.on)
        self._consecutive = 0
        # The window's buckets, a ring indexed by ``int(now // width) % WINDOW_BUCKETS``;
        # ``_newest`` is the absolute index of the latest bucket written, if any.
        self._width = config.window / WINDOW_BUCKETS
        self._calls = [0] * WINDOW_BUCKETS
        self._failed = [0] * WINDOW_BUCKETS
        self._newest: int | None = None
        self._window_calls = 0
        self._window_failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._ticket = Ticket(0, probe=False)  # closed-state admissions share one immutable ticket

    def __repr__(self) -> str:
        return f"Breaker(state={self._state!r}, {self.config!r})"

    @property
    def state(self) -> BreakerState:
        """The state as last moved (an open breaker turns half-open at its next admission)."""
        return self._state

    def reset_at(self) -> float | None:
        """When an open breaker starts admitting probes; ``None`` unless it is open."""
        return self._opened_at + self.config.reset_after if self._state == "open" else None

    def refusal(self) -> ErrInfo | None:
        """The ``CIRCUIT_OPEN`` error a call would fail fast with now, if any; admits nothing."""
        if self._state == "open":
            wait = self._opened_at + self.config.reset_after - self.clock.now()
            return _open(wait) if wait > 0 else None
        if self._state == "half_open" and self._probes >= self.config.probes:
            return _busy(self._probes)
        return None

    def admit(self, item_id: str | None = None) -> Ticket | ErrInfo:
        """Admit a call now, or say why not.

        Returns:
            A `Ticket` for the call, or a ``CIRCUIT_OPEN`` error to fail fast with.
        """
        if self._state == "open":
            wait = self._opened_at + self.config.reset_after - self.clock.now()
            if wait > 0:
                return _open(wait)
            self._move("half_open", item_id)
        if self._state == "half_open":
            if self._probes >= self.config.probes:
                return _busy(self._probes)
            self._probes += 1
            return Ticket(self._generation, probe=True)
        return self._ticket

    def record(self, ticket: Ticket, code: str | None, item_id: str | None = None) -> None:
        """Record the outcome of an admitted call: ``code`` is ``None`` on success."""
        if ticket.generation != self._generation:
            return
        failed = code is not None and code in self._on
        if ticket.probe:
            self._probes -= 1
            self._move("open" if failed else "closed", item_id)
            return
        self._count(failed)
        self._consecutive = self._consecutive + 1 if failed else 0
        calls = self._window_calls
        config = self.config
        if self._consecutive >= config.failures or (
            calls >= config.min_calls and self._window_failures / calls >= config.ratio
        ):
            self._move("open", item_id)

    def release(self, ticket: Ticket) -> None:
        """Hand back a ticket whose call never finished (cancelled): not a failure."""
        if ticket.probe and ticket.generation == self._generation:
            self._probes -= 1

    def _count(self, failed: bool) -> None:
        """Add one outcome to the window's current bucket, dropping the buckets that left it."""
        if self._width <= 0:
            return  # an empty window holds no call
        index = int(self.clock.now() // self._width)
        newest = self._newest
        calls, fails = self._calls, self._failed
        if newest is None or index > newest:
            # Buckets between the newest and this one have left the window (all of them after a long gap).
            stale = (
                range(WINDOW_BUCKETS)
                if newest is None or index - newest >= WINDOW_BUCKETS
                else range(newest + 1, index + 1)
            )
            for i in stale:
                slot = i % WINDOW_BUCKETS
                self._window_calls -= calls[slot]
                self._window_failures -= fails[slot]
                calls[slot] = fails[slot] = 0
            self._newest = index
        else:
            index = newest  # a clock never goes back; if one did, count the call as the newest
        slot = index % WINDOW_BUCKETS
        calls[slot] += 1
        fails[slot] += failed
        self._window_calls += 1
        self._window_failures += failed

    def _clear_window(self) -> None:
        self._calls = [0] * WINDOW_BUCKETS
        self._failed = [0] * WINDOW_BUCKETS
        self._newest = None
        self._window_calls = self._window_failures = 0

    def _move(self, new: BreakerState, item_id: str | None) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._ticket = Ticket(self._generation, probe=False)
        self._probes = 0
        if new == "open":
            self._opened_at = self.clock.now()
        else:
            self._consecutive = 0
            self._clear_window()
        self._on_transition(old, new, item_id)


def _open(wait: float) -> ErrInfo:
    return ErrInfo(
        ErrCode.CIRCUIT_OPEN,
        f"circuit open: probing resumes in {wait:.3f}s",
        {"retry_after": wait, "breaker": "open"},
    )


def _busy(probes: int) -> ErrInfo:
    return ErrInfo(
        ErrCode.CIRCUIT_OPEN,
        f"circuit half-open: {probes} probe(s) already in flight",
        {"breaker": "half_open"},
    )
