"""The laws the async FuncPipe pages state, checked with Hypothesis on the seed-shaped signatures.

Monad laws for plans and streams (with failures, not only the Ok path),
replayability, resource safety of `async_gen_using` on break, error and
cancellation, the fail-fast and cancel behaviour of the concurrency
combinators, bounded retries, and the equivalence of a page-style adapter
with an in-memory mock once both are seen through `as_embed_port`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcpipe.core import (
    AsyncGen,
    AsyncPlan,
    Err,
    ErrCode,
    ErrInfo,
    Ok,
    ResilienceEnv,
    Result,
    RetryPolicy,
    async_bind,
    async_from_result,
    async_gather,
    async_gen_and_then,
    async_gen_from_list,
    async_gen_map_action,
    async_gen_return,
    async_gen_using,
    async_lift,
    async_map,
    async_pure,
    async_with_resilience,
    collect,
    for_each_par,
    lift_async_item,
    lift_sync,
    race,
    zip_par,
)
from funcpipe.ports import ADAPTER_ERROR_CODES, EmbedPort, as_embed_port
from tests.core._support import Probe, settle
from tests.core.seed_adapter import Embedding, make_openai_embed_adapter
from tests.core.test_seed_examples import StubAsyncClient, make_in_memory_embed_adapter

errinfos = st.builds(ErrInfo, st.sampled_from(sorted(ErrCode.ALL)), st.text(max_size=5))
results = st.one_of(st.integers().map(Ok), errinfos.map(Err))


def _kleisli(table: dict[int, Result[int, ErrInfo]], offset: int) -> Callable[[int], AsyncPlan[int]]:
    # A function to plans that fails on some inputs: the laws must hold with failures too.
    return lambda x: async_from_result(table.get(x % 4, Ok(x + offset)))


kleislis = st.dictionaries(st.integers(0, 3), results, max_size=4)

# ---- plans: monad laws and replayability -----------------------------------------------------


@given(st.integers(), kleislis)
async def test_plan_left_identity(x: int, t: dict[int, Result[int, ErrInfo]]) -> None:
    f = _kleisli(t, 1)
    assert await async_bind(async_pure(x), f)() == await f(x)()


@given(results)
async def test_plan_right_identity(r: Result[int, ErrInfo]) -> None:
    m = async_from_result(r)
    assert await async_bind(m, async_pure)() == await m()


@given(results, kleislis, kleislis)
async def test_plan_associativity(r: Result[int, ErrInfo], tf: dict[int, Any], tg: dict[int, Any]) -> None:
    m, f, g = async_from_result(r), _kleisli(tf, 1), _kleisli(tg, 7)
    assert await async_bind(async_bind(m, f), g)() == await async_bind(m, lambda x: async_bind(f(x), g))()


@given(results)
async def test_every_plan_combinator_replays_with_a_fresh_run(r: Result[int, ErrInfo]) -> None:
    calls = 0

    async def effect() -> Result[int, ErrInfo]:
        nonlocal calls
        calls += 1
        return r

    plans = [
        async_lift(effect),
        async_map(async_lift(effect), lambda v: v * 2),
        async_bind(async_lift(effect), async_pure),
        lift_sync(lambda: r)(),
        async_with_resilience(async_lift(effect), RetryPolicy(max_attempts=2), None, _fast_env()),
    ]
    for plan in plans:
        assert await plan() == await plan()
    assert calls >= 8  # each run called the thunk again


# ---- streams: monad laws with failing items ------------------------------------------------

streams = st.lists(results, max_size=8)


def _src(rs: list[Result[int, ErrInfo]]) -> AsyncGen[int]:
    async def run() -> AsyncIterator[Result[int, ErrInfo]]:
        for r in rs:
            yield r

    return run


def _fanout(k: int) -> Callable[[int], AsyncGen[int]]:
    # 0..2 items per value, one of them failing when the value is a multiple of k.
    def f(x: int) -> AsyncGen[int]:
        items: list[Result[int, ErrInfo]] = [Ok(x + i) for i in range(x % 3)]
        if x % k == 0:
            items.append(Err(ErrInfo(ErrCode.BAD_INPUT, str(x))))
        return _src(items)

    return f


@given(st.integers(-50, 50), st.integers(2, 5))
async def test_stream_left_identity(x: int, k: int) -> None:
    f = _fanout(k)
    assert await collect(async_gen_and_then(async_gen_return(x), f)) == await collect(f(x))


@given(streams)
async def test_stream_right_identity(rs: list[Result[int, ErrInfo]]) -> None:
    assert await collect(async_gen_and_then(_src(rs), async_gen_return)) == rs


@given(streams, st.integers(2, 5), st.integers(2, 5))
async def test_stream_associativity(rs: list[Result[int, ErrInfo]], k1: int, k2: int) -> None:
    f, g = _fanout(k1), _fanout(k2)
    left = async_gen_and_then(async_gen_and_then(_src(rs), f), g)
    right = async_gen_and_then(_src(rs), lambda x: async_gen_and_then(f(x), g))
    assert await collect(left) == await collect(right)


@given(streams)
async def test_an_err_passes_and_its_inner_stream_never_starts(rs: list[Result[int, ErrInfo]]) -> None:
    started: list[int] = []

    def f(x: int) -> AsyncGen[int]:
        started.append(x)
        return async_gen_return(x)

    out = await collect(async_gen_and_then(_src(rs), f))
    assert out == rs
    assert started == [r.value for r in rs if isinstance(r, Ok)]


@given(streams)
async def test_lifted_items_and_mapped_actions_replay(rs: list[Result[int, ErrInfo]]) -> None:
    async def double(x: int) -> Result[int, ErrInfo]:
        return Ok(2 * x)

    gens = [
        async_gen_and_then(_src(rs), lift_async_item(double)),
        async_gen_map_action(_src(rs), lambda x: async_pure(2 * x)),
    ]
    for gen in gens:
        first = await collect(gen)
        assert first == await collect(gen)
        assert first == [r.map(lambda v: 2 * v) for r in rs]


@given(st.lists(st.integers(), max_size=10), st.integers(0, 10))
async def test_streams_are_lazy_an_early_close_pulls_nothing_more(xs: list[int], take: int) -> None:
    probe = Probe()
    it = async_gen_and_then(probe.stream(xs), async_gen_return)()
    got = []
    async for r in it:
        if len(got) == take:
            break
        got.append(r)
    await it.aclose()
    assert probe.pulls == min(len(xs), take + 1)


# ---- async_gen_using: resource safety ------------------------------------------------------


class _Resource:
    """An async context manager that records how each use ended."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> _Resource:
        self.log.append("enter")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.log.append("exit" if exc_type is None else f"exit {exc_type.__name__}")


@given(st.lists(st.integers(), min_size=1, max_size=8), st.data())
async def test_using_releases_exactly_once_on_early_close(xs: list[int], data: st.DataObject) -> None:
    stop = data.draw(st.integers(0, len(xs) - 1))
    log: list[str] = []
    touched_after_release: list[int] = []

    def make_stream(res: _Resource) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            for x in xs:
                if log[-1] != "enter":
                    touched_after_release.append(x)
                yield Ok(x)

        return run

    it = async_gen_using(lambda: _Resource(log), make_stream)()
    async for r in it:
        if r == Ok(xs[stop]):
            break
    await it.aclose()
    assert log[0] == "enter" and len(log) == 2 and log[1].startswith("exit")
    assert touched_after_release == []


@given(st.lists(st.integers(), max_size=8))
async def test_using_releases_on_normal_end_and_replays_with_a_fresh_resource(xs: list[int]) -> None:
    log: list[str] = []
    gen = async_gen_using(lambda: _Resource(log), lambda _: async_gen_from_list(xs))
    assert await collect(gen) == [Ok(x) for x in xs]
    assert await collect(gen) == [Ok(x) for x in xs]
    assert log == ["enter", "exit", "enter", "exit"]


@given(st.integers(0, 5))
async def test_using_releases_on_an_error_and_the_error_propagates(at: int) -> None:
    log: list[str] = []

    def make_stream(_: _Resource) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            for i in range(at):
                yield Ok(i)
            raise RuntimeError("inner stream broke")

        return run

    with pytest.raises(RuntimeError, match="inner stream broke"):
        await collect(async_gen_using(lambda: _Resource(log), make_stream))
    assert log == ["enter", "exit RuntimeError"]


async def test_using_releases_on_cancellation() -> None:
    log: list[str] = []
    reached = asyncio.Event()

    def make_stream(_: _Resource) -> AsyncGen[int]:
        async def run() -> AsyncIterator[Result[int, ErrInfo]]:
            yield Ok(1)
            reached.set()
            await asyncio.Event().wait()
            yield Ok(2)  # pragma: no cover - cancelled before

        return run

    task = asyncio.ensure_future(collect(async_gen_using(lambda: _Resource(log), make_stream)))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["enter", "exit CancelledError"]


# ---- concurrency: fail fast, cancel, bounds ------------------------------------------------


def _after(delay_steps: int, r: Result[int, ErrInfo], log: list[str], name: str) -> AsyncPlan[int]:
    async def run() -> Result[int, ErrInfo]:
        try:
            for _ in range(delay_steps):
                await asyncio.sleep(0)
            return r
        except asyncio.CancelledError:
            log.append(name)
            raise

    return run


@given(st.lists(st.tuples(st.integers(0, 5), results), min_size=1, max_size=8))
async def test_async_gather_gives_values_or_the_first_failure_by_index(cases: list[tuple[int, Any]]) -> None:
    log: list[str] = []
    res = await async_gather([_after(d, r, log, str(i)) for i, (d, r) in enumerate(cases)], concurrency=3)()
    failures = [r for _, r in cases if isinstance(r, Err)]
    assert res == (failures[0] if failures else Ok([r.value for _, r in cases]))
    assert log == []  # every plan ran to its end


@given(st.lists(st.integers(0, 3), min_size=2, max_size=8), st.data())
async def test_for_each_par_fails_fast_and_cancels_the_rest(delays: list[int], data: st.DataObject) -> None:
    bad = data.draw(st.integers(0, len(delays) - 1))
    probe = Probe()
    blocked_started = asyncio.Event()
    log: list[str] = []

    def effect_fn(i: int) -> AsyncPlan[int]:
        if i == bad:
            return _after(delays[i], Err(ErrInfo(ErrCode.AUTH, "no")), log, str(i))
        if i == (bad + 1) % len(delays):
            return probe.blocked(blocked_started, str(i))  # type: ignore[return-value]
        return _after(delays[i], Ok(i), log, str(i))

    before = asyncio.all_tasks()
    res = await for_each_par(range(len(delays)), effect_fn, parallelism=len(delays))()
    assert res == Err(ErrInfo(ErrCode.AUTH, "no"))
    assert probe.cancelled == 1  # the one still waiting was cancelled
    assert asyncio.all_tasks() == before


@given(st.integers(1, 20), st.integers(1, 6))
async def test_for_each_par_never_exceeds_parallelism(n: int, bound: int) -> None:
    probe = Probe()
    res = await for_each_par(range(n), lambda i: probe.plan(i, yields=2), parallelism=bound)()
    assert res == Ok(list(range(n)))
    assert probe.max_in_flight <= bound


async def test_zip_par_fails_fast_and_race_cancels_the_losers() -> None:
    probe = Probe()
    started = asyncio.Event()
    before = asyncio.all_tasks()
    failed = await zip_par(probe.blocked(started, "zip"), async_from_result(Err(ErrInfo(ErrCode.AUTH, "x"))))()
    assert failed == Err(ErrInfo(ErrCode.AUTH, "x"))
    won = await race(probe.blocked(asyncio.Event(), "race"), async_pure(1))()
    assert won == Ok(1)
    assert probe.events == ["cancelled zip", "cancelled race"]
    assert asyncio.all_tasks() == before


@pytest.mark.parametrize(
    "make",
    [
        lambda p, s: for_each_par(range(3), lambda i: p.blocked(s[i], str(i)), parallelism=3),
        lambda p, s: async_gather([p.blocked(e, str(i)) for i, e in enumerate(s)]),
        lambda p, s: race(*[p.blocked(e, str(i)) for i, e in enumerate(s)]),
        lambda p, s: zip_par(*[p.blocked(e, str(i)) for i, e in enumerate(s)]),
    ],
    ids=["for_each_par", "async_gather", "race", "zip_par"],
)
async def test_cancelling_the_caller_cancels_every_child(make: Callable[..., AsyncPlan[Any]]) -> None:
    probe = Probe()
    started = [asyncio.Event() for _ in range(3)]
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(make(probe, started)())
    for e in started:
        await e.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert probe.cancelled == 3
    assert asyncio.all_tasks() == before


# ---- resilience: bounded attempts ----------------------------------------------------------


def _fast_env() -> ResilienceEnv:
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return ResilienceEnv(Random(0), no_sleep)


@given(st.integers(1, 6), st.integers(1, 8))
async def test_retry_stops_at_the_first_success_and_never_exceeds_max_attempts(max_attempts: int, ok_at: int) -> None:
    calls = 0

    async def flaky() -> Result[int, ErrInfo]:
        nonlocal calls
        calls += 1
        return Ok(calls) if calls >= ok_at else Err(ErrInfo(ErrCode.TRANSIENT, "again"))

    res = await async_with_resilience(lambda: flaky(), RetryPolicy(max_attempts=max_attempts), None, _fast_env())()
    if ok_at <= max_attempts:
        assert res == Ok(ok_at) and calls == ok_at
    else:
        assert isinstance(res, Err) and res.error.code == ErrCode.MAX_RETRIES
        assert res.error.meta["attempts"] == max_attempts == calls
        assert res.error.meta["cause"] == ErrInfo(ErrCode.TRANSIENT, "again")


# ---- adapters: mock equivalence and the taxonomy -------------------------------------------


@given(st.lists(st.text(max_size=10), max_size=12))
async def test_page_adapter_and_mock_are_equivalent_through_funcpipes_port(texts: list[str]) -> None:
    stub = StubAsyncClient(responses=[{"data": [{"embedding": [0.1] * 8} for _ in texts]}])
    real: EmbedPort = as_embed_port(make_openai_embed_adapter(stub), kind="openai", model="m")  # type: ignore[arg-type]
    fake = as_embed_port(_MockEmbed(8), kind="openai", model="m")
    assert isinstance(real, EmbedPort) and isinstance(fake, EmbedPort)
    r1, r2 = await real.embed_batch(texts)(), await fake.embed_batch(texts)()
    assert r1 == r2
    if texts:
        assert real.fingerprint == fake.fingerprint and real.fingerprint.dim == 8


class _MockEmbed:
    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed_batch(self, texts: list[str]) -> AsyncPlan[list[Result[Any, ErrInfo]]]:
        async def run() -> Result[list[Result[Any, ErrInfo]], ErrInfo]:
            return Ok([Ok(Embedding(tuple([0.1] * self.dim), "m")) for _ in texts])

        return run


async def test_the_in_memory_mock_of_the_page_matches_its_stubbed_adapter() -> None:
    texts = ["a", "b"]
    stub = StubAsyncClient(responses=[{"data": [{"embedding": [0.1] * 1536} for _ in texts]}])
    r1 = await make_openai_embed_adapter(stub).embed_batch(texts)()  # type: ignore[arg-type]
    r2 = await make_in_memory_embed_adapter().embed_batch(texts)()
    assert r1 == r2


@pytest.mark.parametrize(
    ("status", "headers", "code", "retry_after"),
    [(429, {"retry-after": "2"}, ErrCode.RATE_LIMIT, 2.0), (401, {}, ErrCode.AUTH, None), (503, {}, "TRANSIENT", None)],
)
async def test_page_adapter_failures_carry_taxonomy_codes(
    status: int, headers: dict[str, str], code: str, retry_after: float | None
) -> None:
    class _Failing(StubAsyncClient):
        async def post(self, path: str, json: dict[str, Any]) -> Any:
            resp = await super().post(path, json)
            resp.status_code = status
            resp.headers = headers
            return resp

    port = as_embed_port(make_openai_embed_adapter(_Failing([{}])), kind="openai", model="m")  # type: ignore[arg-type]
    res = await port.embed_batch(["x"])()
    assert isinstance(res, Err) and res.error.code == code and code in ADAPTER_ERROR_CODES
    assert res.error.meta.get("retry_after") == retry_after


async def test_as_embed_port_rejects_a_wrong_count_or_dimension() -> None:
    class _Odd:
        def embed_batch(self, texts: list[str]) -> AsyncPlan[list[Result[Any, ErrInfo]]]:
            return async_pure([Ok([float(i)] * (1 + i)) for i, _ in enumerate(texts)])

    port = as_embed_port(_Odd(), kind="odd", model="m")
    res = await port.embed_batch(["a", "b"])()
    assert isinstance(res, Ok)
    assert res.value[0] == Ok((0.0,))
    assert isinstance(res.value[1], Err) and res.value[1].error.code == ErrCode.SERVICE_SPECIFIC

    class _Short:
        def embed_batch(self, texts: list[str]) -> AsyncPlan[list[Result[Any, ErrInfo]]]:
            return async_pure([Ok([1.0])])

    wrong = await as_embed_port(_Short(), kind="short", model="m").embed_batch(["a", "b"])()
    assert isinstance(wrong, Err) and wrong.error.code == ErrCode.SERVICE_SPECIFIC
