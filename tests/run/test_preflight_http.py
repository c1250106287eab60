"""The HTTP layer's own guard: an API key never leaves over plain http to another host.

Validation refuses such a spec already; these tests reach the HTTP layer with
a config made without validation (as a plugin or careless code could), and
with a redirect, and count what the transport was asked to send: a refused
request opens no socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcpipe.adapters.anthropic import create as create_anthropic
from funcpipe.adapters.config import AnthropicConfig, OpenAIConfig, insecure_key_transport, is_loopback_host
from funcpipe.adapters.openai import create as create_openai
from funcpipe.core import Err, ErrCode
from tests.fakes import Fault, OpenAIServer
from tests.fakes.resources import FakeResources

KEY = "sk-http-guard-0123456789abcdef"


class CountingTransport(httpx.AsyncHTTPTransport):
    """Real sockets, and a record of every request handed to them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url)
        return await super().handle_async_request(request)


@pytest.fixture
async def transport() -> AsyncIterator[CountingTransport]:
    t = CountingTransport()
    yield t
    await t.aclose()


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=8) as s:
        yield s


def resources(transport: CountingTransport, *, follow_redirects: bool = False) -> FakeResources:
    client = httpx.AsyncClient(transport=transport, follow_redirects=follow_redirects, timeout=2.0)
    return FakeResources(client, env={"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY})


def unvalidated(config: type[Any], **fields: object) -> Any:
    """A config with its defaults, made without validation (so the base URL is not checked)."""
    return config.model_construct(**fields)


async def test_a_key_over_plain_http_to_another_host_is_refused_without_a_request(
    transport: CountingTransport,
) -> None:
    config = unvalidated(OpenAIConfig, model="m", base_url="http://192.0.2.1/v1", dimensions=8)
    adapter = create_openai(config, resources(transport))
    res = await asyncio.wait_for(adapter.embed_batch(["hello"])(), timeout=5)
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert "192.0.2.1" in res.error.msg and "allow_insecure_http" in res.error.msg
    assert KEY not in repr(res.error)
    assert transport.sent == []


async def test_the_guard_covers_every_http_adapter(transport: CountingTransport) -> None:
    config = unvalidated(AnthropicConfig, model="m", base_url="http://10.1.2.3:8080")
    adapter = create_anthropic(config, resources(transport))
    res = await asyncio.wait_for(adapter.generate("p", question="q", hits=[])(), timeout=5)
    assert isinstance(res, Err)
    assert "10.1.2.3" in res.error.msg
    assert transport.sent == []


async def test_loopback_over_plain_http_is_allowed(transport: CountingTransport, server: OpenAIServer) -> None:
    adapter = create_openai(OpenAIConfig(model="m", base_url=server.url, dimensions=8), resources(transport))
    res = await asyncio.wait_for(adapter.embed_batch(["hello"])(), timeout=10)
    assert not isinstance(res, Err), res
    assert server.count() == 1


@pytest.mark.parametrize("follow", [False, True], ids=["client-default", "client-follows-redirects"])
async def test_a_redirect_is_never_followed(follow: bool, transport: CountingTransport, server: OpenAIServer) -> None:
    server.script(Fault.http(307, location="http://192.0.2.1/v1/embeddings"))
    adapter = create_openai(
        OpenAIConfig(model="m", base_url=server.url, dimensions=8), resources(transport, follow_redirects=follow)
    )
    res = await asyncio.wait_for(adapter.embed_batch(["hello"])(), timeout=5)
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert [u.host for u in transport.sent] == ["127.0.0.1"]


# -- what counts as loopback ----------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "[::1]"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["192.0.2.1", "10.0.0.1", "0.0.0.0", "128.0.0.1", "::", "::ffff:192.0.2.1", "example.com", "localhost.evil"]
)
def test_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://192.0.2.1/v1", "192.0.2.1"),
        ("HTTP://Example.COM:8080/v1", "example.com"),
        ("http://[2001:db8::1]:11434", "2001:db8::1"),
        ("https://192.0.2.1/v1", None),
        ("http://127.0.0.1:11434", None),
        ("http://localhost:8000/v1", None),
        ("http://[::1]:8000", None),
        ("not a url", None),
    ],
)
def test_which_urls_would_carry_a_key_in_clear(url: str, refused: str | None) -> None:
    assert insecure_key_transport(url) == refused


@given(st.ip_addresses(v=4))
def test_an_ipv4_host_is_loopback_exactly_when_it_is_in_127_0_0_0_8(address: Any) -> None:
    assert is_loopback_host(str(address)) == str(address).startswith("127.")
