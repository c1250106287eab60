"""The ``openai`` adapter against a faithful local OpenAI server (funcpipe.adapters.openai)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.adapters.config import HashingConfig, OpenAIConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.adapters.openai import OpenAIAdapter, create, decode_base64_f32, parse_chat, parse_embeddings
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.errors import SpecError
from funcpipe.ports import EmbedPort, Fingerprint, GeneratePort
from tests.fakes import EMBED_FAULT_CODES, FAULT_CODES, FakeResources, Fault, OpenAIServer, local_client

KEY = "sk-test-0123456789abcdef"
DIM = 32
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "embeddings meet their vectors"]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=DIM) as s:
        yield s


@pytest.fixture
def server(shared_server: OpenAIServer) -> OpenAIServer:
    shared_server.reset()
    return shared_server


def _adapter(server: OpenAIServer, client: httpx.AsyncClient, key: str = KEY, **fields: Any) -> OpenAIAdapter:
    config = OpenAIConfig(model="text-embedding-test", base_url=server.url, dimensions=DIM, **fields)
    return create(config, FakeResources(client, {"OPENAI_API_KEY": key}))


def _hashing(texts: list[str], dim: int = DIM) -> list[list[float]]:
    embedder = HashingEmbedder(HashingConfig(dim=dim))
    return [embedder.embed_text(t) for t in texts]


def _f32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


# -- the factory and the ports -------------------------------------------------------------


def test_create_gives_both_ports(server: OpenAIServer) -> None:
    adapter = create(OpenAIConfig(model="m", dimensions=8), FakeResources(local_client()))
    assert isinstance(adapter, EmbedPort) and isinstance(adapter, GeneratePort)


def test_fingerprint_uses_the_configured_dimensions() -> None:
    adapter = create(OpenAIConfig(model="text-embedding-3-large", dimensions=256), FakeResources(local_client()))
    assert adapter.fingerprint == Fingerprint("openai", "text-embedding-3-large", 256)


@pytest.mark.parametrize(
    ("model", "dim"),
    [("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536)],
)
def test_fingerprint_of_a_known_model_needs_no_dimensions(model: str, dim: int) -> None:
    adapter = create(OpenAIConfig(model=model), FakeResources(local_client()))
    assert adapter.fingerprint.dim == dim


def test_fingerprint_of_an_unknown_model_without_dimensions_asks_for_them() -> None:
    adapter = create(OpenAIConfig(model="bge-small"), FakeResources(local_client()))
    with pytest.raises(SpecError, match="bge-small") as info:
        _ = adapter.fingerprint
    assert info.value.hint is not None and "dimensions" in info.value.hint


def test_max_batch_comes_from_the_config() -> None:
    adapter = create(OpenAIConfig(model="m", max_batch=16), FakeResources(local_client()))
    assert adapter.max_batch == 16


# -- embeddings: request shape -------------------------------------------------------------


async def test_embeddings_request_has_the_shape_openai_requires(
    server: OpenAIServer, client: httpx.AsyncClient
) -> None:
    await _adapter(server, client).embed_batch(TEXTS)()
    (request,) = server.requests
    assert (request.path, request.headers["authorization"], request.json()) == (
        "/v1/embeddings",
        f"Bearer {KEY}",
        {"model": "text-embedding-test", "input": TEXTS, "encoding_format": "base64", "dimensions": DIM},
    )


async def test_dimensions_are_not_sent_when_not_configured(client: httpx.AsyncClient) -> None:
    with OpenAIServer(api_key=KEY, dim=1536) as server:
        config = OpenAIConfig(model="text-embedding-3-small", base_url=server.url, encoding_format="float")
        got = await create(config, FakeResources(client, {"OPENAI_API_KEY": KEY})).embed_batch(["a b"])()
        assert isinstance(got, Ok) and "dimensions" not in server.bodies()[0]


async def test_extra_headers_are_sent(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    await _adapter(server, client, headers={"OpenAI-Organization": "org-1"}).embed_batch(["x"])()
    assert server.requests[0].headers["openai-organization"] == "org-1"


async def test_no_authorization_is_sent_without_a_key_variable(client: httpx.AsyncClient) -> None:
    with OpenAIServer(api_key=None, dim=DIM) as server:
        config = OpenAIConfig(model="m", base_url=server.url, dimensions=DIM, api_key_env=None)
        got = await create(config, FakeResources(client, {})).embed_batch(["x"])()
        assert isinstance(got, Ok) and "authorization" not in server.requests[0].headers


async def test_unset_key_variable_is_auth_and_sends_nothing(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    config = OpenAIConfig(model="m", base_url=server.url, dimensions=DIM, api_key_env="MY_OPENAI_KEY")
    got = await create(config, FakeResources(client, {})).embed_batch(["x"])()
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH and "MY_OPENAI_KEY" in got.error.msg
    assert server.count() == 0


async def test_requests_are_split_at_max_batch(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    texts = [f"text number {i}" for i in range(7)]
    got = await _adapter(server, client, max_batch=3).embed_batch(texts)()
    assert [len(b["input"]) for b in server.bodies()] == [3, 3, 1]
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [_f32(v) for v in _hashing(texts)]


async def test_empty_texts_are_bad_input_and_not_sent(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client).embed_batch(["a fox", "", "a dog"])()
    assert isinstance(got, Ok) and [r.is_ok() for r in got.value] == [True, False, True]
    assert server.bodies()[0]["input"] == ["a fox", "a dog"]


async def test_no_texts_make_no_request(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    assert await _adapter(server, client).embed_batch([])() == Ok([])
    assert server.count() == 0


# -- embeddings: answers -------------------------------------------------------------------


async def test_float_vectors_equal_hashing_exactly(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client, encoding_format="float").embed_batch(TEXTS)()
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == _hashing(TEXTS)


async def test_base64_vectors_equal_hashing_at_float32_precision(
    server: OpenAIServer, client: httpx.AsyncClient
) -> None:
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [_f32(v) for v in _hashing(TEXTS)]


async def test_answers_are_put_back_in_input_order_by_index(client: httpx.AsyncClient) -> None:
    with OpenAIServer(api_key=KEY, dim=DIM, shuffle=True) as server:
        got = await _adapter(server, client, encoding_format="float").embed_batch(TEXTS)()
        assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == _hashing(TEXTS)


@settings(max_examples=60, derandomize=True)
@given(st.lists(st.floats(width=32, allow_nan=False), max_size=64))
def test_base64_float32_round_trips(vector: list[float]) -> None:
    encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    assert decode_base64_f32(encoded) == vector


@pytest.mark.parametrize("data", ["not base64!", base64.b64encode(b"abc").decode()], ids=["alphabet", "length"])
def test_base64_that_is_not_float32_is_rejected(data: str) -> None:
    assert decode_base64_f32(data) is None


@settings(max_examples=40, derandomize=True)
@given(st.permutations(range(5)))
def test_parse_orders_by_index_whatever_the_answer_order(order: list[int]) -> None:
    payload = {"data": [{"index": i, "embedding": [float(i), 0.0]} for i in order]}
    assert parse_embeddings(payload, count=5, dim=2) == Ok([[float(i), 0.0] for i in range(5)])


@pytest.mark.parametrize(
    "data",
    [
        [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}],
        [{"index": 0, "embedding": [1.0]}, {"index": 2, "embedding": [1.0]}],
        [{"index": "0", "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}],
        [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "!!"}],
    ],
    ids=["duplicate", "out-of-range", "not-int", "bad-base64"],
)
def test_parse_rejects_bad_indices_and_encodings(data: list[dict[str, object]]) -> None:
    got = parse_embeddings({"data": data}, count=2, dim=1)
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC


# -- embeddings: faults --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fault", "code"), EMBED_FAULT_CODES, ids=[n for n, _, _ in EMBED_FAULT_CODES])
async def test_embeddings_fault_maps_to_its_code(
    server: OpenAIServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == code


async def test_rate_limit_carries_retry_after(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.rate_limit("7"))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.meta["retry_after"] == 7.0


async def test_rate_limit_reads_openai_reset_headers(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.rate_limit(None, x_ratelimit_remaining_requests="0", x_ratelimit_reset_requests="1s500ms"))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.meta["retry_after"] == 1.5


async def test_throttled_server_answers_429_with_a_precise_hint(
    server: OpenAIServer, client: httpx.AsyncClient
) -> None:
    server.throttle(rate=1)
    adapter = _adapter(server, client)
    await adapter.embed_batch(["a"])()
    got = await adapter.embed_batch(["a"])()
    assert isinstance(got, Err) and got.error.code == ErrCode.RATE_LIMIT
    assert 0 < float(got.error.meta["retry_after"]) <= 1.0  # type: ignore[arg-type]


async def test_slow_answer_is_timeout(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(5.0))
    got = await _adapter(server, client, request_timeout=0.2).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


async def test_slow_answer_within_the_timeout_succeeds(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(0.05))
    assert isinstance(await _adapter(server, client).embed_batch(TEXTS)(), Ok)


async def test_wrong_key_is_auth_with_the_providers_message(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client, key="sk-wrong-key-000000").embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH
    assert (got.error.meta["status"], got.error.meta["error_type"]) == (401, "invalid_api_key")
    assert "Incorrect API key provided" in str(got.error.meta["provider_message"])


async def test_unknown_model_is_service_specific(client: httpx.AsyncClient) -> None:
    with OpenAIServer(api_key=KEY, dim=DIM, models=["text-embedding-3-small"]) as server:
        got = await _adapter(server, client).embed_batch(TEXTS)()
        assert isinstance(got, Err) and (got.error.code, got.error.meta["status"]) == (ErrCode.SERVICE_SPECIFIC, 404)


async def test_the_plan_is_replayable_after_a_fault(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.server_error())
    plan = _adapter(server, client).embed_batch(TEXTS)
    first, second = await plan(), await plan()
    assert isinstance(first, Err) and isinstance(second, Ok) and server.count() == 2


# -- chat ----------------------------------------------------------------------------------


def _chat(server: OpenAIServer, client: httpx.AsyncClient, key: str = KEY, **fields: Any) -> OpenAIAdapter:
    config = OpenAIConfig(model="gpt-test", base_url=server.url, **fields)
    return create(config, FakeResources(client, {"OPENAI_API_KEY": key}))


async def test_chat_request_has_the_shape_openai_requires(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    await _chat(server, client, max_tokens=64, temperature=0.5).generate("Q: why?", question="why?", hits=[])()
    (request,) = server.requests
    assert (request.path, request.headers["authorization"], request.json()) == (
        "/v1/chat/completions",
        f"Bearer {KEY}",
        {
            "model": "gpt-test",
            "messages": [{"role": "user", "content": "Q: why?"}],
            "max_tokens": 64,
            "temperature": 0.5,
        },
    )


async def test_chat_can_send_max_completion_tokens(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    await _chat(server, client, max_tokens_param="max_completion_tokens").generate("hi", question="hi", hits=[])()
    body = server.bodies()[0]
    assert body["max_completion_tokens"] == 512 and "max_tokens" not in body


async def test_chat_answer_and_usage(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    got = await _chat(server, client).generate("What is a fox?\ncontext", question="What is a fox?", hits=[])()
    assert isinstance(got, Ok)
    assert (got.value.text, dict(got.value.usage), got.value.meta["finish_reason"]) == (
        "You asked: What is a fox?",
        {"input_tokens": 5, "output_tokens": 6},
        "stop",
    )


@pytest.mark.parametrize(("name", "fault", "code"), FAULT_CODES, ids=[n for n, _, _ in FAULT_CODES])
async def test_chat_fault_maps_to_its_code(
    server: OpenAIServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _chat(server, client).generate("hi", question="hi", hits=[])()
    assert isinstance(got, Err) and got.error.code == code


def test_chat_without_text_content_is_service_specific() -> None:
    payload = {
        "choices": [{"message": {"role": "assistant", "content": None, "refusal": "no"}, "finish_reason": "stop"}]
    }
    got = parse_chat(payload)
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC and got.error.meta["refusal"] == "no"


# -- secrets -------------------------------------------------------------------------------

CANARY = "sk-canary-5f1e2d3c4b5a69788796a5b4"


@pytest.mark.parametrize(("name", "fault", "code"), EMBED_FAULT_CODES, ids=[n for n, _, _ in EMBED_FAULT_CODES])
async def test_the_key_never_appears_in_an_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, name: str, fault: Fault, code: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with OpenAIServer(api_key=CANARY, dim=DIM) as server:
        server.script(fault)
        config = OpenAIConfig(model="m", base_url=server.url, dimensions=DIM)
        got = await create(config, FakeResources(client)).embed_batch(TEXTS)()
    assert isinstance(got, Err) and CANARY not in repr(got.error)


async def test_a_key_echoed_in_full_by_the_server_is_redacted(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with OpenAIServer(api_key="sk-the-right-key-000000", echo_key=True, dim=DIM) as server:
        got = await create(
            OpenAIConfig(model="m", base_url=server.url, dimensions=DIM), FakeResources(client)
        ).embed_batch(TEXTS)()
        assert isinstance(got, Err) and CANARY not in repr(got.error) and "[REDACTED]" in got.error.msg


async def test_a_header_echoed_by_a_proxy_is_redacted(server: OpenAIServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.http(400, f"bad request headers: Authorization: Bearer {KEY}"))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and KEY not in repr(got.error)
