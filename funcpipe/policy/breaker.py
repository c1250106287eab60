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

Admission and recording are synchronous: nothing is held across the call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.models import CircuitBreaker

__all__ = ["Breaker", "BreakerState", "Ticket", "TransitionListener"]

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
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0
        self._opened_at = 0.0
        self._probes = 0

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
        return Ticket(self._generation, probe=False)

    def record(self, ticket: Ticket, code: str | None, item_id: str | None = None) -> None:
        """Record the outcome of an admitted call: ``code`` is ``None`` on success."""
        if ticket.generation != self._generation:
            return
        failed = code is not None and code in self.config.on
        if ticket.probe:
            self._probes -= 1
            self._move("open" if failed else "closed", item_id)
            return
        now = self.clock.now()
        self._window.append((now, failed))
        self._window_failures += failed
        self._expire(now)
        self._consecutive = self._consecutive + 1 if failed else 0
        calls = len(self._window)
        if self._consecutive >= self.config.failures or (
            calls >= self.config.min_calls and self._window_failures / calls >= self.config.ratio
        ):
            self._move("open", item_id)

    def release(self, ticket: Ticket) -> None:
        """Hand back a ticket whose call never finished (cancelled): not a failure."""
        if ticket.probe and ticket.generation == self._generation:
            self._probes -= 1

    def _expire(self, now: float) -> None:
        horizon = now - self.config.window
        window = self._window
        while window and window[0][0] <= horizon:
            self._window_failures -= window.popleft()[1]

    def _move(self, new: BreakerState, item_id: str | None) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._probes = 0
        if new == "open":
            self._opened_at = self.clock.now()
        else:
            self._consecutive = 0
            self._window.clear()
            self._window_failures = 0
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
