"""The ``anthropic`` adapter against a faithful local Messages API server (funcpipe.adapters.anthropic)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from funcpipe.adapters.anthropic import AnthropicAdapter, create, parse_message
from funcpipe.adapters.config import AnthropicConfig
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.ports import GeneratePort
from tests.fakes import FAULT_CODES, AnthropicServer, FakeResources, Fault, local_client

KEY = "sk-ant-test-0123456789abcdef"
PROMPT = "What is a fox?\nA fox is a small omnivore."


@pytest.fixture(scope="module")
def shared_server() -> Iterator[AnthropicServer]:
    with AnthropicServer(api_key=KEY) as s:
        yield s


@pytest.fixture
def server(shared_server: AnthropicServer) -> AnthropicServer:
    shared_server.reset()
    return shared_server


def _adapter(server: AnthropicServer, client: httpx.AsyncClient, key: str = KEY, **fields: Any) -> AnthropicAdapter:
    config = AnthropicConfig(**{"model": "claude-test", "base_url": server.url, **fields})
    return create(config, FakeResources(client, {"ANTHROPIC_API_KEY": key}))


def test_create_gives_a_generator() -> None:
    assert isinstance(create(AnthropicConfig(model="m"), FakeResources(local_client())), GeneratePort)


async def test_request_has_the_headers_and_body_anthropic_requires(
    server: AnthropicServer, client: httpx.AsyncClient
) -> None:
    await _adapter(server, client, max_tokens=300).generate(PROMPT, question="What is a fox?", hits=[])()
    (request,) = server.requests
    headers = request.headers
    assert (request.path, headers["x-api-key"], headers["anthropic-version"], "authorization" in headers) == (
        "/v1/messages",
        KEY,
        "2023-06-01",
        False,
    )
    assert request.json() == {
        "model": "claude-test",
        "max_tokens": 300,
        "temperature": 0.0,
        "messages": [{"role": "user", "content": PROMPT}],
    }


async def test_answer_and_usage(server: AnthropicServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client).generate(PROMPT, question="What is a fox?", hits=[])()
    assert isinstance(got, Ok)
    assert (got.value.text, dict(got.value.usage), got.value.meta["stop_reason"]) == (
        "You asked: What is a fox?",
        {"input_tokens": 10, "output_tokens": 6},
        "end_turn",
    )


def test_text_blocks_are_joined_and_other_blocks_skipped() -> None:
    payload = {
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "A fox "},
            {"type": "text", "text": "is a canid."},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    got = parse_message(payload)
    assert isinstance(got, Ok) and got.value.text == "A fox is a canid."


def test_a_message_without_content_blocks_is_service_specific() -> None:
    got = parse_message({"type": "message", "completion": "x"})
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC


@pytest.mark.parametrize(("name", "fault", "code"), FAULT_CODES, ids=[n for n, _, _ in FAULT_CODES])
async def test_fault_maps_to_its_code(
    server: AnthropicServer, client: httpx.AsyncClient, name: str, fault: Fault, code: str
) -> None:
    server.script(fault)
    got = await _adapter(server, client).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and got.error.code == code


async def test_overloaded_529_is_transient_with_its_error_type(
    server: AnthropicServer, client: httpx.AsyncClient
) -> None:
    server.script(Fault.server_error(529))
    got = await _adapter(server, client).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and (got.error.code, got.error.meta["error_type"]) == (
        ErrCode.TRANSIENT,
        "overloaded_error",
    )


async def test_rate_limit_carries_retry_after_and_request_id(
    server: AnthropicServer, client: httpx.AsyncClient
) -> None:
    server.script(Fault.rate_limit("12"))
    got = await _adapter(server, client).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and (got.error.code, got.error.meta["retry_after"]) == (ErrCode.RATE_LIMIT, 12.0)
    assert str(got.error.meta["request_id"]).startswith("req_")


async def test_wrong_key_is_auth_with_anthropics_message(server: AnthropicServer, client: httpx.AsyncClient) -> None:
    got = await _adapter(server, client, key="sk-ant-wrong-00000000").generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and (got.error.code, got.error.meta["provider_message"]) == (
        ErrCode.AUTH,
        "invalid x-api-key",
    )


async def test_an_unknown_version_is_refused_as_a_bad_request(
    server: AnthropicServer, client: httpx.AsyncClient
) -> None:
    got = await _adapter(server, client, anthropic_version="2099-01-01").generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and got.error.code == ErrCode.SERVICE_SPECIFIC
    assert "anthropic-version" in str(got.error.meta["provider_message"])


async def test_slow_answer_is_timeout(server: AnthropicServer, client: httpx.AsyncClient) -> None:
    server.script(Fault.slow(5.0))
    got = await _adapter(server, client, request_timeout=0.2).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and got.error.code == ErrCode.TIMEOUT


async def test_unset_key_variable_is_auth_naming_it(server: AnthropicServer, client: httpx.AsyncClient) -> None:
    config = AnthropicConfig(model="m", base_url=server.url)
    got = await create(config, FakeResources(client, {})).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and got.error.code == ErrCode.AUTH and "ANTHROPIC_API_KEY" in got.error.msg


CANARY = "sk-ant-canary-5f1e2d3c4b5a69788796a5b4"


@pytest.mark.parametrize(
    ("name", "fault", "code"),
    [*FAULT_CODES, ("echo", Fault.http(400, f"x-api-key: {CANARY} is malformed"), "SERVICE_SPECIFIC")],
    ids=[n for n, _, _ in FAULT_CODES] + ["echo"],
)
async def test_the_key_never_appears_in_an_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, name: str, fault: Fault, code: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    with AnthropicServer(api_key=CANARY) as server:
        server.script(fault)
        config = AnthropicConfig(model="m", base_url=server.url)
        got = await create(config, FakeResources(client)).generate(PROMPT, question="q", hits=[])()
    assert isinstance(got, Err) and got.error.code == code and CANARY not in repr(got.error)
