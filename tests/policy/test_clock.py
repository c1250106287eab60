"""The clock seam and the virtual event loop of `funcpipe.testing`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from funcpipe.policy import REAL_CLOCK, RealClock, sleep_until
from funcpipe.testing import VirtualClock, VirtualEventLoop, VirtualTimeStall, run_virtual


def test_real_clock_reads_the_running_loops_time() -> None:
    async def main() -> tuple[float, float]:
        await asyncio.sleep(12.5)
        return REAL_CLOCK.now(), asyncio.get_running_loop().time()

    clock_now, loop_now = run_virtual(main)

    assert clock_now == loop_now == 12.5


def test_real_clock_outside_a_loop_is_monotonic() -> None:
    first = RealClock().now()

    assert RealClock().now() >= first


async def test_real_clock_sleep_with_a_negative_duration_returns_at_once() -> None:
    before = time.monotonic()

    await RealClock().sleep(-5)

    assert time.monotonic() - before < 1.0


def test_virtual_sleep_takes_no_real_time() -> None:
    before = time.monotonic()

    run_virtual(asyncio.sleep(3600 * 24 * 365))

    assert time.monotonic() - before < 1.0


def test_timers_fire_exactly_at_their_virtual_time() -> None:
    async def main() -> list[tuple[float, float]]:
        clock = VirtualClock()
        woke: list[tuple[float, float]] = []

        async def sleeper(delay: float) -> None:
            await clock.sleep(delay)
            woke.append((delay, clock.now()))

        async with asyncio.TaskGroup() as tg:
            for delay in (3.0, 0.1, 1000.0, 0.3):
                tg.create_task(sleeper(delay))
        return woke

    assert run_virtual(main) == [(0.1, 0.1), (0.3, 0.3), (3.0, 3.0), (1000.0, 1000.0)]


def test_time_stands_still_while_any_task_has_work() -> None:
    async def main() -> tuple[list[float], float]:
        clock = VirtualClock()
        seen: list[float] = []

        async def busy() -> None:
            for _ in range(1000):
                seen.append(clock.now())
                await asyncio.sleep(0)

        async def sleeper() -> float:
            await clock.sleep(1.0)
            return clock.now()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(busy())
            woke = tg.create_task(sleeper())
        return seen, woke.result()

    seen, woke = run_virtual(main)

    assert set(seen) == {0.0}
    assert woke == 1.0


def test_asyncio_timeout_expires_on_virtual_time() -> None:
    async def main() -> float:
        try:
            async with asyncio.timeout(5):
                await asyncio.sleep(10)
        except TimeoutError:
            return VirtualClock().now()
        raise AssertionError("the timeout did not expire")

    assert run_virtual(main) == 5.0


def test_run_virtual_accepts_a_coroutine_function_and_a_start_time() -> None:
    async def main() -> float:
        await asyncio.sleep(1)
        return VirtualClock().now()

    assert run_virtual(main, start=100.0) == 101.0


async def test_virtual_clock_refuses_a_real_loop() -> None:
    with pytest.raises(RuntimeError, match="VirtualEventLoop"):
        VirtualClock().now()


def test_a_deadlock_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(VirtualTimeStall):
        run_virtual(main, stall_timeout=0.0)


def test_real_io_from_a_thread_wakes_the_virtual_loop() -> None:
    async def main() -> int:
        return await asyncio.to_thread(lambda: 42)

    assert run_virtual(main) == 42


def test_sleep_until_lands_at_or_after_its_time_despite_rounding() -> None:
    async def main() -> tuple[float, float]:
        clock = VirtualClock()
        target = clock.now() + 1e-12  # below one ulp of the start time
        await sleep_until(clock, target)
        return clock.now(), target

    now, target = run_virtual(main, start=1e9)

    assert now >= target


@pytest.mark.slow
def test_pytest_asyncio_runs_async_tests_on_the_virtual_loop(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from funcpipe.testing import VirtualEventLoop

            def pytest_asyncio_loop_factories(config, item):
                return {"virtual": VirtualEventLoop}
            """
        )
    )
    (tmp_path / "test_virtual.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            from funcpipe.testing import VirtualClock

            async def test_an_hour_passes_at_once():
                await asyncio.sleep(3600)
                assert VirtualClock().now() == 3600.0
            """
        )
    )

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--asyncio-mode=auto"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_virtual_event_loop_is_an_asyncio_loop() -> None:
    loop = VirtualEventLoop(start=7.0)
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop.time() == 7.0
    finally:
        loop.close()


def test_a_wait_shorter_than_the_clock_resolution_still_moves_time_on() -> None:
    async def main() -> float:
        clock = VirtualClock()
        await sleep_until(clock, 1e-300)
        return clock.now()

    assert run_virtual(main) >= 1e-300


def test_work_in_a_thread_holds_virtual_time_still() -> None:
    # A timer due while a thread works must not fire early: the loop waits for the thread.
    def slow_read() -> str:
        time.sleep(0.2)
        return "read"

    async def main() -> tuple[str, float, bool]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = loop.call_later(0.05, lambda: fired.append(loop.time()))
        got = await asyncio.to_thread(slow_read)
        at = loop.time()
        timer.cancel()
        return got, at, bool(fired)

    got, at, fired = run_virtual(main)

    assert (got, at, fired) == ("read", 0.0, False)


def test_virtual_time_moves_again_once_the_thread_is_done() -> None:
    async def main() -> float:
        await asyncio.to_thread(time.sleep, 0.01)
        await asyncio.sleep(30)
        return asyncio.get_running_loop().time()

    assert run_virtual(main) == 30.0
