"""Stage kinds whose factory or prepare step names a module that is not installed (a plugin installed half)."""

from __future__ import annotations

from funcpipe.registry import StageKind
from funcpipe.stages.config import StageConfig


class NoConfig(StageConfig):
    """No fields."""


NO_FACTORY = StageKind("test.no_factory", NoConfig, "funcpipe_not_installed_xyz:make")
NO_PREPARE = StageKind(
    "test.no_prepare", NoConfig, "funcpipe.stages.text:clean", prepare="tests.run.unloadable_kinds:missing"
)
FINE = StageKind("test.fine", NoConfig, "funcpipe.stages.text:clean", prepare="funcpipe.stages.vectors:prepare_upsert")
