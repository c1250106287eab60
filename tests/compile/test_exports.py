"""`funcpipe.compile` exports exactly what we mean to export: the description and what reads it."""

from __future__ import annotations

import funcpipe.compile

EXPECTED = [
    "CompiledAdapter",
    "CompiledPipeline",
    "CompiledQuery",
    "CompiledStage",
    "NodeLabel",
    "SecretSources",
    "StoreSync",
    "budget_summary",
    "compile_pipeline",
    "node_label",
    "policy_summary",
    "secret_sources",
]


def test_the_public_surface_is_exactly_the_intended_names() -> None:
    assert funcpipe.compile.__all__ == EXPECTED


def test_the_surface_is_sorted_and_every_name_exists() -> None:
    assert funcpipe.compile.__all__ == sorted(funcpipe.compile.__all__)
    assert all(hasattr(funcpipe.compile, name) for name in funcpipe.compile.__all__)
