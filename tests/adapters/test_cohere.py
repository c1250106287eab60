"""The ``cohere`` adapter against a faithful local Cohere v2 server (funcpipe.adapters.cohere)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from funcpipe.adapters.cohere import CohereAdapter, create
from funcpipe.adapters.config import CohereConfig
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.errors import SpecError
from funcpipe.ports import EmbedPort, Fingerprint, Purpose
from tests.fakes import EMBED_FAULT_CODES, CohereServer, FakeResources, Fault, hashing_embed, local_client

KEY = "co-test-0123456789abcdef"
DIM = 32
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "embeddings meet their vectors"]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[CohereServer]:
    with CohereServer(api_key=KEY, dim=DIM) as s:
        yield s


@pytest.fixture
def server(shared_server: CohereServer) -> CohereServer:
    shared_server.reset()
    return shared_server


def _adapter(server: CohereServer, client: httpx.AsyncClient, key: str = KEY, **fields: Any) -> CohereAdapter:
    config = CohereConfig(**{"base_url": server.url, "dimensions": DIM, **fields})
    return create(config, FakeResources(client, {"CO_API_KEY": key}))


# -- the factory ---------------------------------------------------------------------------


def test_create_gives_an_embedder_with_the_default_models_dimension() -> None:
    adapter = create(CohereConfig(), FakeResources(local_client()))
    assert isinstance(adapter, EmbedPort) and adapter.fingerprint == Fingerprint("cohere", "embed-v4.0", 1536)


def test_create_refuses_an_unknown_model_without_dimensions() -> None:
    with pytest.raises(SpecError, match="embed-future"):
        create(CohereConfig(model="embed-future"), FakeResources(local_client()))


def test_max_batch_is_cohere_limit_by_default() -> None:
    assert create(CohereConfig(), FakeResources(local_client())).max_batch == 96


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("purpose", "input_type"), [("document", "search_document"), ("query", "search_query")])
async def test_request_has_the_shape_cohere_requires(
    server: CohereServer, client: httpx.AsyncClient, purpose: Purpose, input_type: str
) -> None:
    await _adapter(server, client).embed_batch(TEXTS, purpose)()
    (request,) = server.requests
    assert (request.path, request.headers["authorization"], request.json()) == (
        "/v2/embed",
        f"Bearer {KEY}",
        {
            "model": "embed-v4.0",
            "texts": TEXTS,
            "input_type": input_type,
            "embedding_types": ["float"],
            "truncate": "END",
            "output_dimension": DIM,
        },
    )


async def test_vectors_equal_hashing(server: CohereServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [hashing_embed(t, DIM) for t in TEXTS]


async def test_requests_are_split_at_max_batch(server: CohereServer, client: httpx.AsyncClient) -> None:
    texts = [f"text number {i}" for i in range(5)]
    got = await _adapter(server, client, max_batch=2).embed_batch(texts, "query")()
    assert [(len(b["texts"]), b["input_type"]) for b in server.bodies()] == [(2, "search_query")] * 2 + [
        (1, "search_query")
    ]
    assert isinstance(got, Ok) and [r.unwrap() for r in got.value] == [hashing_embed(t, DIM) for t in texts]


async def test_a_request_without_input_type_is_refused_by_the_server(
    server: CohereServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        server.url + "/v2/embed",
        json={"model": "embed-v4.0", "texts": ["a"], "embedding_types": ["float"]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert (response.status_code, "input_type" in response.json()["message"]) == (400, True)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fault", "code"), EMBED_FAULT_CODES, ids=[n for n, _, _ in EMBED_FAULT_CODES])
async def test_fault_maps_to_its_code(
    server: CohereServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == code


async def test_invalid_token_status_498_is_auth(server: CohereServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.http(498, "invalid token"))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH


async def test_wrong_key_is_auth_with_cohere_message(server: CohereServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client, key="co-wrong-key-000000").embed_batch(TEXTS)()
    assert isinstance(got, Err) and (got.error.code, got.error.meta["provider_message"]) == (
        ErrCode.AUTH,
        "invalid api token",
    )


async def test_rate_limit_carries_retry_after(server: CohereServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.rate_limit("4"))
    got = await _adapter(server, client).embed_batch(TEXTS)()
    assert isinstance(got, Err) and (got.error.code, got.error.meta["retry_after"]) == (ErrCode.RATE_LIMIT, 4.0)


async def test_slow_answer_is_timeout(server: CohereServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(5.0))
    got = await _adapter(server, client, request_timeout=0.2).embed_batch(TEXTS)()
    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


CANARY = "co-canary-5f1e2d3c4b5a69788796a5b4"


@pytest.mark.parametrize(("name", "fault", "code"), EMBED_FAULT_CODES, ids=[n for n, _, _ in EMBED_FAULT_CODES])
async def test_the_key_never_appears_in_an_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, name: str, fault: Fault, code: str
) -> None:
    monkeypatch.setenv("CO_API_KEY", CANARY)
    with CohereServer(api_key=CANARY, dim=DIM) as server:
        server.script(fault)
        got = await create(CohereConfig(base_url=server.url, dimensions=DIM), FakeResources(client)).embed_batch(
            TEXTS
        )()
    assert isinstance(got, Err) and CANARY not in repr(got.error)
