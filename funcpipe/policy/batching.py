"""Items waiting for a worker, handed out as batches.

`WaitingItems` is the pure, synchronous buffer between a stream's reader and
its workers. It keeps arrival order (or, with fairness, deficit round robin
across keys) and decides when a batch may leave: when ``size`` items wait (or
their ``weight`` reaches ``max_weight``: an embedding request's tokens), when
the oldest has waited ``max_wait``, or when the caller asks for a flush (end
of stream, shutdown, backpressure). The asynchronous plumbing lives in
`funcpipe.policy.stream`.

It also decides which failed batches are split to isolate their poison
items (`split_codes`, `may_split`): a batch call that fails with a code that
blames the items (``BAD_INPUT``, ``DB_ERROR``, ``SERVICE_SPECIFIC``,
``USER_CODE``) and that the policy does not retry is tried again in halves.
Any other code says the service itself is unwell (``AUTH``, ``FATAL_DB``,
``CIRCUIT_OPEN``, ``RATE_LIMIT``, ``TRANSIENT``, ``TIMEOUT``, ``NETWORK``),
or was retried already as such, and splitting would only multiply the calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, Literal, TypeAlias, TypeVar

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.policy.fairness import DeficitRoundRobin
from funcpipe.policy.models import Policy

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
        weight: the weight of one item (an estimate of its tokens, say);
            only read with ``max_weight``.
        max_weight: the most weight a batch carries, unless its one item
            weighs more alone: a batch is full when the items waiting weigh
            that much, and `take` stops before the item that would pass it.

    Raises:
        ValueError: if ``size`` < 1, ``max_wait`` < 0, ``max_weight`` < 1
            or a weight is not positive.
    """

    def __init__(
        self,
        size: int = 1,
        max_wait: float | None = None,
        *,
        fair: bool = False,
        weights: Mapping[str, float] | None = None,
        weight: Callable[[V], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a batch size must be >= 1, got {size}")
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait cannot be negative, got {max_wait}")
        if max_weight is not None and max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        self.size = size
        self.max_wait = max_wait
        # Arrival times are only needed to time partial batches.
        self._timed = size > 1 and max_wait is not None
        self._fifo: deque[tuple[V, float]] = deque()
        self._fair: DeficitRoundRobin[tuple[V, float]] | None = DeficitRoundRobin(weights) if fair else None
        self._weight = weight if max_weight is not None and size > 1 else None
        self._max_weight = max_weight or 0
        self._weighed = 0  # the weight of every waiting item
        # The item `take` drew that would have passed max_weight: first in the next batch.
        self._held: tuple[V, float, int] | None = None

    def __len__(self) -> int:
        held = self._held is not None
        return (len(self._fair) if self._fair is not None else len(self._fifo)) + held

    def waiting(self, key: str) -> int:
        """How many items of ``key`` wait (always 0 unless ``fair``)."""
        return self._fair.waiting(key) if self._fair is not None else 0

    def push(self, value: V, key: str = "", now: float = 0.0) -> None:
        """Add ``value`` (of ``key``), arrived at ``now``."""
        if self._weight is not None:
            self._weighed += self._weight(value)
        if self._fair is not None:
            self._fair.push(key, (value, now))
        else:
            self._fifo.append((value, now))

    def due_at(self) -> float | None:
        """When the oldest waiting item will have waited ``max_wait``; None if never."""
        if not self._timed or not len(self):
            return None
        assert self.max_wait is not None
        if self._held is not None:
            return self._held[1] + self.max_wait
        if self._fair is not None:
            return min(arrived for _, arrived in self._fair.firsts()) + self.max_wait
        return self._fifo[0][1] + self.max_wait

    def full(self) -> bool:
        """Whether a whole batch waits: ``size`` items, or items weighing ``max_weight``."""
        return len(self) >= self.size or (self._weight is not None and self._weighed >= self._max_weight)

    def ready(self, now: float, flush: bool = False) -> BatchReason | None:
        """Whether a batch may leave at ``now``, and why; None if it must wait."""
        n = len(self)
        if self.full():
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
        """Remove and return up to ``size`` items, oldest first (or in fair order).

        With ``max_weight``, the batch also stops before the item that would
        make it weigh more (that item leads the next batch); a single item
        heavier than ``max_weight`` leaves alone.
        """
        if self._weight is not None:
            return self._take_weighed(self._weight)
        n = min(self.size, len(self))
        if self._fair is not None:
            pop_fair = self._fair.pop
            return [pop_fair()[1][0] for _ in range(n)]
        pop = self._fifo.popleft
        return [pop()[0] for _ in range(n)]

    def _take_weighed(self, weight: Callable[[V], int]) -> list[V]:
        out: list[V] = []
        carried = 0
        while len(out) < self.size and len(self):
            if self._held is not None:
                value, arrived, w = self._held
                self._held = None
            else:
                if self._fair is not None:
                    value, arrived = self._fair.pop()[1]
                else:
                    value, arrived = self._fifo.popleft()
                w = weight(value)
            if out and carried + w > self._max_weight:
                self._held = (value, arrived, w)
                break
            out.append(value)
            carried += w
        self._weighed -= carried
        return out


ITEM_CODES: frozenset[str] = frozenset(
    {ErrCode.BAD_INPUT, ErrCode.DB_ERROR, ErrCode.SERVICE_SPECIFIC, ErrCode.USER_CODE}
)
"""Codes that may blame one item of a batch rather than the service: the candidates for splitting."""

WHOLE_CALL = "whole_call"
"""``ErrInfo.meta`` key: true when an error concerns the call as a whole, whatever its items.

A batch function sets it on an error its items cannot cause (a store that
cannot be prepared, a wrong result count), so the batch is not split.
"""


def split_codes(policy: Policy) -> frozenset[str]:
    """The codes for which a failed batch of ``policy`` is split: `ITEM_CODES` the policy does not retry.

    A retried code is, by the policy's own word, a passing trouble of the
    service; once its attempts are spent, halving the batch cannot help.
    """
    retried = set(policy.retry.on) if policy.retry is not None else set()
    return frozenset(c for c in ITEM_CODES if c not in retried)


def may_split(error: ErrInfo, codes: frozenset[str]) -> bool:
    """Whether a batch that failed with ``error`` is worth splitting."""
    return error.code in codes and not error.meta.get(WHOLE_CALL)


def split_bound(n: int, k: int) -> int:
    """The most calls bisection makes for a batch of ``n`` items of which ``k`` are poison.

    The first call, then at each of the ``ceil(log2 n)`` levels two calls for
    each failing part, and never more than the ``2n - 1`` nodes of the whole tree.
    """
    if n <= 1 or k == 0:
        return 1
    depth = (n - 1).bit_length()  # ceil(log2 n)
    return min(2 * n - 1, 1 + 2 * k * depth)


__all__ = ["ITEM_CODES", "WHOLE_CALL", "BatchReason", "WaitingItems", "may_split", "split_bound", "split_codes"]
