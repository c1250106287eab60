"""What the entry points of tests/registry/test_plugins.py name: kinds, and things that are not."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from funcpipe.adapters.config import AdapterConfig
from funcpipe.ports import EmbedPort
from funcpipe.registry import AdapterKind, StageKind
from funcpipe.stages.config import StageConfig


class TuneConfig(StageConfig):
    """Tune items."""

    level: int = Field(1, description="How hard.")


class EchoConfig(AdapterConfig):
    """Echo embedder."""

    kind: Literal["acme.echo"] = "acme.echo"


TUNE = StageKind("acme.tune", TuneConfig, "acme:tune", description="Tune items.")
ECHO = AdapterKind("acme.echo", EchoConfig, (EmbedPort,), "acme:echo", "Echo.")
EMBED = StageKind("embed", TuneConfig, "acme:embed", description="A stage that would replace the built-in embed.")
HASHING = AdapterKind("hashing", EchoConfig, (EmbedPort,), "acme:hashing", "Would replace the built-in hashing.")
TUNE_AGAIN = StageKind("acme.tune", TuneConfig, "other:tune", description="A second plugin's acme.tune.")
COLON = StageKind("acme:colon", TuneConfig, "acme:colon")


def not_a_kind() -> None:
    """A factory, named where a kind belongs."""


NAME = "acme.thing"
"""A string, named where a kind belongs."""
