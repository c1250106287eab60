"""Throughput and overhead of funcpipe's policies against hand-written code and peers' libraries.

Prints, measured in one run:

1. items/s through 4 chained pure ``async_gen_map`` stages against 4
   hand-written async generators (target: a ratio of at least 0.5);
2. items/s through 4 chained async stages at concurrency 16 with
   ``apply_stream_policy``, against a semaphore + ``asyncio.gather`` per
   stage and, when it is installed, aiostream's ``pipe.map(task_limit=16)``
   (targets: at least 100,000 items/s and 5x the baseline). It is measured
   twice: with a plan that completes at once, and with one that awaits
   ``asyncio.sleep(0)``, so yields to the event loop once per call;
3. the rate a `PolicyRuntime` with ``rate_limit: {requests: 200, per: 1s}``
   achieves on the real clock, saturated by 16 callers, with aiolimiter's
   ``AsyncLimiter(200, 1)`` beside it when installed;
4. the overhead per call of ``apply_policy`` against the bare call: with only
   ``concurrency``, and with every call-level policy set (timeout, retry, an
   unreachable rate limit, breaker, concurrency), first with no event sink
   and then with events kept in a list, as the runner's sink does.

Rates are the best of ``--repeat`` runs. The two slowest chains (aiostream's,
and the stages through a `PolicyRuntime`) carry ``--slow-n`` items, to keep
the run short. Run it as ``python bench/policies.py`` (about a
minute), or shorten the limiter's run with ``--limiter-seconds 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from funcpipe.core import AsyncGen, AsyncPlan, ErrInfo, Ok, Result, async_gen_from_iterable, async_gen_map
from funcpipe.policy import Event, PolicyRuntime, null_sink
from funcpipe.policy.models import Backoff, CircuitBreaker, Policy, RateLimit, Retry, Timeout
from funcpipe.policy.stream import apply_stream_policy

STAGES = 4
CONCURRENCY = 16
PURE_TARGET = 0.5
ASYNC_TARGET_RATE = 100_000
ASYNC_TARGET_RATIO = 5.0


@dataclass(frozen=True, slots=True)
class Rate:
    """How many items went through in how long, and their checksum (to check the work was done)."""

    items: int
    seconds: float
    checksum: int

    @property
    def per_second(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.seconds > 0 else float("inf")


async def settle() -> None:
    """Free what earlier measurements left before the next one starts its clock.

    Code resumed by a finished ``asyncio.gather`` runs inside the loop's
    callback that holds the gather, and with it every task it ran, until the
    next suspension: 100,000 tasks freed then cost about 0.1 s of whatever is
    being timed. Yielding once lets the loop drop them first.
    """
    await asyncio.sleep(0)
    gc.collect()


async def best_of(repeat: int, measure: Callable[[], Awaitable[Rate]]) -> Rate:
    """The fastest of ``repeat`` runs (the others were slowed by something else)."""
    best: Rate | None = None
    for _ in range(repeat):
        await settle()
        r = await measure()
        if best is None or r.seconds < best.seconds:
            best = r
    assert best is not None
    return best


async def drain_results(gen: AsyncGen[int]) -> Rate:
    """Time draining a funcpipe stream of ints."""
    total = count = 0
    start = time.perf_counter()
    async for r in gen():
        total += r.unwrap()
        count += 1
    return Rate(count, time.perf_counter() - start, total)


async def drain_values(it: AsyncIterator[int]) -> Rate:
    """Time draining a plain async iterator of ints."""
    total = count = 0
    start = time.perf_counter()
    async for x in it:
        total += x
        count += 1
    return Rate(count, time.perf_counter() - start, total)


# --- 1. pure map stages -----------------------------------------------------------------


def _inc(x: int) -> int:
    return x + 1


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def _plus_one(upstream: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in upstream:
        yield x + 1


async def pure_funcpipe(n: int) -> Rate:
    """``range(n)`` through `STAGES` chained `async_gen_map` stages."""
    gen: AsyncGen[int] = async_gen_from_iterable(range(n))
    for _ in range(STAGES):
        gen = async_gen_map(gen, _inc)
    return await drain_results(gen)


async def pure_handwritten(n: int) -> Rate:
    """The same as plain async generators, without `Result` values."""
    it: AsyncIterator[int] = _numbers(n)
    for _ in range(STAGES):
        it = _plus_one(it)
    return await drain_values(it)


# --- 2. async stages at concurrency 16 ------------------------------------------------------


def ready_plan(x: int) -> AsyncPlan[int]:
    """A call that completes at once."""

    async def run() -> Result[int, ErrInfo]:
        return Ok(x + 1)

    return run


def yielding_plan(x: int) -> AsyncPlan[int]:
    """A call that yields to the event loop once, as any real I/O does."""

    async def run() -> Result[int, ErrInfo]:
        await asyncio.sleep(0)
        return Ok(x + 1)

    return run


async def ready_fn(x: int) -> int:
    """`ready_plan` as a plain coroutine function, for the baselines."""
    return x + 1


async def yielding_fn(x: int) -> int:
    """`yielding_plan` as a plain coroutine function, for the baselines."""
    await asyncio.sleep(0)
    return x + 1


async def stages_funcpipe(n: int, plan: Callable[[int], AsyncPlan[int]], with_runtime: bool) -> Rate:
    """`STAGES` chained `apply_stream_policy` stages at concurrency `CONCURRENCY`."""
    policy = Policy(concurrency=CONCURRENCY)
    gen: AsyncGen[int] = async_gen_from_iterable(range(n))
    for _ in range(STAGES):
        runtime = PolicyRuntime(policy) if with_runtime else None
        gen = apply_stream_policy(policy, gen, plan, runtime=runtime)
    return await drain_results(gen)


async def stages_gather(n: int, fn: Callable[[int], Awaitable[int]]) -> Rate:
    """Each stage a semaphore-bounded `asyncio.gather` over every item: the usual hand-written code."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def bounded(x: int) -> int:
        async with sem:
            return await fn(x)

    start = time.perf_counter()
    xs = list(range(n))
    for _ in range(STAGES):
        xs = await asyncio.gather(*(bounded(x) for x in xs))
    return Rate(len(xs), time.perf_counter() - start, sum(xs))


async def loop_ceiling(n: int, plan: Callable[[int], AsyncPlan[int]]) -> Rate:
    """`CONCURRENCY` tasks taking items off one list through `STAGES` calls each, with no stream.

    No scheduler on this event loop runs these calls faster: it is the
    ceiling the streams are measured against.
    """
    work = list(range(n))
    work.reverse()
    total = 0

    async def worker() -> None:
        nonlocal total
        while work:
            x = work.pop()
            for _ in range(STAGES):
                x = (await plan(x)()).unwrap()
            total += x

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Rate(n, time.perf_counter() - start, total)


async def stages_aiostream(n: int, fn: Callable[[int], Awaitable[int]]) -> Rate:
    """`STAGES` chained aiostream ``pipe.map(task_limit=CONCURRENCY)`` stages."""
    aiostream: Any = importlib.import_module("aiostream")
    xs = aiostream.stream.iterate(range(n))
    for _ in range(STAGES):
        xs = xs | aiostream.pipe.map(fn, task_limit=CONCURRENCY)
    async with xs.stream() as it:
        return await drain_values(it)


# --- 3. the rate limiter ------------------------------------------------------------------


async def saturate(seconds: float, acquire: Callable[[], Awaitable[None]]) -> int:
    """Calls started in ``seconds`` by `CONCURRENCY` callers that each call as fast as allowed."""
    starts: list[float] = []
    await settle()
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while True:
            await acquire()
            now = time.perf_counter()
            if now >= deadline:
                return
            starts.append(now)

    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return len(starts)


async def limiter_funcpipe(rate: int, seconds: float) -> int:
    """Calls a saturated `PolicyRuntime` with ``rate_limit: {requests: rate, per: 1s}`` lets start."""
    runtime = PolicyRuntime(Policy(rate_limit=RateLimit(requests=rate, per=1.0)))
    call = runtime.apply(_noop)

    async def acquire() -> None:
        await call()

    return await saturate(seconds, acquire)


async def limiter_aiolimiter(rate: int, seconds: float) -> int:
    """Calls a saturated aiolimiter ``AsyncLimiter(rate, 1)`` lets start."""
    aiolimiter: Any = importlib.import_module("aiolimiter")
    limiter = aiolimiter.AsyncLimiter(rate, 1)

    async def acquire() -> None:
        await limiter.acquire()

    return await saturate(seconds, acquire)


async def _noop() -> Result[None, ErrInfo]:
    return Ok(None)


# --- 4. apply_policy's overhead -------------------------------------------------------------------

EVERY_POLICY = Policy(
    timeout=Timeout(attempt=60.0, total=600.0),
    retry=Retry(max_attempts=3, backoff=Backoff(kind="exponential")),
    # The largest values the model allows: a billion calls a second, never reached here.
    rate_limit=RateLimit(requests=1_000_000, per=0.001, burst=100_000),
    circuit_breaker=CircuitBreaker(),
    concurrency=CONCURRENCY,
)


async def per_call_bare(calls: int) -> float:
    """Seconds per bare call of `_noop`."""
    start = time.perf_counter()
    for _ in range(calls):
        await _noop()
    return (time.perf_counter() - start) / calls


CONCURRENCY_ONLY = Policy(concurrency=CONCURRENCY)


async def per_call_governed(calls: int, policy: Policy = EVERY_POLICY, events: bool = False) -> float:
    """Seconds per call of `_noop` wrapped afresh by ``apply`` with ``policy``, as a stage does."""
    kept: list[Event] = []
    runtime = PolicyRuntime(policy, events=kept.append if events else null_sink)
    start = time.perf_counter()
    for _ in range(calls):
        await runtime.apply(_noop)()
    return (time.perf_counter() - start) / calls


# --- the report -----------------------------------------------------------------------------------


def installed(name: str) -> bool:
    """Whether the optional peer library ``name`` can be imported."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def verdict(ok: bool) -> str:
    return "ok" if ok else "below target"


def expected(n: int) -> int:
    """The checksum of ``range(n)`` after `STAGES` stages adding one each."""
    return n * (n - 1) // 2 + STAGES * n


def checked(rate: Rate) -> Rate:
    """``rate``, once its checksum shows every item went through every stage."""
    assert rate.checksum == expected(rate.items), rate
    return rate


async def report(args: argparse.Namespace) -> None:
    n, slow, repeat = args.n, min(args.n, args.slow_n), args.repeat
    print(
        f"items: {n} ({slow} through aiostream and the PolicyRuntime), "
        f"stages: {STAGES}, concurrency: {CONCURRENCY}, best of {repeat}"
    )

    fp = checked(await best_of(repeat, functools.partial(pure_funcpipe, n)))
    hw = checked(await best_of(repeat, functools.partial(pure_handwritten, n)))
    ratio = fp.per_second / hw.per_second
    print("pure map stages")
    print(f"  funcpipe async_gen_map: {fp.per_second:,.0f} items/s")
    print(f"  hand-written async generators: {hw.per_second:,.0f} items/s")
    print(f"  ratio: {ratio:.2f}x (target >= {PURE_TARGET}x: {verdict(ratio >= PURE_TARGET)})")

    for label, plan, fn in (
        ("a call that completes at once", ready_plan, ready_fn),
        ("a call that awaits asyncio.sleep(0)", yielding_plan, yielding_fn),
    ):
        ceiling = checked(await best_of(repeat, functools.partial(loop_ceiling, n, plan)))
        ours = checked(await best_of(repeat, functools.partial(stages_funcpipe, n, plan, False)))
        governed = checked(await best_of(repeat, functools.partial(stages_funcpipe, slow, plan, True)))
        base = checked(await best_of(repeat, functools.partial(stages_gather, n, fn)))
        print(f"async stages at concurrency {CONCURRENCY}, {label}")
        print(f"  the event loop's ceiling, {CONCURRENCY} tasks and no stream: {ceiling.per_second:,.0f} items/s")
        print(f"  funcpipe apply_stream_policy: {ours.per_second:,.0f} items/s")
        print(f"  funcpipe apply_stream_policy through a PolicyRuntime: {governed.per_second:,.0f} items/s")
        print(f"  semaphore + asyncio.gather: {base.per_second:,.0f} items/s")
        if installed("aiostream"):
            peer = checked(await best_of(repeat, functools.partial(stages_aiostream, slow, fn)))
            print(f"  aiostream pipe.map(task_limit={CONCURRENCY}): {peer.per_second:,.0f} items/s")
        else:
            print("  aiostream pipe.map: not installed")
        speedup = ours.per_second / base.per_second
        met = ours.per_second >= ASYNC_TARGET_RATE and speedup >= ASYNC_TARGET_RATIO
        print(
            f"  funcpipe / baseline: {speedup:.2f}x "
            f"(targets >= {ASYNC_TARGET_RATE:,} items/s and >= {ASYNC_TARGET_RATIO:g}x: {verdict(met)})"
        )

    rate, seconds = args.limiter_rate, args.limiter_seconds
    print(f"rate limiter at {rate}/s for {seconds:g} s on the real clock, {CONCURRENCY} callers")
    calls = await limiter_funcpipe(rate, seconds)
    print(f"  funcpipe PolicyRuntime: {calls / seconds:,.1f}/s ({calls / seconds / rate:.1%} of configured)")
    if installed("aiolimiter"):
        calls = await limiter_aiolimiter(rate, seconds)
        print(f"  aiolimiter AsyncLimiter: {calls / seconds:,.1f}/s ({calls / seconds / rate:.1%} of configured)")
    else:
        print("  aiolimiter AsyncLimiter: not installed")

    await settle()
    bare = min([await per_call_bare(args.calls) for _ in range(repeat)])
    print("apply_policy overhead per call")
    print(f"  bare call: {bare * 1e6:.2f} us")
    for label, policy, events in (
        ("concurrency only", CONCURRENCY_ONLY, False),
        ("every call-level policy set", EVERY_POLICY, False),
        ("every call-level policy set, events kept", EVERY_POLICY, True),
    ):
        governed_call = min([await per_call_governed(args.calls, policy, events) for _ in range(repeat)])
        print(f"  {label}: {governed_call * 1e6:.2f} us (+{(governed_call - bare) * 1e6:.2f} us)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="items through each chain")
    parser.add_argument("--slow-n", type=int, default=10_000, help="items through aiostream and the PolicyRuntime")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--limiter-seconds", type=float, default=10.0, help="how long to saturate the limiter")
    parser.add_argument("--limiter-rate", type=int, default=200, help="the limiter's configured rate per second")
    parser.add_argument("--calls", type=int, default=50_000, help="calls timed for apply_policy's overhead")
    args = parser.parse_args(argv)
    if min(args.n, args.slow_n, args.repeat, args.limiter_rate, args.calls) < 1 or args.limiter_seconds <= 0:
        parser.error("--n, --slow-n, --repeat, --limiter-rate, --calls and --limiter-seconds must be positive")
    asyncio.run(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
