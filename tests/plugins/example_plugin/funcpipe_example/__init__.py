"""An example funcpipe plugin: a stage kind and an adapter kind.

``SHOUT`` and ``CONSTANT`` are what the entry points in ``pyproject.toml``
name. Their factories are import paths, so validating a spec imports only
this module and the config models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from funcpipe.adapters.config import AdapterConfig
from funcpipe.ports import EmbedPort
from funcpipe.registry import AdapterKind, StageKind
from funcpipe.stages.config import StageConfig


class ShoutConfig(StageConfig):
    """Upper-case each item's text and end it with a suffix."""

    suffix: str = Field("!", max_length=16, description="Appended to the text.")


class ConstantConfig(AdapterConfig):
    """An embedder that gives every text the same vector."""

    kind: Literal["example.constant"] = "example.constant"
    dim: int = Field(4, ge=1, le=64, description="Vector dimension.")
    value: float = Field(0.5, description="Every component of every vector.")


SHOUT = StageKind(
    name="example.shout",
    config=ShoutConfig,
    factory="funcpipe_example.stages:shout",
    description="Upper-case each item's text.",
)

CONSTANT = AdapterKind(
    name="example.constant",
    config=ConstantConfig,
    provides=(EmbedPort,),
    factory="funcpipe_example.adapters:create",
    description="Every text embedded as the same vector.",
)
