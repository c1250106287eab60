"""How read items wait for a worker with batching or fairness.

`Batches` serves both through `funcpipe.policy.batching.WaitingItems`: a
batch leaves when full, when its oldest item has waited ``max_wait``, on a
flush (end of input, shutdown) or when the reader is stalled for room only a
partial batch can make. A plain stream (one item per call, in arrival order)
needs none of that: its items wait in a bare deque the engine handles inline.

`Batches` only puts items in and takes them out, waking the workers, the
reader and the timer as that makes work or room;
`funcpipe.policy.stream._engine` runs the tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from funcpipe.core import Item
from funcpipe.policy.batching import WaitingItems
from funcpipe.policy.events import Event
from funcpipe.policy.stream._emit import Slot

if TYPE_CHECKING:
    from funcpipe.policy.stream._engine import Engine

T = TypeVar("T")
U = TypeVar("U")


class Batches(Generic[T, U]):
    """Batches of up to ``size`` items, in arrival order or by deficit round robin across keys.

    Args:
        engine: the engine whose workers, reader and timer it wakes.
        size: the largest batch.
        max_wait: seconds after which a partial batch may leave.
        fair: serve keys by deficit round robin (``key`` of each slot).
        weights: relative share per key when ``fair``.
        capacity: items waiting at most.
        events: whether to emit a ``batch`` event per batch taken.
        weight: the weight of one input (its estimated tokens), read with ``max_weight``.
        max_weight: the most weight one batch carries (see `WaitingItems`).
    """

    __slots__ = ("_capacity", "_engine", "_events", "_fair", "_key_capacity", "size", "timed", "waiting")

    def __init__(
        self,
        engine: Engine[T, U],
        *,
        size: int,
        max_wait: float | None,
        fair: bool,
        weights: Mapping[str, float] | None,
        capacity: int,
        events: bool,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        self._engine = engine
        self.waiting: WaitingItems[Slot[T, U]] = WaitingItems(
            size,
            max_wait,
            fair=fair,
            weights=weights,
            weight=(lambda slot: weight(slot.value)) if weight is not None else None,
            max_weight=max_weight,
        )
        self.size = size
        self.timed = size > 1 and max_wait is not None
        self._fair = fair
        self._capacity = capacity
        self._key_capacity = max(size, capacity // 2)
        self._events = events

    def __len__(self) -> int:
        return len(self.waiting)

    def offer(self, slot: Slot[T, U]) -> bool:
        """Queue ``slot`` if there is room (one key may hold half of it), waking a worker if a batch is ready."""
        waiting = self.waiting
        if len(waiting) >= self._capacity or (self._fair and waiting.waiting(slot.key) >= self._key_capacity):
            return False
        engine = self._engine
        timed = self.timed
        now = engine.clock.now() if timed else 0.0
        waiting.push(slot, slot.key, now)
        if engine.idle and not engine.waking and waiting.ready(now, engine.flush):
            engine.wake_worker()
        if timed and len(waiting) == 1:
            engine.wake_timer()
        return True

    def take(self) -> list[Slot[T, U]] | None:
        """The next batch, if one may leave now; None if it must wait."""
        waiting = self.waiting
        if not len(waiting):
            return None
        engine = self._engine
        now = engine.clock.now() if self.timed else 0.0
        reason = waiting.ready(now, engine.flush or engine.stalled())
        if reason is None:
            return None
        slots = waiting.take()
        if engine.reader_waiter is not None:
            engine.wake_reader()
        engine.wake_timer()
        if self._events:
            first = slots[0].value
            engine.events(
                Event(
                    "batch",
                    engine.stage,
                    first.id if isinstance(first, Item) else None,
                    at=engine.clock.now(),
                    data={"items": len(slots), "reason": reason},
                )
            )
        if engine.idle and not engine.waking and (waiting.full() or engine.flush):
            engine.wake_worker()
        return slots
