"""Concurrency slots (`funcpipe.policy.slots`): free slots without waiting, FIFO hand-over, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from funcpipe.policy.slots import Slots
from funcpipe.testing import run_virtual


def test_a_free_slot_is_taken_without_waiting() -> None:
    slots = Slots(2)

    taken = [slots.try_acquire() for _ in range(3)]

    assert taken == [True, True, False]
    assert slots.free == 0 and slots.locked()


def test_waiters_get_released_slots_in_arrival_order() -> None:
    async def main() -> list[int]:
        slots, order = Slots(1), []
        assert slots.try_acquire()

        async def wait(i: int) -> None:
            await slots.acquire()
            order.append(i)

        tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        for _ in range(3):
            slots.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert run_virtual(main) == [0, 1, 2]


def test_a_newcomer_cannot_take_a_slot_handed_to_a_waiter() -> None:
    async def main() -> tuple[bool, bool]:
        slots = Slots(1)
        assert slots.try_acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.release()
        jumped = slots.try_acquire()  # before the waiter has run
        await waiter
        return jumped, waiter.done()

    assert run_virtual(main) == (False, True)


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def main() -> tuple[bool, int]:
        slots = Slots(1)
        assert slots.try_acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        slots.release()
        return slots.try_acquire(), slots.free

    assert run_virtual(main) == (True, 0)


def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    async def main() -> tuple[bool, bool]:
        slots = Slots(1)
        assert slots.try_acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # handed to ``first``...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await second
        return first.cancelled(), slots.locked()

    assert run_virtual(main) == (True, True)


def test_there_is_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(0)
