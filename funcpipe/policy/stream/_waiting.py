"""How read items wait for a worker: the engine's strategy, chosen once per stream.

`Queue` is the plain stream's: one item per call, in arrival order, in a bare
deque. It is the path of every concurrent stage without batching, so each of
its steps is kept to a few attribute reads. `Batches` serves batching and
fairness through `funcpipe.policy.batching.WaitingItems`: a batch leaves when
full, when its oldest item has waited ``max_wait``, on a flush (end of input,
shutdown) or when the reader is stalled for room only a partial batch can make.

Both only put items in and take them out, waking the workers, the reader and
the timer as that makes work or room; `funcpipe.policy.stream._engine` runs
the tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from funcpipe.core import Item
from funcpipe.policy.batching import WaitingItems
from funcpipe.policy.events import Event
from funcpipe.policy.stream._emit import Slot

if TYPE_CHECKING:
    from funcpipe.policy.stream._engine import Engine

T = TypeVar("T")
U = TypeVar("U")


class Queue(Generic[T, U]):
    """One item per call, in arrival order, at most ``capacity`` waiting."""

    __slots__ = ("_capacity", "_engine", "_queue")

    def __init__(self, engine: Engine[T, U], capacity: int) -> None:
        self._engine = engine
        self._capacity = capacity
        self._queue: deque[Slot[T, U]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, slot: Slot[T, U]) -> bool:
        """Queue ``slot`` if there is room, waking an idle worker; False if the reader must wait."""
        queue = self._queue
        if len(queue) >= self._capacity:
            return False
        queue.append(slot)
        engine = self._engine
        if engine.idle and not engine.waking:
            engine.wake_worker()
        return True

    def take(self) -> list[Slot[T, U]] | None:
        """The next item, alone; None if none waits."""
        queue = self._queue
        if not queue:
            return None
        slot = queue.popleft()
        engine = self._engine
        # Waking a reader that waits for the window too keeps it close behind: measurably faster.
        if engine.reader_waiter is not None:
            engine.wake_reader()
        # Wake one more worker only while none is on its way: when calls
        # finish without suspending, one worker drains the queue alone.
        if queue and engine.idle and not engine.waking:
            engine.wake_worker()
        return [slot]


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
    ) -> None:
        self._engine = engine
        self.waiting: WaitingItems[Slot[T, U]] = WaitingItems(size, max_wait, fair=fair, weights=weights)
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
        if engine.idle and not engine.waking and (len(waiting) >= self.size or engine.flush):
            engine.wake_worker()
        return slots
