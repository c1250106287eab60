"""The embedder base: `HTTPEmbedder`'s fingerprint, batch limit and batching, and vector checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from collections.abc import Awaitable, Callable, Sequence

from funcpipe.adapters.http._client import HTTPAdapter, HTTPSettings
from funcpipe.adapters.http._errors import malformed
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import SpecError
from funcpipe.ports import Embedding, Fingerprint, Purpose


def check_vectors(
    vectors: object, *, count: int, dim: int, provider: str, secrets: Sequence[str] = ()
) -> Result[list[list[float]], ErrInfo]:
    """``vectors`` if it is a list of ``count`` numeric rows of length ``dim``, else ``SERVICE_SPECIFIC``."""
    if not isinstance(vectors, list):
        return Err(malformed(provider, f"expected a list of embeddings, got {type(vectors).__name__}", secrets=secrets))
    if len(vectors) != count:
        return Err(
            malformed(
                provider,
                f"expected {count} embeddings, got {len(vectors)}",
                secrets=secrets,
                expected=count,
                got=len(vectors),
            )
        )
    for i, row in enumerate(vectors):
        if not isinstance(row, list) or len(row) != dim:
            got = len(row) if isinstance(row, list) else type(row).__name__
            return Err(
                malformed(
                    provider,
                    f"embedding {i} has dimension {got}, expected {dim}",
                    secrets=secrets,
                    expected_dim=dim,
                    got_dim=got,
                )
            )
        try:
            # array() checks every element is a number, in C.
            array("d", row)
        except TypeError:
            return Err(malformed(provider, f"embedding {i} holds a value that is not a number", secrets=secrets))
    return Ok(vectors)


EmbedCall = Callable[[list[str]], Awaitable[Result[list[list[float]], ErrInfo]]]


async def embed_in_batches(
    texts: Sequence[str], max_batch: int, call: EmbedCall
) -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
    """Embed ``texts`` in sequential requests of at most ``max_batch``; one result per text.

    An empty text is ``BAD_INPUT`` on its own (the APIs reject the whole request
    for it) and is not sent. The first failed request fails the whole call, so
    a retry repeats one unit rather than leaving a half-embedded batch; the
    requests go one after another because concurrency belongs to the policy.
    """
    results: list[Result[Embedding, ErrInfo]] = [
        Err(ErrInfo(ErrCode.BAD_INPUT, "an empty text cannot be embedded", {"index": i})) for i, _ in enumerate(texts)
    ]
    todo = [i for i, text in enumerate(texts) if text]
    for start in range(0, len(todo), max_batch):
        indices = todo[start : start + max_batch]
        got = await call([texts[i] for i in indices])
        if isinstance(got, Err):
            return got
        for i, vector in zip(indices, got.value, strict=True):
            results[i] = Ok(vector)
    return Ok(results)


def unknown_dimension(kind: str, model: str) -> SpecError:
    """The error for an embedder whose dimension is neither configured nor known."""
    return SpecError(
        f"{kind} embedding model {model!r} has no known dimension",
        path="dimensions",
        hint=f"set `dimensions:` on the {kind} adapter to the size of the model's vectors",
    )


class HTTPEmbedder(HTTPAdapter, ABC):
    """An `EmbedPort` over HTTP: the fingerprint, and texts split into requests of ``max_batch``.

    Subclasses send one request (`_embed`). The dimension is known from the
    config or the model; when it is not, reading ``fingerprint`` raises a
    `funcpipe.errors.SpecError` asking for ``dimensions:``, and embedding
    fails with ``SERVICE_SPECIFIC`` (chat-only use never needs it).
    """

    def __init__(
        self, settings: HTTPSettings, resources: Resources, *, model: str, dim: int | None, max_batch: int
    ) -> None:
        super().__init__(settings, resources)
        self._model = model
        self._dim = dim
        self._max_batch = max_batch

    @property
    def fingerprint(self) -> Fingerprint:
        """The provider, the model and its dimension."""
        if self._dim is None:
            raise unknown_dimension(self.provider, self._model)
        return Fingerprint(self.provider, self._model, self._dim)

    @property
    def max_batch(self) -> int:
        """Texts per request at most."""
        return self._max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts``, one request per ``max_batch`` of them."""
        batch = list(texts)

        async def one(sub: list[str]) -> Result[list[list[float]], ErrInfo]:
            if self._dim is None:
                return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, unknown_dimension(self.provider, self._model).message))
            return await self._embed(sub, purpose, self._dim)

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            return await embed_in_batches(batch, self._max_batch, one)

        return run

    @abstractmethod
    async def _embed(self, texts: list[str], purpose: Purpose, dim: int) -> Result[list[list[float]], ErrInfo]:
        """Send one request for ``texts``; the vectors, checked to have dimension ``dim``."""
