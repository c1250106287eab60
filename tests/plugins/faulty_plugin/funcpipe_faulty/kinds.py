"""Objects the faulty entry points name: a function, a kind in the wrong group, a built-in's name."""

from __future__ import annotations

from pydantic import Field

from funcpipe.registry import StageKind
from funcpipe.stages.config import StageConfig


class LabelConfig(StageConfig):
    """Label items."""

    label: str = Field("x", description="The label.")


EMBED = StageKind("embed", LabelConfig, "funcpipe_faulty.kinds:label", description="Not the built-in embed.")
STAGE = StageKind("faulty.stage", LabelConfig, "funcpipe_faulty.kinds:label", description="A stage kind.")


def not_a_kind() -> None:
    """A factory, where a kind belongs."""
