"""Virtual time for tests: assert exact schedules without ever sleeping for real.

`VirtualEventLoop` is an asyncio event loop whose ``time()`` is virtual. When
no callback is ready and no I/O is pending, it jumps straight to the next
scheduled timer, so virtual time advances only while every task is blocked on
the clock. Sleeps, ``call_later`` and ``asyncio.timeout`` all read that time,
and so does `funcpipe.policy.clock.RealClock`, so policies need no special
clock to run on it.

Run a coroutine on it with `run_virtual`::

    from funcpipe.testing import VirtualClock, run_virtual

    def test_backoff() -> None:
        clock = VirtualClock()
        result = run_virtual(apply_policy(policy, plan, clock=clock))
        ...

or make pytest-asyncio run async tests on it, in a ``conftest.py``::

    from funcpipe.testing import VirtualEventLoop

    def pytest_asyncio_loop_factories(config, item):
        return {"virtual": VirtualEventLoop}

Work handed to a thread (``asyncio.to_thread``, ``run_in_executor``: file
reads, for instance) holds the clock still until it is done, so a timer
never fires early because a thread was slow. Caveat: other real I/O does
not. A task blocked on a socket does not hold the clock back while another
task sleeps; fakes in tests should wait on the clock or on asyncio primitives.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

__all__ = ["VirtualClock", "VirtualEventLoop", "VirtualTimeStall", "run_virtual"]


class VirtualTimeStall(RuntimeError):
    """Every task waits on something that is not the clock, and nothing came.

    Raised by `VirtualEventLoop` after ``stall_timeout`` real seconds without
    ready work, I/O or timers: the test has deadlocked.
    """


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time that jumps to the next timer when idle.

    Args:
        start: the virtual time the loop starts at.
        stall_timeout: real seconds to wait for I/O when no timer is
            scheduled and nothing is ready, before raising `VirtualTimeStall`;
            ``None`` waits forever, like a normal loop.
    """

    def __init__(self, *, start: float = 0.0, stall_timeout: float | None = 60.0) -> None:
        self._virtual_now = float(start)
        self._in_threads = 0
        super().__init__(_JumpingSelector(self, stall_timeout))

    def time(self) -> float:
        """The loop's virtual time, in seconds."""
        return self._virtual_now

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """As asyncio's, but time stands still until ``func`` returns (see the module's docstring)."""
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._in_threads -= 1

    @property
    def waiting_for_threads(self) -> bool:
        """True while work handed to a thread is not done: time does not move then."""
        return self._in_threads > 0

    def _jump(self) -> None:
        # Called after a poll found no I/O. Time moves only when no callback
        # is ready: then it lands exactly on the next timer, so a sleeper
        # wakes at the very time it asked for.
        if self._ready or self._stopping:  # type: ignore[attr-defined]
            return
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            return
        when = scheduled[0].when()
        resolution: float = self._clock_resolution  # type: ignore[attr-defined]
        now = max(self._virtual_now, when)
        if not when < now + resolution:
            # The loop runs the timers due before ``time() + resolution``; at
            # large times that sum rounds back down, so step one ulp past.
            now = math.nextafter(now, math.inf)
        self._virtual_now = now


class _JumpingSelector(selectors.BaseSelector):
    """A real selector that, instead of blocking until a timer, jumps time to it."""

    def __init__(self, loop: VirtualEventLoop, stall_timeout: float | None) -> None:
        self._loop = loop
        self._stall_timeout = stall_timeout
        self._inner = selectors.DefaultSelector()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # Nothing ready and no timer: only real I/O (e.g. a worker thread
            # waking the loop) can make progress.
            events = self._inner.select(self._stall_timeout)
            if not events and self._stall_timeout is not None:
                raise VirtualTimeStall(
                    f"no task made progress for {self._stall_timeout}s of real time and no timer "
                    "is scheduled: every task waits on something that is not the clock"
                )
            return events
        events = self._inner.select(0)
        if events:
            return events
        if timeout > 0 and self._loop.waiting_for_threads:
            # A thread's result is what comes next: wait for it in real time
            # (its completion wakes the selector) instead of jumping past timers.
            events = self._inner.select(self._stall_timeout)
            if not events and self._stall_timeout is not None:
                raise VirtualTimeStall(f"work handed to a thread did not finish in {self._stall_timeout}s of real time")
            return events
        self._loop._jump()
        return events

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class VirtualClock:
    """A `Clock` that insists on running on a `VirtualEventLoop`.

    It reads and sleeps on the loop's virtual time, exactly as `RealClock`
    would; the difference is that a test which forgot to use the virtual loop
    fails at once instead of sleeping for real.
    """

    def now(self) -> float:
        """The virtual loop's time."""
        return _virtual_loop().time()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (no real time passes)."""
        _virtual_loop()
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "VirtualClock()"


def _virtual_loop() -> VirtualEventLoop:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, VirtualEventLoop):
        raise RuntimeError(
            "VirtualClock needs a running VirtualEventLoop: run the code with "
            "funcpipe.testing.run_virtual(...), or return {'virtual': VirtualEventLoop} "
            "from the pytest_asyncio_loop_factories hook"
        )
    return loop


def run_virtual(
    main: Callable[[], Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    *,
    start: float = 0.0,
    stall_timeout: float | None = 60.0,
) -> T:
    """Run ``main`` to completion on a fresh `VirtualEventLoop` and return its value.

    Args:
        main: a coroutine, or a zero-argument callable making one (an
            ``AsyncPlan`` is such a callable, so a plan can be passed as is).
        start: the virtual time the loop starts at.
        stall_timeout: see `VirtualEventLoop`.

    Like `asyncio.run`, it cancels leftover tasks and closes the loop.
    """
    coro = main if isinstance(main, Coroutine) else main()
    with asyncio.Runner(loop_factory=lambda: VirtualEventLoop(start=start, stall_timeout=stall_timeout)) as runner:
        return runner.run(coro)
