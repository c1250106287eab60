"""Every HTTP adapter reports the usage its provider bills, read from the real response of a local server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import httpx
import pytest

from funcpipe.adapters import anthropic, cohere, ollama, openai
from funcpipe.adapters.config import AnthropicConfig, CohereConfig, OllamaConfig, OpenAIConfig
from funcpipe.core import Ok, Usage, metering
from funcpipe.ports import EmbedPort, GeneratePort
from tests.fakes import AnthropicServer, CohereServer, FakeResources, OllamaServer, OpenAIServer
from tests.fakes.servers import Recorded, Reply

KEY = "usage-test-key-0123456789"
DIM = 16
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "a third text, of six words"]
WORDS = sum(len(t.split()) for t in TEXTS)  # the fake servers bill one token per word


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, object]]:
    with (
        OpenAIServer(api_key=KEY, dim=DIM) as oa,
        CohereServer(api_key=KEY, dim=DIM) as co,
        OllamaServer(dim=DIM) as ol,
        AnthropicServer(api_key=KEY) as an,
    ):
        yield {"openai": oa, "cohere": co, "ollama": ol, "anthropic": an}


def _env() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "CO_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY}


def _embedder(kind: str, servers: dict[str, object], client: httpx.AsyncClient, max_batch: int) -> EmbedPort:
    url = servers[kind].url  # type: ignore[attr-defined]
    res = FakeResources(client, _env())
    if kind == "openai":
        return openai.create(OpenAIConfig(model="m", base_url=url, dimensions=DIM, max_batch=max_batch), res)
    if kind == "cohere":
        return cohere.create(CohereConfig(base_url=url, dimensions=DIM, max_batch=max_batch), res)
    return ollama.create(OllamaConfig(model="m", base_url=url, dimensions=DIM, max_batch=max_batch), res)


@pytest.mark.parametrize("kind", ["openai", "cohere", "ollama"])
async def test_an_embedder_reports_each_requests_billed_tokens(
    kind: str, servers: dict[str, object], client: httpx.AsyncClient
) -> None:
    port = _embedder(kind, servers, client, max_batch=2)  # three texts: two requests
    with metering() as reported:
        res = await port.embed_batch(TEXTS)()
    assert isinstance(res, Ok)
    assert reported == [
        Usage(1, len(TEXTS[0].split()) + len(TEXTS[1].split()), 0),
        Usage(1, len(TEXTS[2].split()), 0),
    ]
    assert sum(u.input_tokens for u in reported) == WORDS


@pytest.mark.parametrize("kind", ["openai", "ollama", "anthropic"])
async def test_a_generator_reports_its_input_and_output_tokens(
    kind: str, servers: dict[str, object], client: httpx.AsyncClient
) -> None:
    url = servers[kind].url  # type: ignore[attr-defined]
    res = FakeResources(client, _env())
    port: GeneratePort
    if kind == "openai":
        port = openai.create(OpenAIConfig(model="m", base_url=url), res)
    elif kind == "ollama":
        port = ollama.create(OllamaConfig(model="m", base_url=url), res)
    else:
        port = anthropic.create(AnthropicConfig(model="m", base_url=url), res)
    prompt = "answer from these five words"
    with metering() as reported:
        got = await port.generate(prompt, question="q", hits=[])()
    assert isinstance(got, Ok)
    assert reported == [Usage(1, len(prompt.split()), len(got.value.text.split()))]


class _SilentOpenAI(OpenAIServer):
    """A compatible server whose embeddings answer carries no ``usage``."""

    def _embeddings(self, request: Recorded, corruption: str | None) -> Reply:
        reply = super()._embeddings(request, corruption)
        body = json.loads(reply.body)
        body.pop("usage")
        return dataclasses.replace(reply, body=json.dumps(body).encode())


async def test_an_answer_without_usage_reports_nothing_so_the_meter_estimates(client: httpx.AsyncClient) -> None:
    with _SilentOpenAI(api_key=KEY, dim=DIM) as server:
        config = OpenAIConfig(model="m", base_url=server.url, dimensions=DIM)
        port = openai.create(config, FakeResources(client, _env()))
        with metering() as reported:
            res = await port.embed_batch(TEXTS)()
    assert isinstance(res, Ok)
    assert reported == []
