"""The one engine behind `apply_stream_policy` and `apply_batch_policy`.

When the returned stream is first pulled it starts, inside itself, one
reader task, a fixed pool of worker tasks (never a task per item) and, when
needed, a timer for ``max_wait`` and a watcher for ``shutdown``. Closing or
cancelling the stream cancels and awaits every one of them, then closes its
input, so nothing outlives it.

How items wait for a worker is chosen once per stream. A plain stream (one
item per call, no fairness) is what almost every concurrent stage runs, so
its reader and workers handle its bare deque, and the worker orders its
results, inline: per item that path makes no call of its own but the plan's.
Batching and fairness wait in `funcpipe.policy.stream._waiting.Batches`.
How results leave is the `Emitter`'s business
(`funcpipe.policy.stream._emit`). What a worker calls is either one plan per
item or one batch call per batch.

Everything runs on one event loop, so the shared state needs no locks: it
changes only between awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrInfo, Result, user_error
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import EventSink, null_sink
from funcpipe.policy.stream._emit import Emitter, Slot, wake
from funcpipe.policy.stream._waiting import Batches

T = TypeVar("T")
U = TypeVar("U")

FAIR_BUFFER = 64
"""Fairness needs several keys' items waiting at once to choose among them."""

CallBatch = Callable[[list[T]], Awaitable[list[Result[U, ErrInfo]]]]


class Engine(Generic[T, U]):
    """The reader, the worker pool, the timer and the consumer of one driven stream.

    Args:
        source: the input, closed when the stream ends.
        plan_for: the plan of the call for one input (one item per call) ...
        call_batch: ... or the call for one batch (batching); exactly one is given.
        on_error: enriches the error of a failed per-item call with its input.
        workers: the worker tasks.
        ordered: results in input order (per key with fairness).
        key: the fairness key of an input; None for arrival order.
        weights: fairness weights.
        buffer: items waiting for a worker at most; None for the default.
        size: the batch size (1 without batching).
        max_wait: seconds a partial batch may wait.
        weight: the weight of one input (its estimated tokens), read with ``max_weight``.
        max_weight: the most weight one batch carries; None for no bound.
        clock: times ``max_wait``.
        shutdown: once set, waiting items leave at once in partial batches.
        events: receives a ``batch`` event per batch taken (batch calls only).
        stage: the stage named in events.
    """

    def __init__(
        self,
        source: AsyncIterator[Result[T, ErrInfo]],
        *,
        plan_for: Callable[[T], AsyncPlan[U]] | None = None,
        call_batch: CallBatch[T, U] | None = None,
        on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
        workers: int = 1,
        ordered: bool = True,
        key: Callable[[T], str] | None = None,
        weights: Mapping[str, float] | None = None,
        buffer: int | None = None,
        size: int = 1,
        max_wait: float | None = None,
        weight: Callable[[T], int] | None = None,
        max_weight: int | None = None,
        clock: Clock = REAL_CLOCK,
        shutdown: asyncio.Event | None = None,
        events: EventSink = null_sink,
        stage: str = "",
    ) -> None:
        self._source = source
        self._plan_for = plan_for
        self._call_batch = call_batch
        self._on_error = on_error
        self._workers = workers
        self._key = key
        self._shutdown = shutdown
        self.clock = clock
        self.events = events
        self.stage = stage
        self.emitter: Emitter[T, U] = Emitter(ordered=ordered, keyed=key is not None)

        default = size * max(2, workers)
        if key is not None:
            default = max(default, FAIR_BUFFER)
        # A full batch must fit, or a batch could only ever leave by flushing.
        capacity = max(size, buffer if buffer is not None else default)
        self._window = capacity + 2 * workers * size
        self._capacity = capacity
        self._queue: deque[Slot[T, U]] = deque()  # a plain stream's waiting items
        self.batches: Batches[T, U] | None = None  # None for a plain stream
        if call_batch is not None or key is not None:
            self.batches = Batches(
                self,
                size=size,
                max_wait=max_wait,
                fair=key is not None,
                weights=weights,
                capacity=capacity,
                events=call_batch is not None,
                weight=weight,
                max_weight=max_weight,
            )

        self._outstanding = 0  # read and not yet consumed
        self._running = 0  # calls in flight, counted only with batches: a plain queue never stalls
        self._input_done = False
        self.flush = False  # end of input or shutdown: partial batches leave at once
        self._upstream_error: Exception | None = None
        self._fault: BaseException | None = None

        self.idle: deque[asyncio.Future[None]] = deque()
        self.waking = 0  # idle workers woken that have not run yet
        self.reader_waiter: asyncio.Future[None] | None = None
        self._for_window = False  # the reader waits for room in the window, which only the consumer makes
        self._timer_waiter: asyncio.Future[None] | None = None

    # -- the consumer: the returned stream itself -----------------------------

    async def run(self) -> AsyncIterator[Result[U, ErrInfo]]:
        """Start the tasks, yield results as they become ready, and always clean up."""
        loop = self._loop = asyncio.get_running_loop()
        parts = [("reader", self._read), *(("worker", self._work) for _ in range(self._workers))]
        batches = self.batches
        if batches is not None and batches.timed:
            parts.append(("timer", self._time))
        if self._shutdown is not None and batches is not None:
            parts.append(("shutdown", self._watch))
        tasks = [loop.create_task(self._guard(part), name=f"funcpipe.stream.{name}") for name, part in parts]
        emitter = self.emitter
        ready = emitter.ready
        try:
            while True:
                while ready:
                    r = ready.popleft()
                    self._outstanding -= 1
                    if self.reader_waiter is not None and self._for_window:
                        self.wake_reader()
                    yield r
                if self._fault is not None:
                    raise self._fault
                if self._input_done and not self._outstanding:
                    break
                self._unstall()
                waiter = emitter.consumer_waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    emitter.consumer_waiter = None
            if self._upstream_error is not None:
                raise self._upstream_error
        finally:
            await cancel_and_wait(tasks)
            await aclose(self._source)

    async def _guard(self, part: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one task's part; a fault in it (a bug, not a failed call) is raised by the stream."""
        # The coroutine is made here, so a task cancelled before it starts leaves none unawaited.
        try:
            await part()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Kept for the consumer to raise, not re-raised here: nobody awaits the task's result.
            self._fault = exc
            self.emitter.wake()

    # -- the reader --------------------------------------------------------------

    async def _read(self) -> None:
        emitter = self.emitter
        batches = self.batches
        queue = self._queue
        capacity = self._capacity
        idle = self.idle
        # Without fairness every slot joins the stream's one lane (or none): made here, once per item, cheaply.
        lane = emitter.lane if emitter.ordered else None
        fair_key = self._key
        window = self._window
        try:
            async for r in self._source:
                while self._outstanding >= window:
                    await self._block(for_window=True)
                self._outstanding += 1
                if isinstance(r, Err):
                    emitter.passed(r)
                    continue
                value = r.value
                if fair_key is None:
                    slot: Slot[T, U] = Slot(value, lane)
                    if lane is not None:
                        lane.append(slot)
                else:
                    slot = emitter.slot(value, fair_key(value))
                if batches is None:
                    while len(queue) >= capacity:
                        await self._block(for_window=False)
                    queue.append(slot)
                    if idle and not self.waking:
                        self.wake_worker()
                else:
                    while not batches.offer(slot):
                        await self._block(for_window=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._upstream_error = exc
        finally:
            self._input_done = True
            self.flush = True
            self._wake_all_workers()
            self.wake_timer()
            emitter.wake()

    async def _block(self, *, for_window: bool) -> None:
        """Wait for room: in the window (the consumer makes it) or among the waiting items (workers do)."""
        self._for_window = for_window
        waiter = self.reader_waiter = self._loop.create_future()
        self._unstall()
        try:
            await waiter
        finally:
            self.reader_waiter = None

    def wake_reader(self) -> None:
        """Wake the reader if it waits for room."""
        waiter = self.reader_waiter
        if waiter is not None:
            self.reader_waiter = None
            wake(waiter)

    def stalled(self) -> bool:
        """Whether the reader waits for room that only a partial batch leaving can make.

        That is when nothing is running and nothing is ready for the consumer.
        """
        return self.reader_waiter is not None and not self._running and not self.emitter.ready

    def _unstall(self) -> None:
        # Only a partial batch can be stuck: a plain queue's items always wake a worker as they arrive.
        batches = self.batches
        if batches is not None and self.stalled() and len(batches):
            self._wake_all_workers()

    # -- the workers --------------------------------------------------------------

    async def _work(self) -> None:
        batches = self.batches
        queue = self._queue
        emitter = self.emitter
        ready = emitter.ready
        call_batch = self._call_batch
        plan_for = self._plan_for
        on_error = self._on_error
        idle = self.idle
        loop = self._loop
        while True:
            if batches is None:
                if queue:
                    slot: Slot[T, U] | None = queue.popleft()
                    # Waking a reader that waits for the window too keeps it close behind: measurably faster.
                    if self.reader_waiter is not None:
                        self.wake_reader()
                    # Wake one more worker only while none is on its way: when calls
                    # finish without suspending, one worker drains the queue alone.
                    if queue and idle and not self.waking:
                        self.wake_worker()
                else:
                    slot = None
            else:
                slots = batches.take()
                if slots is None:
                    slot = None
                elif call_batch is not None:
                    self._running += 1
                    results = await call_batch([s.value for s in slots])
                    self._running -= 1
                    for s, res in zip(slots, results, strict=True):
                        emitter.resolve(s, res)
                    continue
                else:
                    slot = slots[0]
                    self._running += 1
            if slot is None:
                if self._input_done and (batches is None or not len(batches)):
                    return
                waiter = loop.create_future()
                idle.append(waiter)
                await waiter
                self.waking -= 1
                continue
            assert plan_for is not None
            value = slot.value
            try:
                res = await plan_for(value)()
            except Exception as exc:
                res = Err(user_error(exc))
            if on_error is not None and isinstance(res, Err):
                res = Err(on_error(value, res.error))
            if batches is not None:
                self._running -= 1
                emitter.resolve(slot, res)
                continue
            # `Emitter.resolve` inline, for the plain stream's one lane (or none).
            lane = slot.lane
            if lane is None:
                ready.append(res)
            else:
                slot.result = res
                if lane[0] is not slot:
                    continue  # it waits for the results before it
                lane.popleft()
                ready.append(res)
                while lane and (head := lane[0].result) is not None:
                    lane.popleft()
                    ready.append(head)
            if emitter.consumer_waiter is not None:
                emitter.wake()

    def wake_worker(self) -> None:
        """Wake one idle worker."""
        idle = self.idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.waking += 1
                return

    def _wake_all_workers(self) -> None:
        idle = self.idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.waking += 1

    # -- the timer and the shutdown watcher ------------------------------------

    async def _time(self) -> None:
        """Wake a worker when the oldest waiting item has waited ``max_wait``."""
        assert self.batches is not None
        waiting = self.batches.waiting
        clock = self.clock
        while not self.flush:
            due = waiting.due_at()
            if due is not None and not waiting.full():
                delay = due - clock.now()
                if delay > 0:
                    await clock.sleep(delay)
                    continue
                self.wake_worker()
            # Nothing to time, or a due batch waits for a worker: sleep until things change.
            waiter = self._timer_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._timer_waiter = None

    def wake_timer(self) -> None:
        """Wake the timer if it sleeps until things change."""
        if self._timer_waiter is not None:
            wake(self._timer_waiter)

    async def _watch(self) -> None:
        assert self._shutdown is not None
        await self._shutdown.wait()
        self.flush = True
        self._wake_all_workers()
        self.wake_timer()


def sequential(
    stream: AsyncGen[T],
    plan_for: Callable[[T], AsyncPlan[U]],
    on_error: Callable[[T, ErrInfo], ErrInfo] | None,
) -> AsyncGen[U]:
    """One call at a time, in the consumer's own task: no task, no buffer."""

    async def run() -> AsyncIterator[Result[U, ErrInfo]]:
        source = stream()
        try:
            async for r in source:
                if isinstance(r, Err):
                    yield r
                    continue
                value = r.value
                try:
                    res = await plan_for(value)()
                except Exception as exc:
                    res = Err(user_error(exc))
                if on_error is not None and isinstance(res, Err):
                    res = Err(on_error(value, res.error))
                yield res
        finally:
            await aclose(source)

    return run


async def aclose(it: AsyncIterator[Any]) -> None:
    """Close ``it`` if it can be closed (async generators can)."""
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until all have finished, even if we are cancelled meanwhile."""
    for t in tasks:
        t.cancel()
    interrupted = False
    while True:
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            # Leaving now would leak the tasks; finish the wait, then honour the cancellation.
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
