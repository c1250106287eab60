"""The seam through which policy state can live outside the process.

A `PolicyRuntime` keeps its rate limiter and circuit breaker in local
objects (`RateLimiter`, `Breaker`). When many processes run the same
pipeline against one service, they must share those: one limit, one
breaker. A `SharedPolicy` hands the runtime the limiter and breaker to use
for a *scope* (the adapter a stage calls, by name) instead of local ones.
It is a plain protocol, so this package stays free of any particular
transport; the scale-out executor implements it with actors.

The runtime only uses the operations below, so anything that offers them,
with the same meaning as `RateLimiter`'s and `Breaker`'s, can stand in.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from funcpipe.core import ErrInfo, Result
from funcpipe.policy.breaker import BreakerState, Ticket, TransitionListener
from funcpipe.policy.clock import Clock
from funcpipe.policy.models import CircuitBreaker, RateLimit

__all__ = ["BreakerGate", "LimiterGate", "LimiterTurn", "SharedPolicy"]


class LimiterTurn(Protocol):
    """A place in a limiter's line (see `funcpipe.policy.Turn`)."""

    async def ready(self, deadline: float | None = None) -> Result[float, ErrInfo]:
        """Wait until the call is first in line and may start; ``Ok(seconds waited)`` or ``Err(TIMEOUT)``."""
        ...

    def may_start(self) -> bool:
        """Whether the call may start right now."""
        ...

    def commit(self) -> None:
        """Record the call's start now and hand the line on."""
        ...


class LimiterGate(Protocol):
    """What the call-level interpreter asks of a rate limiter (see `funcpipe.policy.RateLimiter`)."""

    def start_now(self, cost: int = 1, *, key: Hashable = None) -> bool:
        """Record a call starting now if it may start at once; say whether it did."""
        ...

    def turn(self, cost: int = 1, *, key: Hashable = None) -> AbstractAsyncContextManager[LimiterTurn]:
        """A place in ``key``'s line for a call of ``cost``."""
        ...

    def pause(self, seconds: float, *, key: Hashable = None) -> None:
        """Start nothing for ``key`` during the next ``seconds`` (a ``Retry-After``)."""
        ...


class BreakerGate(Protocol):
    """What the call-level interpreter asks of a circuit breaker (see `funcpipe.policy.Breaker`)."""

    @property
    def state(self) -> BreakerState:
        """The state as last moved."""
        ...

    def reset_at(self) -> float | None:
        """When an open breaker starts admitting probes; ``None`` unless it is open."""
        ...

    def refusal(self) -> ErrInfo | None:
        """The ``CIRCUIT_OPEN`` error a call would fail fast with now, if any."""
        ...

    def admit(self, item_id: str | None = None) -> Ticket | ErrInfo:
        """Admit a call now, or say why not."""
        ...

    def record(self, ticket: Ticket, code: str | None, item_id: str | None = None) -> None:
        """Record the outcome of an admitted call: ``code`` is ``None`` on success."""
        ...

    def release(self, ticket: Ticket) -> None:
        """Hand back a ticket whose call never finished."""
        ...


class SharedPolicy(Protocol):
    """Where the limiters and breakers of many runtimes come from, shared per scope.

    ``scope`` names what is shared: the adapter a stage calls (or the stage,
    when it calls none). A method returns ``None`` to let the runtime keep a
    local one.
    """

    def limiter(self, scope: str, limit: RateLimit, clock: Clock) -> LimiterGate | None:
        """The limiter every runtime of ``scope`` with this ``limit`` shares."""
        ...

    def breaker(
        self, scope: str, config: CircuitBreaker, clock: Clock, on_transition: TransitionListener
    ) -> BreakerGate | None:
        """The breaker every runtime of ``scope`` shares; ``on_transition`` hears this runtime's view of it."""
        ...
