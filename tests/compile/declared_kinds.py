"""Stage kinds outside the built-ins, named by import path in the specs of test_declared_needs.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from funcpipe.ports import VectorStorePort
from funcpipe.registry import StageKind
from funcpipe.stages.config import StageConfig


class RoutedConfig(StageConfig):
    """A query-like stage whose embedder is named by a field called ``via``."""

    via: str | None = Field(None, description="The embedding adapter.")
    embedder: str | None = Field(None, description="Not the embedder: a label that happens to share the name.")


class KeptConfig(StageConfig):
    """A store-like stage whose sync mode is a field called ``keep``."""

    keep: Literal["mirror", "append"] = Field("append", description="How the store mirrors its sources.")
    sync: Literal["mirror", "append"] = Field("mirror", description="Not the sync mode: shares the name only.")


ROUTED = StageKind(
    "test.routed",
    RoutedConfig,
    "tests.compile.declared_kinds:never_built",
    needs=VectorStorePort,
    embedder=True,
    embedder_field="via",
)
"""Declares ``via`` as its embedder field."""

UNDECLARED = StageKind("test.undeclared", RoutedConfig, "tests.compile.declared_kinds:never_built")
"""Has a field called ``embedder`` but declares no embedder field."""

KEPT = StageKind(
    "test.kept",
    KeptConfig,
    "tests.compile.declared_kinds:never_built",
    "sink",
    needs=VectorStorePort,
    sync_field="keep",
)
"""Declares ``keep`` as its sync field."""


class CallerConfig(StageConfig):
    """A stage whose callable is named by a field called ``call``."""

    call: str = Field(..., description="The callable, module:function.")
    fn: str = Field("", description="Not the callable: shares map's field name only.")


CALLER = StageKind("test.caller", CallerConfig, "tests.compile.declared_kinds:never_built", callable_field="call")
"""Declares ``call`` as its callable field."""
