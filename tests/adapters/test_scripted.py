"""The ``scripted`` adapter: a provider's answers and faults, in order, mapped as the real HTTP layer maps them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from funcpipe.adapters.config import HashingConfig, OpenAIConfig, ScriptedConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.adapters.openai import create as create_openai
from funcpipe.adapters.scripted import ScriptedAdapter, create
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.policy.clock import REAL_CLOCK
from funcpipe.ports import EmbedPort, GeneratePort, QueryHit
from funcpipe.testing import VirtualClock, run_virtual
from tests.fakes import FakeResources, Fault, OpenAIServer

KEY = "sk-test-0123456789abcdef"
DIM = 16


class _Clocked:
    def __init__(self, clock: object = REAL_CLOCK) -> None:
        self.clock = clock


def _scripted(*steps: object, dim: int = DIM, clock: object = REAL_CLOCK) -> ScriptedAdapter:
    config = ScriptedConfig(provider="openai", dim=dim, script=list(steps))
    return create(config, _Clocked(clock))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=DIM) as s:
        yield s


# Each scripted step next to the fault of the faithful local OpenAI server that it stands for.
PAIRS = [
    ({"status": 429, "retry_after": "7s"}, Fault.rate_limit("7")),
    (503, Fault.server_error(503)),
    (500, Fault.server_error()),
    (401, Fault.auth()),
    (400, Fault.bad_request()),
    ("malformed", Fault.malformed()),
    ("network", Fault.reset()),
]


@pytest.mark.parametrize(("step", "fault"), PAIRS, ids=[str(s) for s, _ in PAIRS])
async def test_a_scripted_fault_is_the_error_the_real_adapter_gets_from_the_provider(
    server: OpenAIServer, client: httpx.AsyncClient, step: object, fault: Fault
) -> None:
    server.reset()
    server.script(fault)
    config = OpenAIConfig(model="text-embedding-test", base_url=server.url, dimensions=DIM)
    real = await create_openai(config, FakeResources(client, {"OPENAI_API_KEY": KEY})).embed_batch(["a text"])()
    fake = await _scripted(step).embed_batch(["a text"])()

    assert isinstance(real, Err) and isinstance(fake, Err)
    assert fake.error.code == real.error.code
    assert fake.error.meta.get("retry_after") == real.error.meta.get("retry_after")
    assert fake.error.meta.get("status") == real.error.meta.get("status")


def test_a_scripted_timeout_is_a_timeout() -> None:
    got = run_virtual(_scripted("timeout").embed_batch(["x"]))

    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


def test_steps_are_taken_in_order_then_every_call_is_ok() -> None:
    adapter = _scripted({"status": 429, "times": 2}, 503, "ok", "malformed")
    codes = []
    for _ in range(6):
        got = run_virtual(adapter.embed_batch(["x"]))
        codes.append(got.error.code if isinstance(got, Err) else "ok")

    assert codes == ["RATE_LIMIT", "RATE_LIMIT", "TRANSIENT", "ok", "SERVICE_SPECIFIC", "ok"]
    assert adapter.calls == 6


def test_ok_answers_are_the_hashing_embedders_vectors() -> None:
    got = run_virtual(_scripted().embed_batch(["the quick brown fox"]))

    assert isinstance(got, Ok)
    [vector] = got.value
    assert isinstance(vector, Ok)
    assert vector.value == HashingEmbedder(HashingConfig(dim=DIM)).embed_text("the quick brown fox")


def test_a_delay_is_spent_on_the_runs_clock() -> None:
    clock = VirtualClock()
    adapter = _scripted({"answer": "ok", "delay": "90s"}, clock=clock)

    async def call() -> float:
        await adapter.embed_batch(["x"])()
        return clock.now()

    assert run_virtual(call) == 90.0


def test_it_generates_too_and_faults_there_as_well() -> None:
    adapter = _scripted(429)
    hit = QueryHit("c1", "s1", "the answer is forty-two", 0.9, {"path": "a.md"})
    first = run_virtual(adapter.generate("p", question="q", hits=[hit]))
    second = run_virtual(adapter.generate("p", question="q", hits=[hit]))

    assert isinstance(first, Err) and first.error.code == ErrCode.RATE_LIMIT
    assert isinstance(second, Ok) and "forty-two" in second.value.text
    assert isinstance(adapter, EmbedPort) and isinstance(adapter, GeneratePort)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("slow", "a step is ok, timeout, network, malformed"),
        ({"answer": "ok", "status": 500}, "either an answer"),
        ({"answer": "ok", "retry_after": "1s"}, "retry_after goes with a status"),
        ({"status": 200}, "greater than or equal to 300"),
        ({"status": 429, "times": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_step_is_refused_with_the_reason(step: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScriptedConfig(script=[step])
