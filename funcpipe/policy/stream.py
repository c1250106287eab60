"""Stream-level policies: bounded concurrency, batching and fairness.

`apply_stream_policy` maps an external call over a stream and
`apply_batch_policy` maps a batch call over batches of it. For each item the
parts apply in the order of DESIGN.md::

    fairness: deficit round robin across keys, among the items waiting
      └ batching: up to ``size`` items, or those waiting ``max_wait`` after the first
          └ bounded concurrency: at most ``policy.concurrency`` calls in flight
              └ the call-level policy, `PolicyRuntime.apply` (deadline, retry, limiter, breaker, timeout)

Every input ``Err`` passes straight through: it never waits for a worker.

How it runs: when the returned stream is first pulled it starts, inside
itself, one reader task, a fixed pool of ``workers`` worker tasks (never a
task per item) and, when needed, a timer for ``max_wait`` and a watcher for
``shutdown``. Closing or cancelling the stream cancels and awaits every one of
them, then closes its input, so nothing outlives it. With one worker and
neither batching nor fairness no task is started at all.

``workers`` is ``policy.concurrency`` (default 1), each running one call at a
time. When the policy retries, the runtime takes a call slot per attempt and
an item backing off between attempts holds none (DESIGN.md), so there are
twice as many workers: items that wait out a backoff leave the slots to
others, and the runtime still bounds the calls in flight.

Poison items. One bad item must not take its batch with it. When a batch
call fails with a code that may blame its items and that the policy does not
retry (`funcpipe.policy.batching.split_codes`: ``BAD_INPUT``, ``DB_ERROR``,
``SERVICE_SPECIFIC``, ``USER_CODE``, less the policy's ``retry.on``), its
worker splits it in halves and calls each, depth first, recursively: a part
that succeeds gives its items their results, a single item that fails is a
poison item and gets the error of its own call. Each part is a call under
the policy like any other (rate limit, breaker, retry, timeout). A part that
fails for its items is not counted as a failure by the breaker, so one poison
item is counted once, by its own call, not once per level. A part failing
with any other code (``AUTH``, ``FATAL_DB``, ``CIRCUIT_OPEN``, or a retried
code whose attempts ran out) stops the search: it and every item not yet
answered fail with that error. An error whose meta sets ``whole_call``
(`funcpipe.policy.batching.WHOLE_CALL`) is never split. For ``k`` poison
items among ``n`` this costs at most ``1 + 2k·ceil(log2 n)`` calls, and never
more than ``2n - 1`` (`funcpipe.policy.batching.split_bound`); each split
emits a ``split`` event.

Memory: the reader stops pulling its input (backpressure) while ``window``
items are held, read but not yet consumed downstream, where ``window`` is
``buffer + 2 * workers * size``. ``buffer``, the items waiting for a worker,
defaults to ``size * max(2, workers)``, and to at least 64 with fairness,
where one key may hold at most half of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from funcpipe.core import AsyncGen, AsyncPlan, Err, ErrCode, ErrInfo, Item, Ok, Result, user_error
from funcpipe.policy.apply import PolicyRuntime
from funcpipe.policy.batching import WHOLE_CALL, WaitingItems, may_split, split_codes
from funcpipe.policy.clock import REAL_CLOCK, Clock
from funcpipe.policy.events import Event, EventSink, null_sink
from funcpipe.policy.fairness import DeficitRoundRobin, field_key, resolve_field
from funcpipe.policy.models import Batch, Policy

T = TypeVar("T")
U = TypeVar("U")

_FAIR_BUFFER = 64
"""Fairness needs several keys' items waiting at once to choose among them."""

CallBatch = Callable[[list[T]], Awaitable[list[Result[U, ErrInfo]]]]


def apply_stream_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[T], AsyncPlan[U]],
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
    key: Callable[[T], str] | None = None,
    cost: Callable[[T], int] | None = None,
    buffer: int | None = None,
) -> AsyncGen[U]:
    """Map the call ``f`` over ``stream`` under the policy's stream and call-level parts.

    Args:
        policy: concurrency (default 1) and fairness come from here; the
            call-level parts apply through ``runtime``.
        stream: the input; each of its ``Err`` passes through untouched.
        f: makes the plan of the external call for one input.
        runtime: the call-level interpreter; by default a fresh one, made
            only if the policy has call-level parts.
        ordered: yield results in input order (in each key's order with
            fairness); otherwise as they complete.
        on_error: enriches the error of a failed call with its input.
        key: the fairness key of an input; by default read from the field
            ``policy.fairness.key`` names. Giving one turns fairness on.
        cost: the rate-limit cost of an input (default 1).
        buffer: items waiting for a worker at most (see the module docs).

    Returns:
        The stream of results, one per input, with at most
        ``policy.concurrency`` calls in flight.
    """
    _check_buffer(buffer)
    rt = runtime if runtime is not None else _default_runtime(policy, REAL_CLOCK)
    plan_for = _plan_for(f, rt, cost, _rate_key(policy))
    fair_key = _fair_key(policy, key)
    workers = _workers(policy, rt)
    if workers == 1 and fair_key is None:
        return _sequential(stream, plan_for, on_error)
    weights = _weights(policy)

    def run() -> AsyncIterator[Result[U, ErrInfo]]:
        engine: _Engine[T, U] = _Engine(
            stream(),
            plan_for=plan_for,
            on_error=on_error,
            workers=workers,
            ordered=ordered,
            key=fair_key,
            weights=weights,
            buffer=buffer,
        )
        return engine.run()

    return run


def apply_batch_policy(
    policy: Policy,
    stream: AsyncGen[T],
    f: Callable[[Sequence[T]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
    batch: Batch,
    *,
    runtime: PolicyRuntime | None = None,
    ordered: bool = True,
    clock: Clock = REAL_CLOCK,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
    cost: Callable[[Sequence[T]], int] | None = None,
    key: Callable[[T], str] | None = None,
    shutdown: asyncio.Event | None = None,
    events: EventSink = null_sink,
    stage: str = "",
    buffer: int | None = None,
    split: bool = True,
) -> AsyncGen[U]:
    """Group ``stream`` into batches and map the batch call ``f`` over them.

    A batch is up to ``batch.size`` items, or those that have arrived
    ``batch.max_wait`` after its first item, whichever comes first; what is
    left is flushed at the end of the stream and as soon as ``shutdown`` is
    set. When every worker is busy a due batch keeps filling, up to its size,
    until one is free. Batches run concurrently up to ``policy.concurrency``.

    Args:
        policy: concurrency and fairness come from here; the call-level
            parts apply to each batch call through ``runtime``.
        stream: the input; each of its ``Err`` passes through untouched.
        f: makes the plan of one batch call; its value holds one result per
            item, in the batch's order.
        batch: the batch size and maximum wait.
        runtime: the call-level interpreter; by default a fresh one on
            ``clock``, made only if the policy has call-level parts.
        ordered: yield results in input order (in each key's order with
            fairness); otherwise as they complete.
        clock: times ``max_wait``.
        on_error: enriches each failed item's error with the item.
        cost: the rate-limit cost of a batch; by default its item count when
            ``rate_limit.cost`` is ``items`` or ``tokens``, else 1.
        key: the fairness key of an input, as in `apply_stream_policy`.
        shutdown: once set, waiting items leave at once in partial batches.
        events: receives a ``batch`` event for each batch sent and a
            ``split`` event for each failed batch (or part) split in two.
        stage: the stage named in those events.
        buffer: items waiting for a worker at most (see the module docs).
        split: isolate poison items by splitting failed batches (see the
            module docs); False fails every item of a failed batch alike.

    Returns:
        The stream of per-item results. A batch-level ``Err`` the items may
        cause is split down to the items that fail alone, each with its own
        error; any other fails each of its items with that error. A result
        list of the wrong length fails each with ``SERVICE_SPECIFIC``.
    """
    _check_buffer(buffer)
    rt = runtime if runtime is not None else _default_runtime(policy, clock)
    rate_key = _rate_key(policy)
    if cost is None and policy.rate_limit is not None and policy.rate_limit.cost != 1:
        cost = len
    call = _call_batch(
        f, rt, on_error, cost, rate_key, split_codes(policy) if split else frozenset(), events, stage, clock
    )
    fair_key = _fair_key(policy, key)
    weights = _weights(policy)

    def run() -> AsyncIterator[Result[U, ErrInfo]]:
        engine: _Engine[T, U] = _Engine(
            stream(),
            call_batch=call,
            workers=_workers(policy, rt),
            ordered=ordered,
            key=fair_key,
            weights=weights,
            buffer=buffer,
            size=batch.size,
            max_wait=batch.max_wait,
            clock=clock,
            shutdown=shutdown,
            events=events,
            stage=stage,
        )
        return engine.run()

    return run


def _check_buffer(buffer: int | None) -> None:
    if buffer is not None and buffer < 1:
        raise ValueError(f"buffer must be >= 1 item, got {buffer}")


def _default_runtime(policy: Policy, clock: Clock) -> PolicyRuntime | None:
    """A runtime for the policy's call-level parts, or None when it has none to apply."""
    if policy.timeout is None and policy.retry is None and policy.rate_limit is None and policy.circuit_breaker is None:
        return None
    return PolicyRuntime(policy, clock=clock)


def _rate_key(policy: Policy) -> Callable[[object], str] | None:
    limit = policy.rate_limit
    return field_key(limit.key) if limit is not None and limit.key else None


def _fair_key(policy: Policy, key: Callable[[T], str] | None) -> Callable[[T], str] | None:
    if key is not None:
        return key
    if policy.fairness is not None:
        return field_key(policy.fairness.key)
    return None


def _workers(policy: Policy, rt: PolicyRuntime | None) -> int:
    """How many worker tasks serve the policy's concurrency (see the module docs)."""
    c = policy.concurrency or 1
    retries = policy.retry is not None and policy.retry.max_attempts > 1
    # Only a runtime bounding the slots itself lets workers outnumber them.
    return 2 * c if rt is not None and retries and policy.concurrency is not None else c


def _weights(policy: Policy) -> Mapping[str, float] | None:
    if policy.fairness is None:
        return None
    DeficitRoundRobin(policy.fairness.weights)  # refuses bad weights now, not when the stream runs
    return policy.fairness.weights


def _item_id(value: object) -> str | None:
    return value.id if isinstance(value, Item) else None


def _plan_for(
    f: Callable[[T], AsyncPlan[U]],
    rt: PolicyRuntime | None,
    cost: Callable[[T], int] | None,
    rate_key: Callable[[object], str] | None,
) -> Callable[[T], AsyncPlan[U]]:
    """The plan of the call for one input: ``f``'s, under the runtime if there is one."""
    if rt is None:
        return f
    apply = rt.apply
    if cost is None and rate_key is None:
        # The usual stage: every call costs 1 in one bucket. It runs once per item, so it is kept lean.
        def plain_plan_for(value: T) -> AsyncPlan[U]:
            return apply(f(value), item_id=value.id if isinstance(value, Item) else None)

        return plain_plan_for

    def plan_for(value: T) -> AsyncPlan[U]:
        return apply(
            f(value),
            item_id=_item_id(value),
            cost=cost(value) if cost is not None else 1,
            key=rate_key(value) if rate_key is not None else None,
        )

    return plan_for


def _call_batch(
    f: Callable[[Sequence[T]], AsyncPlan[Sequence[Result[U, ErrInfo]]]],
    rt: PolicyRuntime | None,
    on_error: Callable[[T, ErrInfo], ErrInfo] | None,
    cost: Callable[[Sequence[T]], int] | None,
    rate_key: Callable[[object], str] | None,
    split_on: frozenset[str],
    events: EventSink,
    stage: str,
    clock: Clock,
) -> CallBatch[T, U]:
    """The call for one batch, its result spread back over the batch's items.

    A batch that fails with a code in ``split_on`` is split in halves, and
    each half is a call of its own under the policy, recursively, until the
    items that fail alone are found (see the module docs).
    """

    async def attempt(values: list[T], part: bool) -> list[Result[U, ErrInfo]] | ErrInfo:
        """One call: its per-item results, or the error of the call as a whole."""

        async def guarded() -> Result[Sequence[Result[U, ErrInfo]] | _PartFailed, ErrInfo]:
            try:
                res = await f(values)()
            except Exception as exc:
                res = Err(user_error(exc))
            # A part failing because of its items is an answer, not an outage:
            # the breaker should count the poison once (alone), not once per level.
            if isinstance(res, Err) and len(values) > 1 and may_split(res.error, split_on):
                return Ok(_PartFailed(res.error))
            return res

        try:
            plan: AsyncPlan[Sequence[Result[U, ErrInfo]] | _PartFailed] = guarded if part else f(values)
            if rt is not None:
                # A keyed limit charges a mixed batch to its first item's key.
                plan = rt.apply(
                    plan,
                    item_id=_item_id(values[0]),
                    cost=cost(values) if cost is not None else 1,
                    key=rate_key(values[0]) if rate_key is not None else None,
                )
            res = await plan()
        except Exception as exc:
            res = Err(user_error(exc))
        if isinstance(res, Err):
            return res.error
        value = res.value
        if isinstance(value, _PartFailed):
            return value.error
        try:
            results = list(value)
        except TypeError:  # a malformed answer, like a wrong count: the service's fault
            results = []
        if len(results) == len(values):
            return results
        return ErrInfo(
            ErrCode.SERVICE_SPECIFIC,
            f"the batch call returned {len(results)} results for {len(values)} items",
            # The service miscounts whatever the items: halving the batch would not help.
            {"expected": len(values), "got": len(results), WHOLE_CALL: True},
        )

    async def isolate(values: list[T], error: ErrInfo, out: list[Result[U, ErrInfo]]) -> ErrInfo | None:
        """Split the failed ``values`` in halves and call each; append one result per item to ``out``.

        Returns the error that stopped the splitting (the service is unwell),
        or None when every item has its own result.
        """
        mid = len(values) // 2
        halves = (values[:mid], values[mid:])
        events(
            Event(
                "split",
                stage,
                _item_id(values[0]),
                at=clock.now(),
                data={"items": len(values), "into": [len(h) for h in halves], "code": error.code},
            )
        )
        for half in halves:
            got = await attempt(half, True)
            if isinstance(got, list):
                out.extend(got)
            elif len(half) > 1 and may_split(got, split_on):
                stopped = await isolate(half, got, out)
                if stopped is not None:
                    return stopped
            elif may_split(got, split_on):
                out.append(Err(got))  # the poison: its own call's error
            else:
                return got
        return None

    async def call(values: list[T]) -> list[Result[U, ErrInfo]]:
        got = await attempt(values, False)
        if isinstance(got, list):
            results = got
        elif len(values) > 1 and may_split(got, split_on):
            results = []
            stopped = await isolate(values, got, results)
            if stopped is not None:
                # Every item not yet answered shares the error that stopped the search.
                results.extend([Err(stopped)] * (len(values) - len(results)))
        else:
            results = [Err(got)] * len(values)
        if on_error is None:
            return results
        return [Err(on_error(v, r.error)) if isinstance(r, Err) else r for v, r in zip(values, results, strict=True)]

    return call


@dataclass(frozen=True, slots=True)
class _PartFailed:
    """A split part's call failed because of its items: carried as a value past the breaker."""

    error: ErrInfo


def _sequential(
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
            await _aclose(source)

    return run


async def _aclose(it: AsyncIterator[Any]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


async def _cancel_and_wait(tasks: Sequence[asyncio.Task[None]]) -> None:
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


class _Slot(Generic[T, U]):
    """One input on its way through: its value, its result once known, and its output lane."""

    __slots__ = ("key", "lane", "result", "value")

    def __init__(self, value: T, lane: deque[_Slot[T, U]] | None, key: str = "") -> None:
        self.value = value
        self.lane = lane
        self.key = key
        self.result: Result[U, ErrInfo] | None = None


class _Engine(Generic[T, U]):
    """The reader, the worker pool, the timer and the consumer of one driven stream.

    Everything runs on one event loop, so the shared state below needs no
    locks: it changes only between awaits. Plain streams (one item per call,
    no fairness) take a leaner path through a bare deque, as that is the
    path every concurrent stage without batching runs on.
    """

    def __init__(
        self,
        source: AsyncIterator[Result[T, ErrInfo]],
        *,
        plan_for: Callable[[T], AsyncPlan[U]] | None = None,
        on_error: Callable[[T, ErrInfo], ErrInfo] | None = None,
        call_batch: CallBatch[T, U] | None = None,
        workers: int = 1,
        ordered: bool = True,
        key: Callable[[T], str] | None = None,
        weights: Mapping[str, float] | None = None,
        buffer: int | None = None,
        size: int = 1,
        max_wait: float | None = None,
        clock: Clock = REAL_CLOCK,
        shutdown: asyncio.Event | None = None,
        events: EventSink = null_sink,
        stage: str = "",
    ) -> None:
        self._source = source
        self._plan_for = plan_for
        self._on_error = on_error
        self._call_batch = call_batch
        self._workers = workers
        self._ordered = ordered
        self._key = key
        self._plain = call_batch is None and key is None
        self._waiting: WaitingItems[_Slot[T, U]] = WaitingItems(size, max_wait, fair=key is not None, weights=weights)
        self._timed = size > 1 and max_wait is not None
        default = size * max(2, workers)
        if key is not None:
            default = max(default, _FAIR_BUFFER)
        # A full batch must fit, or a batch could only ever leave by flushing.
        self._capacity = max(size, buffer if buffer is not None else default)
        self._key_capacity = max(size, self._capacity // 2)
        self._window = self._capacity + 2 * workers * size
        self._size = size
        self._clock = clock
        self._shutdown = shutdown
        self._events = events
        self._stage = stage

        self._queue: deque[_Slot[T, U]] = deque()  # the plain path's waiting items
        self._lane: deque[_Slot[T, U]] = deque()
        self._lanes: dict[str, deque[_Slot[T, U]]] = {}
        self._ready: deque[Result[U, ErrInfo]] = deque()
        self._outstanding = 0  # read and not yet consumed
        self._running = 0  # calls in flight
        self._input_done = False
        self._flush = False  # end of input or shutdown: partial batches leave at once
        self._upstream_error: Exception | None = None
        self._fault: BaseException | None = None

        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0  # idle workers woken that have not run yet
        self._consumer_waiter: asyncio.Future[None] | None = None
        self._reader_waiter: asyncio.Future[None] | None = None
        self._for_window = False  # the reader waits for room in the window, which only the consumer makes
        self._timer_waiter: asyncio.Future[None] | None = None

    # -- the consumer: the returned stream itself -----------------------------

    async def run(self) -> AsyncIterator[Result[U, ErrInfo]]:
        """Start the tasks, yield results as they become ready, and always clean up."""
        loop = self._loop = asyncio.get_running_loop()
        read, work = (self._read_plain, self._work_plain) if self._plain else (self._read, self._work)
        parts = [("reader", read), *(("worker", work) for _ in range(self._workers))]
        if self._timed:
            parts.append(("timer", self._time))
        if self._shutdown is not None and not self._plain:
            parts.append(("shutdown", self._watch))
        tasks = [loop.create_task(self._guard(part), name=f"funcpipe.stream.{name}") for name, part in parts]
        ready = self._ready
        try:
            while True:
                while ready:
                    r = ready.popleft()
                    self._outstanding -= 1
                    if self._reader_waiter is not None and self._for_window:
                        self._wake_reader()
                    yield r
                if self._fault is not None:
                    raise self._fault
                if self._input_done and not self._outstanding:
                    break
                self._unstall()
                waiter = self._consumer_waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._consumer_waiter = None
            if self._upstream_error is not None:
                raise self._upstream_error
        finally:
            await _cancel_and_wait(tasks)
            await _aclose(self._source)

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
            self._wake_consumer()

    # A waiter is dropped as it is woken, so later checks cost one attribute read.

    def _wake_consumer(self) -> None:
        waiter = self._consumer_waiter
        if waiter is not None:
            self._consumer_waiter = None
            _wake(waiter)

    def _wake_reader(self) -> None:
        waiter = self._reader_waiter
        if waiter is not None:
            self._reader_waiter = None
            _wake(waiter)

    def _pass(self, r: Err[ErrInfo]) -> None:
        """Send an input ``Err`` on: at once, or behind the results it must follow in order."""
        lane = self._lane
        if self._ordered and self._key is None and lane:
            slot: _Slot[T, U] = _Slot(None, lane)  # type: ignore[arg-type]
            slot.result = r
            lane.append(slot)
            return
        self._ready.append(r)
        self._wake_consumer()

    def _finish_input(self) -> None:
        self._input_done = True
        self._flush = True
        self._wake_all_workers()
        self._wake_timer()
        self._wake_consumer()

    async def _block(self, *, for_window: bool) -> None:
        """Wait for room: in the window (the consumer makes it) or among the waiting items (workers do)."""
        self._for_window = for_window
        waiter = self._reader_waiter = self._loop.create_future()
        self._unstall()
        try:
            await waiter
        finally:
            self._reader_waiter = None

    # -- the plain path: one item per call, arrival order -----------------------

    async def _read_plain(self) -> None:
        queue = self._queue
        lane = self._lane if self._ordered else None
        idle = self._idle
        window = self._window
        capacity = self._capacity
        try:
            async for r in self._source:
                while self._outstanding >= window:
                    await self._block(for_window=True)
                self._outstanding += 1
                if isinstance(r, Err):
                    self._pass(r)
                    continue
                slot: _Slot[T, U] = _Slot(r.value, lane)
                if lane is not None:
                    lane.append(slot)
                queue.append(slot)
                if idle and not self._waking:
                    self._wake_worker()
                while len(queue) >= capacity:
                    await self._block(for_window=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._upstream_error = exc
        finally:
            self._finish_input()

    async def _work_plain(self) -> None:
        queue = self._queue
        ready = self._ready
        idle = self._idle
        plan_for = self._plan_for
        on_error = self._on_error
        loop = self._loop
        assert plan_for is not None
        while True:
            while queue:
                slot = queue.popleft()
                # Waking a reader that waits for the window too keeps it close behind: measurably faster.
                if self._reader_waiter is not None:
                    self._wake_reader()
                # Wake one more worker only while none is on its way: when calls
                # finish without suspending, one worker drains the queue alone.
                if queue and idle and not self._waking:
                    self._wake_worker()
                value = slot.value
                try:
                    res = await plan_for(value)()
                except Exception as exc:
                    res = Err(user_error(exc))
                if on_error is not None and isinstance(res, Err):
                    res = Err(on_error(value, res.error))
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
                if self._consumer_waiter is not None:
                    self._wake_consumer()
            if self._input_done:
                return
            waiter = loop.create_future()
            idle.append(waiter)
            await waiter
            self._waking -= 1

    # -- the general path: batches and fairness --------------------------------

    async def _read(self) -> None:
        waiting = self._waiting
        ordered = self._ordered
        fair_key = self._key
        lane = self._lane
        lanes = self._lanes
        timed = self._timed
        clock = self._clock
        try:
            async for r in self._source:
                while self._outstanding >= self._window:
                    await self._block(for_window=True)
                self._outstanding += 1
                if isinstance(r, Err):
                    self._pass(r)
                    continue
                value = r.value
                if fair_key is None:
                    k = ""
                    slot: _Slot[T, U] = _Slot(value, lane if ordered else None)
                    if ordered:
                        lane.append(slot)
                    while len(waiting) >= self._capacity:
                        await self._block(for_window=False)
                else:
                    k = fair_key(value)
                    slot_lane = None
                    if ordered:
                        slot_lane = lanes.get(k)
                        if slot_lane is None:
                            slot_lane = lanes[k] = deque()
                    slot = _Slot(value, slot_lane, k)
                    if slot_lane is not None:
                        slot_lane.append(slot)
                    while len(waiting) >= self._capacity or waiting.waiting(k) >= self._key_capacity:
                        await self._block(for_window=False)
                now = clock.now() if timed else 0.0
                waiting.push(slot, k, now)
                if self._idle and not self._waking and waiting.ready(now, self._flush):
                    self._wake_worker()
                if timed and len(waiting) == 1:
                    self._wake_timer()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._upstream_error = exc
        finally:
            self._finish_input()

    def _stalled(self) -> bool:
        # The reader waits for room that only a partial batch leaving can make:
        # nothing is running and nothing is ready for the consumer.
        return self._reader_waiter is not None and not self._running and not self._ready

    def _unstall(self) -> None:
        if self._stalled() and len(self._waiting):
            self._wake_all_workers()

    def _take(self) -> list[_Slot[T, U]] | None:
        waiting = self._waiting
        if not len(waiting):
            return None
        now = self._clock.now() if self._timed else 0.0
        reason = waiting.ready(now, self._flush or self._stalled())
        if reason is None:
            return None
        slots = waiting.take()
        if self._reader_waiter is not None:
            self._wake_reader()
        self._wake_timer()
        if self._call_batch is not None:
            self._events(
                Event(
                    "batch",
                    self._stage,
                    _item_id(slots[0].value),
                    at=self._clock.now(),
                    data={"items": len(slots), "reason": reason},
                )
            )
        if self._idle and not self._waking and (len(waiting) >= self._size or self._flush):
            self._wake_worker()
        return slots

    async def _work(self) -> None:
        call_batch = self._call_batch
        plan_for = self._plan_for
        on_error = self._on_error
        idle = self._idle
        loop = self._loop
        while True:
            slots = self._take()
            if slots is None:
                if self._input_done and not len(self._waiting):
                    return
                waiter = loop.create_future()
                idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            self._running += 1
            if call_batch is not None:
                results = await call_batch([s.value for s in slots])
            else:
                assert plan_for is not None
                value = slots[0].value
                try:
                    res = await plan_for(value)()
                except Exception as exc:
                    res = Err(user_error(exc))
                if on_error is not None and isinstance(res, Err):
                    res = Err(on_error(value, res.error))
                results = [res]
            self._running -= 1
            for slot, res in zip(slots, results, strict=True):
                self._resolve(slot, res)

    def _resolve(self, slot: _Slot[T, U], res: Result[U, ErrInfo]) -> None:
        ready = self._ready
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
            if not lane and self._key is not None:
                del self._lanes[slot.key]
        self._wake_consumer()

    def _wake_worker(self) -> None:
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    def _wake_all_workers(self) -> None:
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1

    # -- the timer and the shutdown watcher ------------------------------------

    async def _time(self) -> None:
        """Wake a worker when the oldest waiting item has waited ``max_wait``."""
        waiting = self._waiting
        clock = self._clock
        while not self._flush:
            due = waiting.due_at()
            if due is not None and len(waiting) < self._size:
                delay = due - clock.now()
                if delay > 0:
                    await clock.sleep(delay)
                    continue
                self._wake_worker()
            # Nothing to time, or a due batch waits for a worker: sleep until things change.
            waiter = self._timer_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._timer_waiter = None

    def _wake_timer(self) -> None:
        if self._timer_waiter is not None:
            _wake(self._timer_waiter)

    async def _watch(self) -> None:
        assert self._shutdown is not None
        await self._shutdown.wait()
        self._flush = True
        self._wake_all_workers()
        self._wake_timer()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


__all__ = ["apply_batch_policy", "apply_stream_policy", "field_key", "resolve_field"]
