"""The ``example.constant`` adapter: an `EmbedPort` whose every vector is the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funcpipe.core import AsyncPlan, ErrInfo, Ok, Result
from funcpipe.ports import Embedding, Fingerprint, Purpose
from funcpipe_example import ConstantConfig


class ConstantEmbedder:
    """Every text becomes ``[value] * dim``."""

    def __init__(self, config: ConstantConfig) -> None:
        self._config = config

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint("example.constant", f"value={self._config.value}", self._config.dim)

    @property
    def max_batch(self) -> int:
        return 100

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        # Not async def: a fresh coroutine per call, so a policy can retry the plan.
        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            return Ok([Ok([self._config.value] * self._config.dim) for _ in texts])

        return run


def create(config: ConstantConfig, resources: Any) -> ConstantEmbedder:
    """The adapter factory: ``(config, resources) -> port implementation``."""
    return ConstantEmbedder(config)
