"""An embedding adapter written as the async service adapter page shows it, plugged into a spec.

Everything between the two rulers is the page's code as printed there (its
``EmbedPort`` protocol and ``make_openai_embed_adapter``), importing only
funcpipe's names for the types the page uses. Below them is the glue a user
writes once: a config model, a factory and the `AdapterKind` that a spec
names by import path (``kind: "tests.core.seed_adapter:KIND"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
from httpx import AsyncClient, RequestError, TimeoutException
from pydantic import Field

from funcpipe.adapters.config import AdapterConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncAction, Err, ErrInfo, Ok, Result
from funcpipe.ports import EmbedPort as FuncpipeEmbedPort
from funcpipe.ports import as_embed_port
from funcpipe.registry import AdapterKind


@dataclass(frozen=True)
class Embedding:
    """The pages' domain embedding: a vector and the model that made it."""

    vector: tuple[float, ...]
    model: str


# ---- the page's code --------------------------------------------------------------------


@runtime_checkable
class EmbedPort(Protocol):
    def embed_batch(self, texts: list[str]) -> AsyncAction[Result[list[Result[Embedding, ErrInfo]], ErrInfo]]: ...

    # Outer Result: request-level failure (network/auth/rate-limit/transient)
    # Inner list[Result]: per-text failures (provider-specific, rare but possible)


# HTTP factory - returns adapter class instance
def make_openai_embed_adapter(
    client: AsyncClient,
    model: str = "text-embedding-3-large",
) -> EmbedPort:
    class _Adapter:
        def embed_batch(self, texts: list[str]) -> AsyncAction[Result[list[Result[Embedding, ErrInfo]], ErrInfo]]:
            async def _act() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
                if not texts:
                    return Ok([])
                try:
                    resp = await client.post(
                        "/v1/embeddings",
                        json={"model": model, "input": texts},
                    )
                    if resp.status_code == 429:
                        return Err(
                            ErrInfo(
                                code="RATE_LIMIT",
                                msg="rate limited",
                                meta={"retry_after": resp.headers.get("retry-after")},
                            )
                        )
                    if resp.status_code == 401:
                        return Err(ErrInfo(code="AUTH", msg="invalid api key"))
                    if 500 <= resp.status_code < 600:
                        return Err(ErrInfo(code="TRANSIENT", msg="server error"))
                    resp.raise_for_status()
                    data = resp.json()["data"]
                    return Ok([Ok(Embedding(vec["embedding"], model)) for vec in data])
                except TimeoutException:
                    return Err(ErrInfo(code="TIMEOUT", msg="request timeout"))
                except RequestError as e:
                    return Err(ErrInfo(code="NETWORK", msg=str(e)))
                except Exception as e:  # JSON parse, unexpected shape, etc.
                    return Err(ErrInfo(code="SERVICE_SPECIFIC", msg=str(e)))

            return lambda: _act()

    return _Adapter()


# ---- the glue ---------------------------------------------------------------------------


class PageOpenAIConfig(AdapterConfig):
    """The page's OpenAI adapter, by import path."""

    kind: str = "tests.core.seed_adapter:KIND"
    base_url: str = Field(..., description="Origin of the API; the page's adapter posts to /v1/embeddings.")
    model: str = "text-embedding-3-large"
    dim: int | None = None


class _SharedClient:
    """The run's shared client, with the base URL the page's adapter expects its client to have."""

    def __init__(self, resources: Resources, base_url: str) -> None:
        self._resources = resources
        self._base_url = base_url.rstrip("/")

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        client = await self._resources.http_client()
        return await client.post(self._base_url + path, **kwargs)


def create(config: PageOpenAIConfig, resources: Resources) -> FuncpipeEmbedPort:
    """Build the page's adapter on the run's client and present it as funcpipe's port."""
    page_adapter = make_openai_embed_adapter(_SharedClient(resources, config.base_url), config.model)  # type: ignore[arg-type]
    return as_embed_port(page_adapter, kind="page-openai", model=config.model, dim=config.dim)


KIND = AdapterKind(
    "tests.core.seed_adapter:KIND",
    PageOpenAIConfig,
    (FuncpipeEmbedPort,),
    create,
    "The page's OpenAI embedding adapter.",
)
