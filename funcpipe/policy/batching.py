"""Items waiting for a worker, handed out as batches.

`WaitingItems` is the pure, synchronous buffer between a stream's reader and
its workers. It keeps arrival order (or, with fairness, deficit round robin
across keys) and decides when a batch may leave: when ``size`` items wait,
when the oldest has waited ``max_wait``, or when the caller asks for a flush
(end of stream, shutdown, backpressure). The asynchronous plumbing lives in
`funcpipe.policy.stream`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Generic, Literal, TypeAlias, TypeVar

from funcpipe.policy.fairness import DeficitRoundRobin

V = TypeVar("V")

BatchReason: TypeAlias = Literal["full", "max_wait", "flush"]
"""Why a batch left: it was full, its oldest item had waited ``max_wait``, or a flush was asked."""


class WaitingItems(Generic[V]):
    """A bounded-by-its-owner buffer of items that leave in batches of at most ``size``.

    Args:
        size: the largest batch `take` returns.
        max_wait: seconds after which a partial batch may leave; ``None``
            means only a full batch or a flush lets one go.
        fair: serve keys by deficit round robin instead of arrival order.
        weights: relative share per key when ``fair``.

    Raises:
        ValueError: if ``size`` < 1, ``max_wait`` < 0 or a weight is not positive.
    """

    def __init__(
        self,
        size: int = 1,
        max_wait: float | None = None,
        *,
        fair: bool = False,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a batch size must be >= 1, got {size}")
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait cannot be negative, got {max_wait}")
        self.size = size
        self.max_wait = max_wait
        # Arrival times are only needed to time partial batches.
        self._timed = size > 1 and max_wait is not None
        self._fifo: deque[tuple[V, float]] = deque()
        self._fair: DeficitRoundRobin[tuple[V, float]] | None = DeficitRoundRobin(weights) if fair else None

    def __len__(self) -> int:
        return len(self._fair) if self._fair is not None else len(self._fifo)

    def waiting(self, key: str) -> int:
        """How many items of ``key`` wait (always 0 unless ``fair``)."""
        return self._fair.waiting(key) if self._fair is not None else 0

    def push(self, value: V, key: str = "", now: float = 0.0) -> None:
        """Add ``value`` (of ``key``), arrived at ``now``."""
        if self._fair is not None:
            self._fair.push(key, (value, now))
        else:
            self._fifo.append((value, now))

    def due_at(self) -> float | None:
        """When the oldest waiting item will have waited ``max_wait``; None if never."""
        if not self._timed or not len(self):
            return None
        assert self.max_wait is not None
        if self._fair is not None:
            return min(arrived for _, arrived in self._fair.firsts()) + self.max_wait
        return self._fifo[0][1] + self.max_wait

    def ready(self, now: float, flush: bool = False) -> BatchReason | None:
        """Whether a batch may leave at ``now``, and why; None if it must wait."""
        n = len(self)
        if n >= self.size:
            return "full"
        if not n:
            return None
        if flush:
            return "flush"
        if self._timed:
            due = self.due_at()
            if due is not None and due <= now:
                return "max_wait"
        return None

    def take(self) -> list[V]:
        """Remove and return up to ``size`` items, oldest first (or in fair order)."""
        n = min(self.size, len(self))
        if self._fair is not None:
            pop_fair = self._fair.pop
            return [pop_fair()[1][0] for _ in range(n)]
        pop = self._fifo.popleft
        return [pop()[0] for _ in range(n)]


__all__ = ["BatchReason", "WaitingItems"]
