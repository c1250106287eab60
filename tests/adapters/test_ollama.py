"""The ``ollama`` adapter against a faithful local Ollama server (funcpipe.adapters.ollama)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from funcpipe.adapters.config import OllamaConfig
from funcpipe.adapters.ollama import OllamaAdapter, create, known_dimension, parse_chat
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.errors import SpecError
from funcpipe.ports import EmbedPort, Fingerprint, GeneratePort
from tests.fakes import EMBED_FAULT_CODES, FAULT_CODES, FakeResources, Fault, OllamaServer, hashing_embed, local_client

DIM = 32
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "embeddings meet their vectors"]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[OllamaServer]:
    with OllamaServer(dim=DIM) as s:
        yield s


@pytest.fixture
def server(shared_server: OllamaServer) -> OllamaServer:
    shared_server.reset()
    return shared_server


def _adapter(
    server: OllamaServer, client: httpx.AsyncClient, env: dict[str, str] | None = None, **fields: Any
) -> OllamaAdapter:
    config = OllamaConfig(**{"model": "nomic-embed-text", "base_url": server.url, "dimensions": DIM, **fields})
    return create(config, FakeResources(client, env or {}))


# -- the factory and the ports -------------------------------------------------------------


def test_create_gives_both_ports() -> None:
    adapter = create(OllamaConfig(model="llama3.2", dimensions=8), FakeResources(local_client()))
    assert isinstance(adapter, EmbedPort) and isinstance(adapter, GeneratePort)


@pytest.mark.parametrize(
    ("model", "dim"),
    [("nomic-embed-text", 768), ("nomic-embed-text:latest", 768), ("mxbai-embed-large", 1024), ("all-minilm", 384)],
)
def test_known_models_have_their_native_dimension(model: str, dim: int) -> None:
    assert known_dimension(model) == dim


def test_a_tagged_variant_is_not_assumed_to_keep_the_dimension() -> None:
    assert known_dimension("nomic-embed-text:v2-moe") is None


def test_fingerprint_uses_the_configured_dimensions() -> None:
    adapter = create(OllamaConfig(model="qwen3-embedding", dimensions=1024), FakeResources(local_client()))
    assert adapter.fingerprint == Fingerprint("ollama", "qwen3-embedding", 1024)


def test_fingerprint_of_an_unknown_model_without_dimensions_asks_for_them() -> None:
    adapter = create(OllamaConfig(model="qwen3-embedding"), FakeResources(local_client()))
    with pytest.raises(SpecError, match="qwen3-embedding"):
        _ = adapter.fingerprint


# -- embed ---------------------------------------------------------------------------------


async def test_embed_request_has_the_shape_ollama_expects(server: OllamaServer, client: httpx.AsyncClient) -> None:
    await _adapter(server, client, keep_alive="5m").embed_batch(TEXTS)()
    (request,) = server.requests
    assert (request.path, "authorization" in request.headers, request.json()) == (
        "/api/embed",
        False,
        {"model": "nomic-embed-text", "input": TEXTS, "truncate": True, "keep_alive": "5m", "dimensions": DIM},
    )


async def test_optional_fields_are_left_out_when_not_configured(client: httpx.AsyncClient) -> None:
    with OllamaServer(dim=768) as server:
        config = OllamaConfig(model="nomic-embed-text", base_url=server.url)
        got = await create(config, FakeResources(client, {})).embed_batch(["a b"])()
        assert isinstance(got, Ok) and set(server.bodies()[0]) == {"model", "input", "truncate"}


async def test_vectors_equal_hashing(server: OllamaServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [hashing_embed(t, DIM) for t in TEXTS]


async def test_requests_are_split_at_max_batch(server: OllamaServer, client: httpx.AsyncClient) -> None:
    texts = [f"text number {i}" for i in range(5)]
    got = await _adapter(server, client, max_batch=2).embed_batch(texts)()
    assert [len(b["input"]) for b in server.bodies()] == [2, 2, 1]
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [hashing_embed(t, DIM) for t in texts]


async def test_a_key_variable_is_sent_as_a_bearer_token(client: httpx.AsyncClient) -> None:
    with OllamaServer(api_key="proxy-token-123456", dim=DIM) as server:
        adapter = _adapter(server, client, {"OLLAMA_KEY": "proxy-token-123456"}, api_key_env="OLLAMA_KEY")
        got = await adapter.embed_batch(TEXTS)()
        assert isinstance(got, Ok) and server.requests[0].headers["authorization"] == "Bearer proxy-token-123456"


@pytest.mark.parametrize(("name", "fault", "code"), EMBED_FAULT_CODES, ids=[n for n, _, _ in EMBED_FAULT_CODES])
async def test_embed_fault_maps_to_its_code(
    server: OllamaServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == code


async def test_a_missing_model_keeps_ollamas_message(client: httpx.AsyncClient) -> None:
    with OllamaServer(dim=DIM, models=["llama3.2"]) as server:
        got = await _adapter(server, client).embed_batch(TEXTS)()
        assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC
        assert got.error.meta["provider_message"] == 'model "nomic-embed-text" not found, try pulling it first'


async def test_busy_server_is_transient_with_its_message(server: OllamaServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.server_error(503))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.TRANSIENT
    assert "server busy" in str(got.error.meta["provider_message"])


async def test_slow_answer_is_timeout(server: OllamaServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(5.0))
    got = await _adapter(server, client, request_timeout=0.2).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


async def test_a_wrong_path_is_service_specific(client: httpx.AsyncClient) -> None:
    with OllamaServer(dim=DIM) as server:
        config = OllamaConfig(model="nomic-embed-text", base_url=server.url + "/v1", dimensions=DIM)
        got = await create(config, FakeResources(client, {})).embed_batch(TEXTS)()
        assert isinstance(got, Err) and (got.error.code, got.error.meta["status"]) == (ErrCode.SERVICE_SPECIFIC, 404)


# -- chat ----------------------------------------------------------------------------------


async def test_chat_request_is_not_streaming_and_carries_options(
    server: OllamaServer, client: httpx.AsyncClient
) -> None:
    await _adapter(server, client, model="llama3.2", max_tokens=64, temperature=0.3).generate(
        "Q?", question="Q?", hits=[]
    )()
    (request,) = server.requests
    assert (request.path, request.json()) == (
        "/api/chat",
        {
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "Q?"}],
            "stream": False,
            "options": {"temperature": 0.3, "num_predict": 64},
        },
    )


async def test_chat_answer_and_usage(server: OllamaServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client, model="llama3.2").generate(
        "What is a fox?\nctx", question="What is a fox?", hits=[]
    )()
    assert isinstance(got, Ok)
    assert (got.value.text, dict(got.value.usage), got.value.meta["done_reason"]) == (
        "You asked: What is a fox?",
        {"input_tokens": 5, "output_tokens": 6},
        "stop",
    )


@pytest.mark.parametrize(("name", "fault", "code"), FAULT_CODES, ids=[n for n, _, _ in FAULT_CODES])
async def test_chat_fault_maps_to_its_code(
    server: OllamaServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _adapter(server, client, model="llama3.2").generate("hi", question="hi", hits=[])()
    assert isinstance(got, Err) and got.error.code == code


def test_a_streamed_answer_is_not_mistaken_for_one() -> None:
    got = parse_chat({"model": "m", "message": {"role": "assistant"}, "done": False})
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC


async def test_the_server_streams_unless_asked_not_to(server: OllamaServer, client: httpx.AsyncClient) -> None:
    response = await client.post(
        server.url + "/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    )
    chunks = [json.loads(line) for line in response.text.splitlines()]
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [c["done"] for c in chunks] == [False, False, False, False, True]
