"""A worker's side of a shared circuit breaker.

`SharedBreaker` keeps a local `funcpipe.policy.Breaker` (it admits this
worker's calls and limits its half-open probes) and tells every outcome to
the adapter's breaker on the policy board, which counts the failures of all
workers together. When the board's breaker opens, every worker hears it
in the answer to its next outcome, or to the question it asks when it
admits a call and has heard nothing for `REFRESH` seconds; it then refuses
calls until the breaker resets: one adapter, one breaker, whichever worker
saw the failures.
"""

from __future__ import annotations

from collections.abc import Callable

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.policy.breaker import Breaker, BreakerState, Ticket, TransitionListener
from funcpipe.policy.clock import Clock
from funcpipe.policy.models import CircuitBreaker

__all__ = ["REFRESH", "SharedBreaker"]

REFRESH = 0.25
"""Seconds after which a worker that heard nothing from the board asks it again."""

Tell = Callable[[str | None, bool, Callable[[float], None]], None]
"""``(code, counted, answer)``: sends an outcome (counted) or a question (not counted) to the board;
``answer(seconds open)`` is called back on this loop."""


class SharedBreaker:
    """A breaker whose opening is decided by the outcomes of every worker.

    Args:
        config: the breaker's thresholds.
        clock: this process's clock.
        tell: sends an outcome to the board and calls back with how long it stays open.
        on_transition: told about this worker's view of every state change.
    """

    def __init__(self, config: CircuitBreaker, clock: Clock, tell: Tell, on_transition: TransitionListener) -> None:
        self.config = config
        self.clock = clock
        self._tell = tell
        self._on_transition = on_transition
        self._local = Breaker(config, clock, on_transition)
        self._open_until = float("-inf")
        self._heard_at = float("-inf")

    def __repr__(self) -> str:
        return f"SharedBreaker(state={self.state!r}, {self.config!r})"

    @property
    def state(self) -> BreakerState:
        """``open`` while the shared breaker is open, else the local breaker's state."""
        return "open" if self._shared_wait() > 0 else self._local.state

    def reset_at(self) -> float | None:
        """When probing starts again, if the breaker is open."""
        if self._shared_wait() > 0:
            local = self._local.reset_at()
            return self._open_until if local is None else max(local, self._open_until)
        return self._local.reset_at()

    def refusal(self) -> ErrInfo | None:
        """The ``CIRCUIT_OPEN`` error a call would fail fast with now, if any."""
        wait = self._shared_wait()
        if wait > 0:
            return _open(wait)
        return self._local.refusal()

    def admit(self, item_id: str | None = None) -> Ticket | ErrInfo:
        """Admit a call now, or say why not."""
        wait = self._shared_wait()
        if wait > 0:
            return _open(wait)
        if self.clock.now() - self._heard_at >= REFRESH:
            self._heard_at = self.clock.now()  # one question in flight at a time
            self._tell(None, False, self._heard)
        return self._local.admit(item_id)

    def record(self, ticket: Ticket, code: str | None, item_id: str | None = None) -> None:
        """Record a call's outcome here and on the board."""
        self._local.record(ticket, code, item_id)
        failed = code is not None and code in self.config.on
        self._tell(code if failed else None, True, self._heard)

    def release(self, ticket: Ticket) -> None:
        """Hand back a ticket whose call never finished."""
        self._local.release(ticket)

    def _shared_wait(self) -> float:
        return self._open_until - self.clock.now()

    def _heard(self, seconds_open: float) -> None:
        """The board's answer: how long the shared breaker stays open."""
        self._heard_at = self.clock.now()
        if seconds_open <= 0:
            return
        was_open = self._shared_wait() > 0
        self._open_until = max(self._open_until, self.clock.now() + seconds_open)
        if not was_open:
            self._on_transition(self._local.state, "open", None)


def _open(wait: float) -> ErrInfo:
    return ErrInfo(
        ErrCode.CIRCUIT_OPEN,
        f"the circuit breaker shared by every worker is open; it lets probes through in {wait:.1f}s",
        {"retry_after": wait},
    )
