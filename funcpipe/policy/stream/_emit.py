"""The output side of a driven stream: results in input order (per lane) or as they complete.

Each input on its way through is a `Slot`. With ``ordered`` it joins a
*lane*, a FIFO of the slots whose results must leave in that order: one lane
for the whole stream, or one per fairness key. A result waits in its slot
until every slot before it in its lane has one; then the run leaves together.
Without ``ordered`` a slot has no lane and its result leaves at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from funcpipe.core import Err, ErrInfo, Result

T = TypeVar("T")
U = TypeVar("U")


class Slot(Generic[T, U]):
    """One input on its way through: its value, its result once known, and its output lane."""

    __slots__ = ("key", "lane", "result", "value")

    def __init__(self, value: T, lane: deque[Slot[T, U]] | None, key: str = "") -> None:
        self.value = value
        self.lane = lane
        self.key = key
        self.result: Result[U, ErrInfo] | None = None


class Emitter(Generic[T, U]):
    """The results ready for the consumer, the lanes that order them, and the consumer's wake-up.

    Args:
        ordered: keep input order within each lane.
        keyed: one lane per fairness key instead of one for the stream.
    """

    __slots__ = ("consumer_waiter", "keyed", "lane", "lanes", "ordered", "ready")

    def __init__(self, *, ordered: bool, keyed: bool) -> None:
        self.ordered = ordered
        self.keyed = keyed
        self.ready: deque[Result[U, ErrInfo]] = deque()
        self.lane: deque[Slot[T, U]] = deque()  # the stream's one lane, when not keyed
        self.lanes: dict[str, deque[Slot[T, U]]] = {}
        # Dropped as it is woken, so later checks cost one attribute read.
        self.consumer_waiter: asyncio.Future[None] | None = None

    def slot(self, value: T, key: str = "") -> Slot[T, U]:
        """A slot for ``value`` of fairness ``key``, queued in its lane when ordered."""
        if not self.ordered:
            return Slot(value, None, key)
        if self.keyed:
            lane = self.lanes.get(key)
            if lane is None:
                lane = self.lanes[key] = deque()
        else:
            lane = self.lane
        slot: Slot[T, U] = Slot(value, lane, key)
        lane.append(slot)
        return slot

    def wake(self) -> None:
        """Wake the consumer if it waits."""
        waiter = self.consumer_waiter
        if waiter is not None:
            self.consumer_waiter = None
            wake(waiter)

    def passed(self, r: Err[ErrInfo]) -> None:
        """Send an input ``Err`` on: at once, or behind the results it must follow in order."""
        lane = self.lane
        if self.ordered and not self.keyed and lane:
            slot: Slot[T, U] = Slot(None, lane)  # type: ignore[arg-type]
            slot.result = r
            lane.append(slot)
            return
        self.ready.append(r)
        self.wake()

    def resolve(self, slot: Slot[T, U], res: Result[U, ErrInfo]) -> None:
        """Give ``slot`` its result and release every result its lane may now let go."""
        ready = self.ready
        lane = slot.lane
        if lane is None:
            ready.append(res)
        else:
            slot.result = res
            if lane[0] is not slot:
                return  # it waits for the results before it
            lane.popleft()
            ready.append(res)
            while lane and (head := lane[0].result) is not None:
                lane.popleft()
                ready.append(head)
            if not lane and self.keyed:
                del self.lanes[slot.key]
        if self.consumer_waiter is not None:
            self.wake()


def wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` unless it is done (or cancelled) already."""
    if not waiter.done():
        waiter.set_result(None)
