"""The ``scripted`` adapter: a fake HTTP provider that answers from a script, for pipeline tests.

Each call (one embedding request, one generation) takes the next step of
the script; once the script is used up, every call is ``ok``. An ``ok``
answer is local: vectors from the ``hashing`` embedder, answers from the
``extractive`` generator. A fault is turned into an `ErrInfo` by the HTTP
layer's own taxonomy (`funcpipe.adapters.http`), from a real
``httpx.Response`` or httpx exception, so a scripted 429 with
``Retry-After: 30`` is exactly the ``RATE_LIMIT`` with ``retry_after=30``
that a provider's 429 gives, and policies treat it the same way:

    429                RATE_LIMIT   (meta.retry_after from retry_after)
    5xx, 408, 409      TRANSIENT
    401, 403           AUTH
    other statuses     SERVICE_SPECIFIC
    timeout            TIMEOUT      (httpx.ReadTimeout)
    network            NETWORK      (httpx.ConnectError)
    malformed          SERVICE_SPECIFIC (a 200 whose body is not JSON)

A step's ``delay`` is spent on the run's clock before it answers, so a delay
longer than the policy's attempt timeout is a real timeout of the attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from funcpipe.adapters.config import ExtractiveConfig, HashingConfig, ScriptedConfig, ScriptedStep
from funcpipe.adapters.extractive import ExtractiveGenerator
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.adapters.http import exception_error, malformed, response_error
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrInfo, Result
from funcpipe.ports import Embedding, Fingerprint, Generation, Purpose, QueryHit

_OK = ScriptedStep(answer="ok")
_MALFORMED_BODY = "<html><body>502 Bad Gateway</body></html>"


class ScriptedAdapter:
    """An `EmbedPort` and `GeneratePort` playing a script of answers and faults.

    Args:
        config: the script, the provider's name, the vectors' dimension.
        resources: the run's resources (their clock times the delays).

    Attributes:
        calls: how many calls were made.
    """

    def __init__(self, config: ScriptedConfig, resources: Resources) -> None:
        self._config = config
        self._clock = resources.clock
        self._steps = [step for step in config.script for _ in range(step.times)]
        self._embedder = HashingEmbedder(HashingConfig(dim=config.dim))
        self._generator = ExtractiveGenerator(ExtractiveConfig())
        self._url = f"https://{config.provider}.scripted.invalid/v1"
        self.calls = 0

    @property
    def fingerprint(self) -> Fingerprint:
        """That of the hashing embedder that answers ``ok``."""
        return self._embedder.fingerprint

    @property
    def max_batch(self) -> int:
        """The configured ``max_batch``."""
        return self._config.max_batch

    def _next(self) -> ScriptedStep:
        n = self.calls
        self.calls += 1
        return self._steps[n] if n < len(self._steps) else _OK

    def _fault(self, step: ScriptedStep) -> ErrInfo:
        provider = self._config.provider
        request = httpx.Request("POST", self._url)
        if step.status is not None:
            headers = {} if step.retry_after is None else {"retry-after": f"{step.retry_after:g}"}
            body = {"error": {"message": step.message or f"scripted {step.status}", "type": "scripted"}}
            response = httpx.Response(step.status, headers=headers, json=body, request=request)
            return response_error(response, provider=provider)
        if step.answer == "timeout":
            return exception_error(
                httpx.ReadTimeout("scripted timeout", request=request), provider=provider, url=self._url
            )
        if step.answer == "network":
            return exception_error(
                httpx.ConnectError("scripted: connection refused", request=request), provider=provider, url=self._url
            )
        return malformed(provider, "the body is not JSON (scripted)", body=_MALFORMED_BODY, status=200)

    async def _answer(self) -> ErrInfo | None:
        step = self._next()
        if step.delay:
            await self._clock.sleep(step.delay)
        return None if step.answer == "ok" else self._fault(step)

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Take the next step: ``ok`` embeds ``texts`` with the hashing embedder; a fault fails the request."""
        local = self._embedder.embed_batch(texts, purpose)

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            fault = await self._answer()
            return Err(fault) if fault is not None else await local()

        return run

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Take the next step: ``ok`` answers extractively from ``hits``; a fault fails the call."""
        local = self._generator.generate(prompt, question=question, hits=hits)

        async def run() -> Result[Generation, ErrInfo]:
            fault = await self._answer()
            return Err(fault) if fault is not None else await local()

        return run


def create(config: ScriptedConfig, resources: Resources) -> ScriptedAdapter:
    """The adapter factory: a `ScriptedAdapter` at the start of its script."""
    return ScriptedAdapter(config, resources)
